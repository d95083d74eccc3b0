"""The CLI's answers to bad input and settings: clear messages, exit status 2, no model loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from speculabel.cli import app

runner = CliRunner()


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    p = tmp_path / "in.csv"
    p.write_text("id,review\n1,great\n2,awful\n")
    return p


def run(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


def test_missing_file(tmp_path: Path) -> None:
    code, out = run("classify", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o.jsonl"))
    assert code == 2 and "input file not found" in out and "nope.csv" in out


def test_unknown_column(csv_file: Path, tmp_path: Path) -> None:
    code, out = run("classify", str(csv_file), "-o", str(tmp_path / "o.jsonl"), "--text-column", "body")
    assert code == 2 and "'body'" in out and "id, review" in out


def test_unknown_model(csv_file: Path, tmp_path: Path) -> None:
    code, out = run(
        "classify", str(csv_file), "-o", str(tmp_path / "o.jsonl"), "--text-column", "review",
        "--workers", "gpt-17,smollm2-135m", "-q",
    )
    assert code == 2 and "unknown model 'gpt-17'" in out and "qwen2.5-1.5b" in out


def test_unknown_policy(csv_file: Path, tmp_path: Path) -> None:
    code, out = run("classify", str(csv_file), "-o", str(tmp_path / "o.jsonl"), "--policy", "most")
    assert code == 2 and "unknown policy 'most'" in out


def test_bad_config_key(csv_file: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('workerz = ["a"]\n')
    code, out = run("classify", str(csv_file), "-o", str(tmp_path / "o.jsonl"), "--config", str(cfg))
    assert code == 2 and "unknown key 'workerz'" in out and str(cfg) in out


def test_pair_task_needs_pair_columns(csv_file: Path, tmp_path: Path) -> None:
    code, out = run(
        "classify", str(csv_file), "-o", str(tmp_path / "o.jsonl"), "--task", "similar-ticket"
    )
    assert code == 2 and "'text_a'" in out


def test_bad_task_file(csv_file: Path, tmp_path: Path) -> None:
    t = tmp_path / "t.toml"
    t.write_text('name = "x"\ninstructions = "y"\nfields = ["text"]\nlabels = ["a"]\n')
    code, out = run("classify", str(csv_file), "-o", str(tmp_path / "o.jsonl"), "--task", str(t))
    assert code == 2 and "at least two labels" in out


def test_help_explains() -> None:
    code, out = run("classify", "--help")
    assert code == 0 and "resume" in out.lower()
