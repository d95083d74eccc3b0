"""calibrate's workflow: fit learning workers on one share, certify on the other, write a config
that classify runs with exactly the fitted workers; and the judge-alone baseline.

The judge is a fake OpenAI-compatible endpoint on 127.0.0.1 (it always answers "yes"); the
fast tests give the similarity worker a hashing embedder, the slow one the real MiniLM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import needs
from speculabel.cli import app
from speculabel.io.votes import VoteStore
from speculabel.tasks import SIMILAR_TICKET
from test_learner import HashEmbedder, _pairs

pytest_plugins = ["fake_openai"]


def _yes_judge(fake: Any) -> str:
    f, url = fake
    f.top = {"yes": -0.2, "no": -1.8}  # the judge says "similar" to every pair
    return f"openai:m1@{url}"


def test_workflow_fits_on_one_share_and_certifies_on_the_other(tmp_path: Path, fake: Any) -> None:
    from speculabel.certify.workflow import calibrate

    judge = _yes_judge(fake)
    items, gold = _pairs(300, seed=4)
    with VoteStore(tmp_path / "v.sqlite") as store:
        cal = calibrate(
            SIMILAR_TICKET, items, gold, ["similarity:minilm"], judge, store=store,
            fitted_dir=tmp_path / "fitted", target=0.02, delta=0.1, scope="non-inferior",
            reference="gold", fit_fraction=0.2, seed=1,
            backend_options={"similarity:minilm": {"embedder": HashEmbedder()}},
        )
    assert (cal.n_fit, cal.n_certify) == (60, 240)
    res = cal.plan.result
    # the judge is right on half the pairs; the worker, fitted on 60 gold labels, on almost all
    assert cal.judge_accuracy is not None and 0.35 < cal.judge_accuracy < 0.65
    assert res.feasible and res.coverage > 0.9 and res.estimate is not None and res.estimate < 0
    folder = cal.fitted["similarity:minilm"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["trained_on"] == 60  # fitted on the fit share only
    assert cal.data is not None and len(cal.data) == 240


def test_workflow_tunes_the_learner_once_on_a_core_every_candidate_fits_on(
        tmp_path: Path, fake: Any) -> None:
    from speculabel.certify.workflow import calibrate

    judge = _yes_judge(fake)
    items, gold = _pairs(300, seed=6)
    with VoteStore(tmp_path / "v.sqlite") as store:
        cal = calibrate(
            SIMILAR_TICKET, items, gold, ["learner:minilm"], judge, store=store,
            fitted_dir=tmp_path / "fitted", target=0.7, delta=0.1, scope="workers",
            reference="gold", seed=2,
            backend_options={"learner:minilm": {"embedder": HashEmbedder()}},
        )
    # fit share "auto": three candidates (two labels), settings tuned once on the 0.3 core
    assert any("cross-validation on 90 items" in n for n in cal.notes), cal.notes
    assert any("among 3 candidates" in n for n in cal.notes)
    meta = json.loads((cal.fitted["learner:minilm"] / "meta.json").read_text())
    assert meta["trained_on"] == cal.n_fit  # the shipped worker: the chosen candidate's fit


def test_a_worker_cannot_be_fitted_on_one_class(tmp_path: Path, fake: Any) -> None:
    from speculabel.backends.base import BackendError
    from speculabel.certify.workflow import calibrate

    judge = _yes_judge(fake)  # the reference is the judge, who says "similar" to everything
    items, gold = _pairs(200, seed=5)
    with VoteStore(tmp_path / "v.sqlite") as store, \
            pytest.raises(BackendError, match="fewer than two classes"):
        calibrate(SIMILAR_TICKET, items, gold, ["similarity:minilm"], judge, store=store,
                  fitted_dir=tmp_path / "fitted", target=0.9, delta=0.1, scope="dataset",
                  backend_options={"similarity:minilm": {"embedder": HashEmbedder()}})


@pytest.mark.parametrize(("kw", "phrase"), [
    ({"reference": "gold", "gold": None}, "needs gold labels"),
    ({"scope": "dataset", "reference": "gold"}, "use --non-inferior"),
    ({"fit_fraction": 0.0}, "must be fitted"),
])
def test_workflow_refuses_settings_that_cannot_work(tmp_path: Path, fake: Any,
                                                    kw: dict[str, Any], phrase: str) -> None:
    from speculabel.certify.workflow import calibrate

    judge = _yes_judge(fake)
    items, gold = _pairs(40)
    args: dict[str, Any] = {"target": 0.9, "delta": 0.1, "scope": "workers", "gold": gold, **kw}
    g = args.pop("gold")
    with VoteStore(tmp_path / "v.sqlite") as store, pytest.raises(ValueError, match=phrase):
        calibrate(SIMILAR_TICKET, items, g, ["similarity:minilm"], judge, store=store,
                  fitted_dir=tmp_path / "f", **args)


def test_judge_only_is_the_baseline_in_the_same_records(tmp_path: Path, fake: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    judge = _yes_judge(fake)
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path / "cache"))
    items, _ = _pairs(12)
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps(it.fields) + "\n" for it in items))
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["classify", str(p), "-o", str(out), "--task",
                                   "similar-ticket", "--judge", judge, "--judge-only", "-q"])
    assert res.exit_code == 0, res.output
    recs = [r for r in map(json.loads, out.read_text().splitlines()) if "speculabel" not in r]
    assert len(recs) == 12
    assert all(r["decided_by"] == "judge" and r["votes"] == [] and r["label"] == "similar"
               and r["rule"] == "judge only" for r in recs)
    header = json.loads(out.with_name(out.name + ".meta.json").read_text())["runs"][-1]
    assert header["settings"]["judge_only"] is True and header["settings"]["workers"] == []
    res = CliRunner().invoke(app, ["classify", str(p), "-o", str(out), "--task",
                                   "similar-ticket", "--judge", judge, "--judge-only",
                                   "--workers", "vader"])
    assert res.exit_code == 2 and "--judge-only uses no workers" in res.output


@pytest.mark.slow
def test_calibrate_writes_a_config_that_classify_runs_with_the_fitted_worker(
    tmp_path: Path, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs.module("sentence_transformers", needs.EMBED)
    judge = _yes_judge(fake)
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path / "cache"))
    from speculabel.io.datasets import banking77_pairs

    data = needs.data(lambda: banking77_pairs(400, seed=1), "banking77")
    p = tmp_path / "pairs.csv"
    import csv

    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "gold"])
        for it, g in zip(data.items, data.gold, strict=True):
            w.writerow([it.fields["text_a"], it.fields["text_b"], g])
    cfg = tmp_path / "out" / "cascade.toml"
    args = ["calibrate", str(p), "--task", "similar-ticket", "--text-a-column", "a",
            "--text-b-column", "b", "--gold-column", "gold", "--workers", "similarity:minilm",
            "--judge", judge, "--non-inferior", "0.02", "-o", str(cfg), "--votes",
            str(tmp_path / "v.sqlite"), "-q"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    text = cfg.read_text()
    assert 'directory = "cascade.fitted/similarity-minilm"' in text and "frozen = true" in text
    assert "gold accuracy at most 0.02 below the judge's" in text
    # classify loads exactly the fitted state: the same votes as the fitted worker gives
    out = tmp_path / "run.jsonl"
    res = CliRunner().invoke(app, ["classify", str(p), "-o", str(out), "--config", str(cfg),
                                   "--text-a-column", "a", "--text-b-column", "b", "-q"])
    assert res.exit_code == 0, res.output
    recs = [r for r in map(json.loads, out.read_text().splitlines()) if "speculabel" not in r]
    by_workers = [r for r in recs if r["decided_by"] == "workers"]
    assert len(by_workers) > 0.8 * len(recs)
    acc = sum(r["label"] == g for r, g in zip(recs, data.gold, strict=True)) / len(recs)
    assert acc > 0.8  # the judge here says "similar" to everything: 50 %
    meta = json.loads((cfg.parent / "cascade.fitted" / "similarity-minilm" / "meta.json").read_text())
    assert meta["trained_on"] == 120  # 30 % of 400: frozen, it learnt nothing more in classify
    # a fitted state of another task (other labels) is refused before any item is decided
    other = tmp_path / "other.toml"
    other.write_text('name = "dup"\ninstructions = "Same request?"\nfields = ["text_a", "text_b"]'
                     '\nlabels = ["same", "different"]\n')
    res = CliRunner().invoke(app, ["classify", str(p), "-o", str(tmp_path / "x.jsonl"),
                                   "--config", str(cfg), "--task", str(other),
                                   "--text-a-column", "a", "--text-b-column", "b"])
    assert res.exit_code == 2 and "trained for labels" in res.output, res.output
    assert not (tmp_path / "x.jsonl").exists() or not _records(tmp_path / "x.jsonl")


def _records(path: Path) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if "speculabel" not in r]
