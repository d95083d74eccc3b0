"""Many-label tasks: labels from a file or a column, the learner's fit chosen by the data (C and
class weighting by cross-validation, the fit share among candidates at delta / m), labels the
head never saw named, and the margin rule."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

import needs
from speculabel.certify.fitsplit import (
    CANDIDATES,
    MANY_LABEL_CANDIDATES,
    certify_best_split,
    fractions_of,
    split,
)
from speculabel.policy import make_policy
from speculabel.records import Item, Vote
from speculabel.tasks import TaskError, load_task, task_from_dict, with_labels
from speculabel.tasks.load import task_toml

needs.module("sklearn", needs.EMBED, module_level=True)

INTENTS = [f"intent_{i:02d}" for i in range(20)]


class CentroidEmbedder:
    """Each text "intent_XX #k" embeds near intent XX's own direction (noisy): a many-class
    stand-in for MiniLM whose classes a linear head separates well with weak regularisation."""

    name = "centroid-32"

    def __init__(self, noise: float = 0.6) -> None:
        self.noise = noise
        self._c = np.random.default_rng(7).normal(size=(len(INTENTS), 32))

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            lab = t.partition(" #")[0]
            rng = np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16))
            v = self._c[INTENTS.index(lab)] + self.noise * rng.normal(size=32)
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


def _intent_data(n: int, seed: int = 0, classes: list[str] | None = None
                 ) -> tuple[list[Item], list[str]]:
    rng = np.random.default_rng(seed)
    labs = [str(x) for x in rng.choice(classes or INTENTS, n)]
    return [Item(f"i{k}", {"text": f"{lab} #{seed}-{k}"}) for k, lab in enumerate(labs)], labs


# ----------------------------------------------------------------------------- labels from files


def test_labels_from_json_and_txt(tmp_path: Path) -> None:
    (tmp_path / "intents.json").write_text(json.dumps(INTENTS))
    (tmp_path / "intents.txt").write_text("\n".join(INTENTS) + "\n\n")
    for name in ("intents.json", "intents.txt"):
        f = tmp_path / f"{name}.toml"
        f.write_text(f'name = "route"\ninstructions = "Route it."\nfields = ["text"]\n'
                     f'labels_from = "{name}"\n')
        assert load_task(str(f)).label_names == INTENTS


def test_labels_from_errors(tmp_path: Path) -> None:
    base = 'name = "route"\ninstructions = "x"\nfields = ["text"]\n'
    (tmp_path / "both.toml").write_text(base + 'labels = ["a", "b"]\nlabels_from = "x.json"\n')
    with pytest.raises(TaskError, match="not both"):
        load_task(str(tmp_path / "both.toml"))
    (tmp_path / "missing.toml").write_text(base + 'labels_from = "nope.json"\n')
    with pytest.raises(TaskError, match=r"nope\.json"):
        load_task(str(tmp_path / "missing.toml"))
    (tmp_path / "none.toml").write_text(base)
    with pytest.raises(TaskError, match="labels-from-column"):
        load_task(str(tmp_path / "none.toml"))
    # labels given by the caller (a column of the data) complete a file without them
    assert load_task(str(tmp_path / "none.toml"), ["x", "y", "z"]).label_names == ["x", "y", "z"]


def test_builtin_intent_task_and_round_trip() -> None:
    task = load_task("banking77-intent")
    assert len(task.labels) == 77 and task.labels[0].answer == "card arrival"
    for t in (task, load_task("sentiment"), with_labels(task, INTENTS)):
        assert task_from_dict(tomllib.loads(task_toml(t))) == t


def test_labels_from_column(tmp_path: Path) -> None:
    from speculabel.cli.labelset import labels_from
    from speculabel.io.tables import InputError

    f = tmp_path / "data.csv"
    f.write_text("text,intent\nhello,b_x\nbye,a_y\nhm,b_x\nempty,\n")
    assert labels_from(str(f), "intent") == ["a_y", "b_x"]
    with pytest.raises(InputError, match="no column 'label'"):
        labels_from(str(f), "label")


def test_task_with_column_labels_is_written_beside_the_config(tmp_path: Path) -> None:
    from speculabel.cli.labelset import same_task, write_task

    base = tmp_path / "route.toml"
    base.write_text('name = "route"\ninstructions = "Route it."\nfields = ["text"]\n')
    task = load_task(str(base), ["a_y", "b_x"])
    assert not same_task(str(base), task)  # the file alone has no labels: write them out
    path = write_task(task, tmp_path / "cascade.toml")
    assert path.endswith("cascade.task.toml") and load_task(path) == task
    assert same_task(path, task)


# ----------------------------------------------------------------------------- the learner's fit


def test_cv_chooses_weak_regularisation_for_separable_many_classes() -> None:
    from speculabel.backends.learner.select import C_GRID, KNN_TEMPERATURES, KNN_WEIGHTS, choose

    items, labs = _intent_data(400)
    x = CentroidEmbedder()([it.fields["text"] for it in items])
    got = choose(x, np.array(labs))
    assert got.C in C_GRID and got.C >= 30 and got.folds == 3
    assert sum(k.startswith("C=") for k in got.scores) == len(C_GRID) * 2  # both weightings
    # then the neighbour vote's weight and temperature, on the same folds (0 always allowed)
    mixes = (len(KNN_WEIGHTS) - 1) * len(KNN_TEMPERATURES)
    assert sum(k.startswith("knn_weight=") for k in got.scores) == mixes
    assert got.knn_weight in KNN_WEIGHTS and got.temperature in KNN_TEMPERATURES
    # a neighbour vote is mixed in only when it lowers the out-of-fold loss
    plain = min(v for k, v in got.scores.items() if k.startswith("C="))
    mixed = min(v for k, v in got.scores.items() if k.startswith("knn"))
    assert (got.knn_weight > 0) == (mixed < plain)
    # too few labels for two folds: the middle of the grid, unweighted
    tiny = choose(x[:3], np.array(labs[:3]))
    assert tiny.folds == 0 and tiny.class_weight is None


def test_explicit_fit_votes_and_names_unseen_labels() -> None:
    from speculabel.backends.learner.backend import LearnerBackend

    task = with_labels(load_task("banking77-intent"), INTENTS)
    worker = LearnerBackend(embedder=CentroidEmbedder())
    worker.check_task(task)
    items, labs = _intent_data(120, classes=INTENTS[:-2])  # the last two intents never seen
    worker.fit([it.fields["text"] for it in items], labs)
    assert worker.unseen_labels() == INTENTS[-2:]
    assert worker.ready()  # fitted on purpose: votes although some classes have < 8 labels
    votes = worker.score(task, items[:5])
    assert all(not v.abstained and v.probs[INTENTS[-1]] == 0.0 for v in votes)
    assert worker.choice is not None


def test_a_second_fit_on_the_same_data_reuses_the_first(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from speculabel.backends.learner import select
    from speculabel.backends.learner.backend import LearnerBackend

    items, labs = _intent_data(200)
    worker = LearnerBackend(embedder=CentroidEmbedder())
    x = worker.embed([it.fields["text"] for it in items])
    first = worker.fit_model(x, np.array(labs))
    chosen = worker.choice
    monkeypatch.setattr(select, "choose", lambda *a, **k: pytest.fail("chose again"))
    assert worker.fit_model(x, np.array(labs)) is first and worker.choice is chosen
    # other labels are other data: fitted anew
    monkeypatch.undo()
    other = worker.fit_model(x, np.array(labs[1:] + labs[:1]))
    assert other is not first


def test_calibrate_many_labels_chooses_the_fit_share() -> None:
    from speculabel import calibrate
    from speculabel.backends.learner.backend import LearnerBackend

    task = with_labels(load_task("banking77-intent"), INTENTS)
    items, labs = _intent_data(600, seed=3)
    worker = LearnerBackend(embedder=CentroidEmbedder(noise=0.9))
    cert = calibrate(task=task, workers=[worker], items=items, references=labs,
                     scope="workers", target=0.9, delta=0.1)
    assert cert.threshold is not None, cert.statement
    assert cert.calibration.fit_fraction in MANY_LABEL_CANDIDATES  # 20 labels: many
    assert any(f"fit share chosen among {len(MANY_LABEL_CANDIDATES)} candidates" in n
               for n in cert.notes)
    assert cert.calibration.plan.result.delta == 0.1  # the promise is at the overall delta
    # the shipped worker is the one fitted on the chosen share
    assert worker.trained_on == cert.calibration.n_fit
    # a fixed share: one split, the full delta, no note
    fixed = calibrate(task=task, workers=[LearnerBackend(embedder=CentroidEmbedder(0.9))],
                      items=items, references=labs, scope="workers", target=0.9,
                      fit_fraction=0.5)
    assert fixed.calibration.n_fit == 300 and not fixed.notes


# ----------------------------------------------------------------------------- fit share choice


def test_settings_are_tuned_once_on_a_core_that_no_candidate_certifies_on() -> None:
    from types import SimpleNamespace

    from speculabel.certify.fitsplit import nested_split

    seen: list[str] = []
    core_of: list[list[int]] = []
    fits: list[tuple[list[int], list[int]]] = []

    def tune(core: list[int]) -> None:
        seen.append("tune")
        core_of.append(core)

    def run(fit_idx: list[int], cert_idx: list[int], level: float) -> object:
        seen.append("run")
        fits.append((fit_idx, cert_idx))
        res = SimpleNamespace(feasible=True, coverage=len(fit_idx) / 1000, best_bound=0.9,
                              delta=level)
        return SimpleNamespace(plan=SimpleNamespace(result=res), notes=[], fit_fraction=None)

    cal = certify_best_split(200, [0.5, 0.6, 0.8], 4, 0.09, run, tune)  # type: ignore[arg-type]
    assert seen == ["tune", "run", "run", "run"]  # tuned once, before any candidate
    core = set(core_of[0])
    assert len(core) == 100  # the smallest candidate share
    for (fit_idx, cert_idx), frac in zip(fits, [0.5, 0.6, 0.8], strict=True):
        assert core <= set(fit_idx) and not core & set(cert_idx)  # no certify item tuned on
        assert len(fit_idx) == round(frac * 200) and len(fit_idx) + len(cert_idx) == 200
    assert fits[1][1] != fits[2][1][:len(fits[1][1])]  # each candidate its own random draw
    assert cal.fit_fraction == 0.8 and any("cross-validation on 100 items" in n
                                           for n in cal.notes)
    fit, cert = nested_split(10, [0, 1, 2], 0.2, 0)  # a share below the core: the core alone
    assert fit == [0, 1, 2] and sorted(fit + cert) == list(range(10))


def test_calibrate_tunes_the_learner_once_and_unpins_it(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from speculabel import calibrate
    from speculabel.backends.learner import select
    from speculabel.backends.learner.backend import LearnerBackend

    calls: list[int] = []
    real = select.choose

    def counted(x: np.ndarray, y: np.ndarray, **kw: object) -> select.Choice:
        calls.append(len(y))
        return real(x, y, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(select, "choose", counted)
    task = with_labels(load_task("banking77-intent"), INTENTS)
    items, labs = _intent_data(400, seed=5)
    worker = LearnerBackend(embedder=CentroidEmbedder(noise=0.9))
    cert = calibrate(task=task, workers=[worker], items=items, references=labs,
                     scope="workers", target=0.9, delta=0.1)
    assert calls == [200]  # once, on the core (half of the items), not once per candidate
    assert worker.pinned is None and worker.choice is not None
    assert cert.threshold is not None, cert.statement


def test_fractions_of() -> None:
    assert fractions_of("auto", 0.3) == list(CANDIDATES)
    assert fractions_of("auto", 0.3, n_labels=3) == list(CANDIDATES)
    assert fractions_of("auto", 0.3, n_labels=77) == list(MANY_LABEL_CANDIDATES)
    assert min(MANY_LABEL_CANDIDATES) > min(CANDIDATES)  # many labels: more of it to fit on
    assert fractions_of(None, 0.3) == [0.3]
    assert fractions_of(0.6, 0.3) == [0.6]
    assert fractions_of([0.2, 0.4], 0.3) == [0.2, 0.4]
    for bad in ("most", 1.0, [-0.1]):
        with pytest.raises(ValueError):
            fractions_of(bad, 0.3)  # type: ignore[arg-type]


def test_certify_best_split_union_bound_and_refit() -> None:
    from types import SimpleNamespace

    calls: list[tuple[int, float]] = []

    def run(fit_idx: list[int], cert_idx: list[int], level: float) -> object:
        calls.append((len(fit_idx), level))
        res = SimpleNamespace(feasible=True, coverage=len(fit_idx) / 100 if len(fit_idx) < 60
                              else 0.1, best_bound=0.9, delta=level)
        return SimpleNamespace(plan=SimpleNamespace(result=res), notes=[], fit_fraction=None)

    cal = certify_best_split(100, [0.3, 0.5, 0.7], 0, 0.09, run)  # type: ignore[arg-type]
    assert [c[1] for c in calls] == pytest.approx([0.03] * 4)  # each at delta / 3
    assert calls[-1][0] == 50  # the chosen share (0.5) fitted again, last
    assert cal.fit_fraction == 0.5 and cal.plan.result.delta == 0.09
    assert split(10, 0.3, 1) == split(10, 0.3, 1) and len(split(10, 0.3, 1)[0]) == 3


# ----------------------------------------------------------------------------- the margin rule


def test_confident_margin_rule() -> None:
    rule = make_policy("confident-margin", 0.3)
    close = Vote.from_probs("w", {"a": 0.45, "b": 0.40, "c": 0.15})
    clear = Vote.from_probs("w", {"a": 0.5, "b": 0.1, "c": 0.1, "d": 0.1, "e": 0.2})
    assert not rule.decide([close], 1).accepted  # margin 0.05
    d = rule.decide([clear], 1)
    assert d.accepted and d.label == "a" and d.support == pytest.approx(0.3)
    assert make_policy("confident-majority", 0.5).decide([clear], 1).accepted


def test_bench_tracer_summary_and_table() -> None:
    from speculabel.bench.tracer import summary_of, table

    def row(seed: int, system: str, cov: float, agr: float | None, fit: float) -> dict:
        return {"data": "banking77", "budget": 500, "seed": seed, "system": system,
                "target": 0.9, "coverage": cov, "covered_agreement": agr,
                "whole_agreement": 0.95, "violation": agr is not None and agr < 0.9,
                "refused": agr is None, "fit_s": fit, "cpu_s": fit / 2, "load": 3.0}

    draws = [row(0, "speculabel", 0.5, 0.95, 10.0), row(1, "speculabel", 0.0, None, 30.0),
             row(2, "speculabel", 0.4, 0.85, 20.0), row(0, "tracer", 0.1, 0.92, 100.0)]
    by = {s["system"]: s for s in summary_of(draws)}
    ours = by["speculabel"]
    assert ours["draws"] == 3 and ours["refused"] == 1 and abs(ours["coverage"] - 0.3) < 1e-9
    assert abs(ours["covered_agreement"] - 0.9) < 1e-9  # refused draws have no agreement
    assert abs(ours["violation_rate"] - 1 / 3) < 1e-9
    assert ours["fit_s_median"] == 20.0 and ours["fit_s_max"] == 30.0 and ours["load"] == 3.0
    text = table({"summary": summary_of(draws)})
    assert "whole agr." in text and "CPU s" in text
    assert "| banking77 | 500 | 0.9 | 30.0% | 0.900 | 0.950 | 33% | 1/3 | 20.0 | 10.0 |" in text
