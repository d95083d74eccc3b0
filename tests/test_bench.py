"""The bench: models into the store (resumable), analysis, measured runs, report; VADER worker.

Pure parts run with scripted backends; ``test_bench_real_models`` runs real GGUF models.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

import needs
from speculabel.backends.base import Backend, BackendError
from speculabel.bench.analyse import select_best, sweep
from speculabel.bench.core import report_from_store, run_bench
from speculabel.bench.manifest import Manifest, vote_table
from speculabel.bench.run import run_models
from speculabel.bench.simulate import VoteTable
from speculabel.io.votes import VoteStore, item_key
from speculabel.records import Item, Vote
from speculabel.tasks import SENTIMENT, SIMILAR_TICKET, Task

LABELS = ["negative", "neutral", "positive"]


class Scripted(Backend):
    """Answers from a per-item script with a fixed latency; counts calls; can be interrupted."""

    def __init__(self, name: str, labels: dict[str, str], latency: float,
                 conf: float = 0.85, stop_after: int | None = None) -> None:
        self.spec = name
        self.labels = labels
        self.latency = latency
        self.conf = conf
        self.calls = 0
        self.stop_after = stop_after
        self.closed = False
        self.log: list[str] | None = None  # shared call log, to check the order of calls

    def fingerprint(self) -> str:
        return f"scripted:{self.spec}"

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += len(items)
        if self.log is not None:
            self.log.append(self.spec)
        out = []
        for it in items:
            lab = self.labels[it.fields["text"]]
            rest = (1 - self.conf) / 2
            out.append(Vote(self.spec, lab, {x: (self.conf if x == lab else rest) for x in LABELS},
                            latency_s=self.latency))
        return out

    def close(self) -> None:
        self.closed = True


def make_world(n: int = 40, seed: int = 1) -> tuple[list[Item], list[str | None],
                                                     dict[str, dict[str, str]]]:
    """Items, gold, and per-model answers: the judge is right 90 %, workers less often."""
    rng = random.Random(seed)
    items = [Item(f"i{i}", {"text": f"text {i}"}) for i in range(n)]
    gold: list[str | None] = [rng.choice(LABELS) for _ in items]
    answers: dict[str, dict[str, str]] = {}
    for name, p in (("tiny", 0.6), ("small", 0.7), ("mid", 0.8), ("judge", 0.9)):
        answers[name] = {
            it.fields["text"]: (g if rng.random() < p else rng.choice(LABELS))
            for it, g in zip(items, gold, strict=True) if g is not None
        }
    return items, gold, answers


LAT = {"tiny": 0.01, "small": 0.02, "mid": 0.05, "judge": 0.2}


def backends_for(answers: dict[str, dict[str, str]], **kw: int) -> dict[str, Scripted]:
    return {k: Scripted(k, v, LAT[k], stop_after=kw.get(k)) for k, v in answers.items()}


def test_run_models_is_resumable_and_cached(tmp_path: Path) -> None:
    items, _, answers = make_world(20)
    store = VoteStore(tmp_path / "v.sqlite")
    b = backends_for(answers, mid=8)  # "mid" is interrupted after the warm-up and one batch
    with pytest.raises(KeyboardInterrupt):
        run_models(SENTIMENT, items, list(b), store, batch_size=8, backends=b, progress=False,
                   interleave=False)
    # every model scores one warm-up item first (untimed, not stored)
    assert b["tiny"].calls == 1 + 20 and b["mid"].calls == 1 + 8
    b2 = backends_for(answers)
    runs = run_models(SENTIMENT, items, list(b2), store, batch_size=8, backends=b2,
                      progress=False, interleave=False)
    assert [r.cached for r in runs] == [20, 20, 8, 0]
    assert b2["tiny"].calls == 0 and b2["mid"].calls == 1 + 12 and b2["judge"].calls == 1 + 20
    b3 = backends_for(answers)
    runs = run_models(SENTIMENT, items, list(b3), store, batch_size=8, backends=b3,
                      progress=False)
    assert sum(x.calls for x in b3.values()) == 0  # a second bench costs no model call
    assert all(r.scored == 0 for r in runs)
    stored = store.get_many_stored("scripted:judge", SENTIMENT.fingerprint(),
                                   [item_key(SENTIMENT, items[0])])
    (s,) = stored.values()
    assert s.vote.latency_s == pytest.approx(0.2) and s.cpu_s is not None and s.cpu_s >= 0
    store.close()


def test_interleaved_models_take_turns_and_resume(tmp_path: Path) -> None:
    items, _, answers = make_world(20)
    store = VoteStore(tmp_path / "v.sqlite")
    order: list[str] = []
    b = backends_for(answers, mid=8)
    for x in b.values():
        x.log = order
    with pytest.raises(KeyboardInterrupt):
        run_models(SENTIMENT, items, list(b), store, batch_size=8, backends=b, progress=False)
    # warm-ups, then one batch per model in turn; "mid" stops at its second batch
    assert order == ["tiny", "small", "mid", "judge"] * 2 + ["tiny", "small"]
    b2 = backends_for(answers)
    runs = run_models(SENTIMENT, items, list(b2), store, batch_size=8, backends=b2,
                      progress=False)
    assert [r.cached for r in runs] == [16, 16, 8, 8]
    assert [b2[k].calls for k in ("tiny", "small", "mid", "judge")] == [1 + 4, 1 + 4, 1 + 12,
                                                                        1 + 12]
    store.close()


def test_loader_is_used_and_closed(tmp_path: Path) -> None:
    items, _, answers = make_world(6)
    made: list[Scripted] = []

    def loader(spec: str) -> Backend:
        b = Scripted(spec, answers[spec], LAT[spec])
        made.append(b)
        return b

    with VoteStore(tmp_path / "v.sqlite") as store:
        run_models(SENTIMENT, items, ["tiny", "judge"], store, loader=loader, progress=False)
    assert [b.closed for b in made] == [True, True]


def _bench(tmp_path: Path, n: int = 40, measure: int = 16) -> tuple[object, dict[str, Scripted]]:
    items, gold, answers = make_world(n)
    b = backends_for(answers)
    res = run_bench(SENTIMENT, items, gold, ["tiny", "small", "mid", "judge"], tmp_path / "out",
                    store_path=tmp_path / "v.sqlite", backends=b, progress=False,
                    measure_items=measure, thresholds=[0.5, 0.9],
                    dataset={"name": "synthetic"})
    return res, b


def test_bench_end_to_end_with_scripted_models(tmp_path: Path) -> None:
    res, _ = _bench(tmp_path)
    a = res.analysis  # type: ignore[attr-defined]
    files = res.files  # type: ignore[attr-defined]
    # every number is in report.json, which is strict JSON
    data = json.loads(files["json"].read_text())
    assert data["judge"] == "judge" and data["n"] == 40 and data["has_gold"]
    assert set(data["agreement_matrix"]) == {"tiny", "small", "mid", "judge"}
    assert data["agreement_matrix"]["judge"]["judge"] == 1.0
    for m in data["models"].values():
        assert 0 <= m["accuracy"] <= 1 and m["latency_p95_s"] > 0
    # 3 pairs x 4 rules x 2 modes + 1 triple x 4 rules x 4 modes
    assert len(data["configs"]) == 3 * 4 * 2 + 1 * 4 * 4
    assert len(data["selected"]) == 3
    assert set(data["by_judge"]) == {"tiny", "small", "mid", "judge"}
    # measured runs: the real cascade on 16 held-out items; scripted models decide the same
    meas = a["measured"]
    # the three selected, plus the fastest certified configuration per target
    keys = {c["key"] for c in data["selected"]}
    # (a rank cut, whole-data targets, is certified on all the items and not measured live)
    extra = {b["held"]["key"] for b in data["certified"]["best"].values()
             if b["held"].get("measurable", True)} - keys
    assert meas["items"] == 16 and len(meas["runs"]) == 3 + len(extra)
    for r in meas["runs"]:
        assert r["same_final_label_as_computed"] == 1.0
        assert r["same_decider_as_computed"] == 1.0
        assert r["measured"]["coverage"] == pytest.approx(r["computed"]["coverage"])
        assert r["measured"]["speedup"] > 0 and r["computed"]["speedup"] > 0
        # the hardware limit: scripted workers embed nothing, judge calls at the marginal cost
        lim = r["limit"]
        assert lim["embed_s"] == 0 and lim["judge_calls"] == round(16 * (1 - r["measured"]["coverage"]))
        assert lim["wall_s"] == pytest.approx(lim["workers_s"] + lim["judge_s"])
        assert lim["measured_over_limit"] == pytest.approx(
            r["measured"]["cascade_wall_s"] / lim["wall_s"])
    assert "hardware limit" in files["md"].read_text()
    # md, html (offline: PNGs embedded), plots
    md = files["md"].read_text()
    assert "Agreement matrix" in md and "Measured against computed" in md
    html = files["html"].read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "http://" not in html and "https://" not in html
    assert "Certified cascades" in md
    for key in ("png_agreement", "png_pareto", "png_latency", "png_certified"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = html.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(png)[:4] == b"\x89PNG"


def test_rerun_reuses_votes_and_measured_runs(tmp_path: Path) -> None:
    """The same bench again makes no model call: votes from the store, measured runs from the
    last report (same models, items and configurations); --remeasure times them again."""
    first, _ = _bench(tmp_path)
    items, gold, answers = make_world(40)
    again = backends_for(answers)
    kw = dict(store_path=tmp_path / "v.sqlite", progress=False, measure_items=16,
              thresholds=[0.5, 0.9], dataset={"name": "synthetic"})
    res = run_bench(SENTIMENT, items, gold, ["tiny", "small", "mid", "judge"], tmp_path / "out",
                    backends=again, **kw)  # type: ignore[arg-type]
    assert sum(x.calls for x in again.values()) == 0
    assert res.analysis["measured"] == first.analysis["measured"]  # type: ignore[attr-defined]
    fresh = backends_for(answers)
    run_bench(SENTIMENT, items, gold, ["tiny", "small", "mid", "judge"], tmp_path / "out",
              backends=fresh, remeasure=True, **kw)  # type: ignore[arg-type]
    assert sum(x.calls for x in fresh.values()) > 0
    # other items to measure: measured anew
    other = backends_for(answers)
    run_bench(SENTIMENT, items, gold, ["tiny", "small", "mid", "judge"], tmp_path / "out",
              backends=other, **{**kw, "measure_items": 12})  # type: ignore[arg-type]
    assert sum(x.calls for x in other.values()) > 0


def test_report_from_store_needs_no_model(tmp_path: Path) -> None:
    _, b = _bench(tmp_path, measure=0)
    calls = sum(x.calls for x in b.values())
    again = report_from_store(tmp_path / "out", judge="mid", plots=False)
    assert sum(x.calls for x in b.values()) == calls
    assert again.analysis["judge"] == "mid"
    assert (tmp_path / "out" / "report.md").is_file()
    m = Manifest.load(tmp_path / "out")
    with VoteStore(tmp_path / "v.sqlite") as s:
        table, missing = vote_table(s, m)
    assert table.n == 40 and not any(missing.values())


def test_a_redone_report_keeps_measured_runs_only_of_what_it_would_measure(
    tmp_path: Path
) -> None:
    # before: report_from_store kept the old measured runs whenever the judge's name was the
    # same, even when the manifest now names other model files (a bench rerun with a new
    # model, stopped before it measured): stale timings beside new numbers
    res, _ = _bench(tmp_path, measure=8)
    measured = res.analysis["measured"]  # type: ignore[attr-defined]
    assert measured["runs"]
    same = report_from_store(tmp_path / "out", plots=False)
    assert same.analysis["measured"]["runs"] == measured["runs"]  # same signature: kept
    manifest = Manifest.load(tmp_path / "out")
    manifest.models[0]["fingerprint"] = "a-new-model-file"
    manifest.save(tmp_path / "out")
    with VoteStore(tmp_path / "v.sqlite") as store:  # its votes, under the new fingerprint
        old = store.get_many("scripted:tiny", SENTIMENT.fingerprint(), manifest.item_keys)
        store.put_many("a-new-model-file", SENTIMENT.fingerprint(), list(old.items()))
    other = report_from_store(tmp_path / "out", plots=False)
    assert other.analysis["judge"] == "judge"
    assert other.analysis["measured"]["runs"] == []
    assert "other models, items or configurations" in other.analysis["measured"]["skipped"]


def test_selection_rule() -> None:
    items, gold, answers = make_world(60)
    table = VoteTable({k: b.score(SENTIMENT, items) for k, b in backends_for(answers).items()})
    results = sweep(table, "judge", [0.5], gold=gold)
    best, how = select_best(results, target=0.8)
    assert "top 3 by speedup" in how
    assert all(r.e2e_agreement >= 0.8 for r in best)
    assert [r.speedup for r in best] == sorted((r.speedup for r in best), reverse=True)
    none, how2 = select_best(results, target=1.01)
    assert "no configuration reaches" in how2
    assert [r.e2e_agreement for r in none] == sorted((r.e2e_agreement for r in none),
                                                     reverse=True)


def test_bench_needs_three_models(tmp_path: Path) -> None:
    items, gold, answers = make_world(4)
    b = backends_for(answers)
    with pytest.raises(ValueError, match="three models"):
        run_bench(SENTIMENT, items, gold, ["tiny", "judge"], tmp_path, backends=b,
                  store_path=tmp_path / "v.sqlite", progress=False)
    with pytest.raises(ValueError, match="judge"):
        run_bench(SENTIMENT, items, gold, ["tiny", "small", "mid"], tmp_path, judge="judge",
                  backends=b, store_path=tmp_path / "v.sqlite", progress=False)


def test_bench_refuses_learners_only_before_any_model_loads(tmp_path: Path) -> None:
    """The plain sweep needs two stored workers; the error names the learners, loads nothing."""
    items, gold, _answers = make_world(4)

    def loader(spec: str) -> Backend:
        raise AssertionError(f"no model may load, got {spec}")

    with pytest.raises(ValueError, match=r"two workers that do not learn.*learner:minilm"):
        run_bench(SENTIMENT, items, gold, ["learner:minilm", "tiny", "judge"], tmp_path,
                  loader=loader, store_path=tmp_path / "v.sqlite", progress=False)


# ---------------------------------------------------------------- VADER worker


def test_vader_mapping_and_votes() -> None:
    needs.module("vaderSentiment", needs.BENCH)
    from speculabel.backends.lexicon import compound_to_probs, from_spec, vader_label

    for c in [-1.0, -0.6, -0.05, -0.049, 0.0, 0.03, 0.05, 0.2, 0.99, 1.0]:
        p = compound_to_probs(c)
        assert sum(p.values()) == pytest.approx(1.0)
        assert all(x >= 0 for x in p.values())
        assert max(p, key=lambda k: p[k]) == vader_label(c) or (
            abs(c) == 0.05 and p[vader_label(c)] >= max(p.values()) - 1e-9)
    assert compound_to_probs(1.0)["positive"] == pytest.approx(0.95)
    assert compound_to_probs(0.0)["neutral"] == pytest.approx(0.6)
    assert compound_to_probs(0.0)["positive"] == pytest.approx(0.2)

    b = from_spec("vader")
    assert b.fingerprint().startswith("vader:3.") and "map-v1" in b.fingerprint()
    items = [Item("1", {"text": "I love this, it is wonderful!"}),
             Item("2", {"text": "This is terrible and I hate it."}),
             Item("3", {"text": "The meeting is at 3pm."})]
    vs = b.score(SENTIMENT, items)
    assert [v.label for v in vs] == ["positive", "negative", "neutral"]
    assert all(v.method == "classifier" and v.latency_s > 0 for v in vs)
    with pytest.raises(BackendError, match="only scores sentiment"):
        b.score(SIMILAR_TICKET, [Item("p", {"text_a": "a", "text_b": "b"})])
    with pytest.raises(BackendError):
        from_spec("vader:other")


def test_vader_through_registry() -> None:
    needs.module("vaderSentiment", needs.BENCH)
    from speculabel.backends.registry import load_backend

    b = load_backend("vader")
    assert b.score(SENTIMENT, [Item("1", {"text": "great"})])[0].label == "positive"


# ---------------------------------------------------------------- CLI


def _app() -> object:
    from speculabel.cli import app

    return app


def test_cli_skips_missing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECULABEL_DATA", str(tmp_path / "absent"))
    runner = CliRunner()
    args = ["bench", "--dataset", "tweeteval", "--models", "a,b,c", "--out", str(tmp_path / "o")]
    r = runner.invoke(_app(), [*args, "--skip-missing-data"])  # type: ignore[arg-type]
    assert r.exit_code == 0, r.output
    assert "SKIPPED" in r.output and str(tmp_path / "absent") in r.output
    r2 = runner.invoke(_app(), args)  # type: ignore[arg-type]
    assert r2.exit_code == 2 and "tweeteval-sentiment" in r2.output


def test_cli_argument_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(_app(), ["bench", "--dataset", "tweeteval", "--models", "a,b"])  # type: ignore[arg-type]
    assert r.exit_code == 2 and "at least three" in r.output
    r = runner.invoke(_app(), ["bench", "--models", "a,b,c"])  # type: ignore[arg-type]
    assert r.exit_code == 2 and "INPUT file or --dataset" in r.output
    r = runner.invoke(_app(), ["bench", "--report-only", "--out", str(tmp_path)])  # type: ignore[arg-type]
    assert r.exit_code == 2 and "bench.json" in r.output


def test_cli_report_only(tmp_path: Path) -> None:
    _bench(tmp_path, n=12, measure=0)
    r = CliRunner().invoke(
        _app(), ["bench", "--report-only", "--out", str(tmp_path / "out"), "--no-plots"]  # type: ignore[arg-type]
    )
    assert r.exit_code == 0, r.output
    assert "Agreement matrix" in r.output and "report.html" in r.output


def test_cli_bench_on_a_csv_with_gold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's own table: text and gold columns named as in ``classify``; bad rows reported."""
    import csv

    import speculabel.backends.registry as registry

    items, gold, answers = make_world(12)
    path = tmp_path / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tweet", "label"])
        for it, g in zip(items, gold, strict=True):
            w.writerow([it.fields["text"], g])
        w.writerow(["", "neutral"])  # an empty text: skipped with a message
    monkeypatch.setattr(registry, "load_backend",
                        lambda spec, **kw: Scripted(spec, answers[spec], LAT[spec]))
    out = tmp_path / "out"
    r = CliRunner().invoke(_app(), [  # type: ignore[arg-type]
        "bench", str(path), "--task", "sentiment", "--text-column", "tweet",
        "--gold-column", "label", "--models", "tiny,small,judge", "--out", str(out),
        "--votes", str(tmp_path / "v.sqlite"), "--measure-items", "4", "--no-plots", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "row 13: empty text" in r.output
    data = json.loads((out / "report.json").read_text())
    assert data["n"] == 12 and data["has_gold"]
    assert data["models"]["judge"]["accuracy"] == pytest.approx(
        sum(answers["judge"][it.fields["text"]] == g for it, g in zip(items, gold, strict=True))
        / 12)
    assert len(data["measured"]["runs"]) >= 1
    bad = CliRunner().invoke(_app(), [  # type: ignore[arg-type]
        "bench", str(path), "--task", "sentiment", "--text-column", "tweet",
        "--gold-column", "tweet", "--models", "tiny,small,judge", "--out", str(out),
        "--votes", str(tmp_path / "v.sqlite")])
    assert bad.exit_code == 2 and "does not know" in bad.output


# ---------------------------------------------------------------- real models


def _need_models(*names: str) -> None:
    needs.module("llama_cpp", needs.LLAMA)
    needs.module("vaderSentiment", needs.BENCH)
    for name in names:
        needs.model(name)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about a minute on an idle 2-core machine; far longer when it is busy
def test_bench_real_models(tmp_path: Path) -> None:
    """smollm2-135m + VADER as workers, qwen2.5-0.5b as judge, 5 tweets, through the CLI."""
    _need_models("smollm2-135m", "qwen2.5-0.5b")
    from speculabel.io.datasets import shared_data_dir

    needs.data(lambda: shared_data_dir("tweeteval-sentiment"), "tweeteval-sentiment")
    out, store = tmp_path / "out", tmp_path / "v.sqlite"
    args = ["bench", "--dataset", "tweeteval", "--limit", "5",
            "--models", "vader,smollm2-135m,qwen2.5-0.5b", "--out", str(out),
            "--votes", str(store), "--measure-items", "4", "--quiet"]
    r = CliRunner().invoke(_app(), args)  # type: ignore[arg-type]
    assert r.exit_code == 0, r.output
    data = json.loads((out / "report.json").read_text())
    assert data["n"] == 5 and data["judge"] == "qwen2.5-0.5b"
    assert data["models"]["smollm2-135m"]["latency_mean_s"] > 0.01
    assert data["models"]["smollm2-135m"]["cpu_mean_s"] > 0
    assert data["models"]["vader"]["latency_mean_s"] < 0.01
    assert all(m["abstained"] == 0 for m in data["models"].values())
    runs = data["measured"]["runs"]
    assert runs, data["measured"]
    for run in runs:
        assert run["measured"]["speedup"] > 0 and run["computed"]["speedup"] > 0
        # deterministic scoring: the real cascade takes the decisions the stored votes predict
        assert run["same_decider_as_computed"] >= 3 / 4
    # rerun: every vote comes from the store (no model is asked again)
    with VoteStore(store) as s:
        before = s.count()
    r2 = CliRunner().invoke(_app(), [*args[:-3], "--measure-items", "0", "--quiet"])  # type: ignore[arg-type]
    assert r2.exit_code == 0, r2.output
    with VoteStore(store) as s:
        assert s.count() == before
    assert (out / "report.html").stat().st_size > 10_000
