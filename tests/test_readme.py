"""The README's "From Python" examples run as written (real models, real data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import needs

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1, 2])
def test_readme_example_runs(index: int, tmp_path: Path, qwen15_path: Path, gemma_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from speculabel.io.datasets import shared_data_dir

    needs.module("pandas", needs.RAY)
    needs.data(lambda: shared_data_dir("tweeteval-sentiment"), "tweeteval-sentiment")
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[index], f"README.md example {index + 1}", "exec"), {})
