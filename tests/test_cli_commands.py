"""What the README promises of the command line, with no model: the VADER lexicon and a fake
OpenAI-compatible endpoint on 127.0.0.1 are the workers and the judge."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from speculabel.cli import app

pytest_plugins = ["fake_openai"]

TEXTS = ["I love this phone, it is wonderful", "Worst service ever, I hate it",
         "The bus leaves at nine", "Not bad at all"]


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args), terminal_width=200)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, res.output


def _records(path: Path) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if "speculabel" not in r]


@pytest.fixture()
def tsv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path / "cache"))
    p = tmp_path / "in.tsv"
    p.write_text("id\treview\n" + "".join(f"r{i}\t{t}\n" for i, t in enumerate(TEXTS)))
    return p


def test_tasks_lists_and_shows() -> None:
    code, out = _run("tasks")
    assert code == 0 and "sentiment" in out and "similar-ticket" in out and "text_a, text_b" in out
    code, out = _run("tasks", "similar-ticket")
    assert code == 0 and "Ticket A: <text_a>" in out and "labels: similar, not_similar" in out
    code, out = _run("tasks", "nope")
    assert code == 2 and "unknown task 'nope'" in out


def test_models_list_names_the_catalogue(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path))  # nothing installed here
    code, out = _run("models", "list")
    assert code == 0
    for name in ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b", "qwen2.5-1.5b"):
        assert name in out
    assert "gguf:PATH" in out and " no " in out
    code, out = _run("models", "pull", "gpt-17")
    assert code == 2 and "unknown model(s) ['gpt-17']" in out


def test_classify_reads_tsv(tsv: Path, fake: Any) -> None:
    _, url = fake
    out = tsv.with_name("out.jsonl")
    code, text = _run("classify", str(tsv), "-o", str(out), "--text-column", "review",
                      "--id-column", "id", f"--workers=vader,openai:m2@{url}",
                      f"--judge=openai:m1@{url}", "-q")
    assert code == 0, text
    recs = _records(out)
    assert [r["id"] for r in sorted(recs, key=lambda r: r["row"])] == ["r0", "r1", "r2", "r3"]
    assert all(r["label"] in ("negative", "neutral", "positive") for r in recs)
    assert [r["row"] for r in sorted(recs, key=lambda r: r["row"])] == [1, 2, 3, 4]


def test_parallel_workers_decide_like_sequential_ones(tsv: Path, fake: Any) -> None:
    _, url = fake
    outs = {}
    for mode in ("--parallel-workers", "--sequential-workers"):
        out = tsv.with_name(f"out{mode}.jsonl")
        code, text = _run("classify", str(tsv), "-o", str(out), "--text-column", "review",
                          "--id-column", "id", f"--workers=vader,openai:m2@{url}",
                          f"--judge=openai:m1@{url}", mode, "--no-votes", "-q")
        assert code == 0, text
        outs[mode] = {r["id"]: (r["label"], r["decided_by"]) for r in _records(out)}
    assert outs["--parallel-workers"] == outs["--sequential-workers"]
    assert len(outs["--parallel-workers"]) == 4


def test_weights_table_is_used(tsv: Path, fake: Any) -> None:
    # the fake endpoint says "positive" (p = 0.55) for everything; VADER is sure "Worst
    # service ever, I hate it" is negative. With VADER's weight at 0 the endpoint alone decides.
    _, url = fake
    cfg = tsv.with_name("c.toml")
    results = {}
    for w in (1.0, 0.0):
        cfg.write_text(f'policy = "weighted"\nthreshold = 0.5\n[weights]\nvader = {w}\n'
                       f'"openai:m2@{url}" = 1.0\n')
        out = tsv.with_name(f"out{w}.jsonl")
        code, text = _run("classify", str(tsv), "-o", str(out), "--config", str(cfg),
                          "--text-column", "review", "--id-column", "id",
                          f"--workers=vader,openai:m2@{url}", f"--judge=openai:m1@{url}",
                          "--no-votes", "-q")
        assert code == 0, text
        results[w] = {r["id"]: r for r in _records(out)}
    assert results[0.0]["r1"]["decided_by"] == "workers" and results[0.0]["r1"]["label"] == "positive"
    assert results[0.0]["r1"]["rule"].startswith("weighted@0.5")
    assert not (results[1.0]["r1"]["decided_by"] == "workers"
                and results[1.0]["r1"]["label"] == "positive")


def test_calibration_table_reaches_the_votes(tsv: Path, fake: Any) -> None:
    # the path from [calibration."vader"] in cascade.toml to the recorded vote, checked against
    # temperature scaling computed here by hand (not with the package's own function)
    from speculabel.backends.lexicon import VaderBackend
    from speculabel.records import Item
    from speculabel.tasks import SENTIMENT

    _, url = fake
    raw = VaderBackend().score(SENTIMENT, [Item("x", {"text": TEXTS[1]})])[0].probs
    t = 2.5
    z = {k: math.exp(math.log(p) / t) for k, p in raw.items()}
    want = {k: v / sum(z.values()) for k, v in z.items()}
    cfg = tsv.with_name("c.toml")
    cfg.write_text(f'[calibration."vader"]\ntemperature = {t}\n')
    out = tsv.with_name("out.jsonl")
    code, text = _run("classify", str(tsv), "-o", str(out), "--config", str(cfg),
                      "--text-column", "review", "--id-column", "id",
                      f"--workers=vader,openai:m2@{url}", f"--judge=openai:m1@{url}", "-q")
    assert code == 0, text
    vote = next(r for r in _records(out) if r["id"] == "r1")["votes"][0]
    assert vote["model"] == "vader"
    assert vote["probs"] == pytest.approx(want, abs=1e-6)
    assert vote["probs"] != pytest.approx(raw, abs=1e-3)


def test_calibrate_defaults_to_the_classify_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # before: calibrate used gemma3-270m,qwen2.5-0.5b for sentiment, classify vader,gemma3-270m
    import speculabel.cascade.build as build
    import speculabel.certify.votes as votes
    from speculabel.cascade.config import default_workers

    seen: list[list[str]] = []

    def capture(task: Any, items: Any, specs: Any, store: Any, **kw: Any) -> Any:
        seen.append(list(specs))
        raise ValueError("stop here")

    monkeypatch.setattr(build, "check_setup", lambda cfg, task: None)
    monkeypatch.setattr(votes, "collect_votes", capture)
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path))
    p = tmp_path / "cal.csv"
    p.write_text("text,gold\ngood,positive\nbad,negative\n")
    code, out = _run("calibrate", str(p), "--task", "sentiment", "--gold-column", "gold", "-q")
    assert code == 2 and "stop here" in out
    # the workers whose votes are stored (learning workers are fitted apart), then the judge
    # (the reference by default)
    from speculabel.certify.workflow import learning

    stored = [w for w in default_workers("sentiment") if not learning(w)]
    assert seen == [[*stored, "qwen2.5-1.5b"]]
    assert default_workers("sentiment") == ["vader", "learner:minilm"]
    assert default_workers("similar-ticket") == ["similarity:minilm", "learner:minilm"]
    assert default_workers("my-task.toml") == ["gemma3-270m", "qwen2.5-0.5b"]
