"""Label pruning on many-label tasks (``KVEngine.score_sequences(prune=...)``).

The pure logic (groups by first token, the bound, when to stop) runs against a toy language
model whose next-token distribution is a fixed function of the whole context, so pruned and
exact scores can be compared to the last bit: the total variation stays within the tolerance.
The real-model test runs smollm2-135m on a 12-label routing task through the backend."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from speculabel.backends.llamacpp.engine import KVEngine, _chain, _Row
from speculabel.records import Item, normalise_logprobs
from speculabel.tasks import Label, Task

VOCAB = 40


class ToyEngine(KVEngine):
    """A KVEngine whose model is a seeded function of the context (no llama.cpp): the rows
    depend on the tokens before a position only, never on how they were batched."""

    def __init__(self, peak: float) -> None:  # no llama.cpp context to set up
        self.kv, self._canon, self.prefix_cache = [], None, True
        self.tokens_evaluated = 0
        self.peak = peak

    def clear(self) -> None:
        self.kv = []

    def anchor(self, target: list[int], prefix: list[int]) -> int:
        self.clear()
        return 0

    def ensure(self, target: list[int], want_from: int, cap: int | None = None) -> list[_Row]:
        keep = min(len(self.kv), want_from)
        while keep and self.kv[:keep] != target[:keep]:
            keep -= 1
        self.tokens_evaluated += len(target) - keep
        self.kv = list(target)
        rows = []
        for pos in range(want_from, len(target)):
            seed = int.from_bytes(hashlib.blake2b(bytes(target[: pos + 1]), digest_size=8).digest(),
                                  "little")
            logits = np.random.default_rng(seed).normal(0, self.peak, VOCAB)
            m = float(logits.max())
            rows.append(_Row(logits, m + float(np.log(np.exp(logits - m).sum()))))
        return rows


def _labels(rng: np.random.Generator, n: int) -> dict[str, list[int]]:
    """``n`` distinct label continuations of 1-4 tokens after a shared 5-token prompt, some of
    them beginning others (the chain case)."""
    prompt = [1, 2, 3, 4, 5]
    out: dict[str, list[int]] = {}
    while len(out) < n:
        rest = [int(t) for t in rng.integers(6, VOCAB, rng.integers(1, 5))]
        if all(rest != v[5:] for v in out.values()):
            out[f"l{len(out)}"] = prompt + rest
    return out


def _tv(a: dict[str, float], b: dict[str, float]) -> float:
    return 0.5 * sum(abs(a[k] - b[k]) for k in a)


@pytest.mark.parametrize("peak", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("eps", [1e-3, 1e-2, 0.1])
def test_pruned_distribution_is_within_the_tolerance_of_the_exact_one(peak: float, eps: float
                                                                       ) -> None:
    rng = np.random.default_rng(int(peak * 10 + eps * 1000))
    saved = 0
    for _ in range(40):
        seqs = _labels(rng, 30)
        exact = normalise_logprobs(ToyEngine(peak).score_sequences(seqs))
        engine = ToyEngine(peak)
        pruned_raw = engine.score_sequences(seqs, prune=eps)
        pruned = normalise_logprobs(pruned_raw)
        assert _tv(exact, pruned) <= eps + 1e-12
        # a label it scored has exactly the exact score; one it did not has none
        full = ToyEngine(peak).score_sequences(seqs)
        for k, v in pruned_raw.items():
            assert v == full[k] or v == -math.inf
        top = sorted(exact.values())
        if top[-1] - top[-2] > 2 * eps:
            assert max(pruned, key=pruned.__getitem__) == max(exact, key=exact.__getitem__)
        saved += sum(v == -math.inf for v in pruned_raw.values())
    if peak >= 4.0 or (peak >= 2.0 and eps >= 1e-2):  # a peaked first-token distribution leaves labels out
        assert saved > 0


def test_no_pruning_scores_every_label_and_zero_means_exact() -> None:
    seqs = _labels(np.random.default_rng(5), 20)
    a = ToyEngine(3.0).score_sequences(seqs)
    b = ToyEngine(3.0).score_sequences(seqs, prune=0.0)
    assert a == b and all(math.isfinite(v) for v in a.values())


def test_chain_counts_labels_that_begin_others() -> None:
    assert _chain([[5], [6], [7, 8]]) == 1
    assert _chain([[5], [5, 6], [5, 6, 7], [5, 9]]) == 3
    # labels 'no' and 'no idea': each may hold up to the first token's probability
    seqs = {"no": [1, 2, 7], "no_idea": [1, 2, 7, 9], "yes": [1, 2, 8]}
    for peak in (1.0, 3.0):
        exact = normalise_logprobs(ToyEngine(peak).score_sequences(seqs))
        pruned = normalise_logprobs(ToyEngine(peak).score_sequences(seqs, prune=0.05))
        assert _tv(exact, pruned) <= 0.05 + 1e-12


# ---------------------------------------------------------------- a real model

TOPICS = ["billing", "refund", "password reset", "delivery delay", "card lost", "card declined",
          "account closure", "address change", "fraud report", "app crash", "loan question",
          "exchange rate"]
ROUTING = Task(
    name="routing12",
    labels=tuple(Label(t.replace(" ", "_"), text=t) for t in TOPICS),
    fields=("text",),
    instructions="Route this customer message to one topic.",
    input_template="Message: {text}",
    answer_cue="Topic:",
)
MESSAGES = ["I was charged twice for my subscription this month.",
            "My new card still has not arrived after two weeks.",
            "Someone used my card in another country, I did not make these payments.",
            "The app closes as soon as I open the transfers page."]


@pytest.mark.slow
def test_real_model_pruning_saves_tokens_and_keeps_the_distribution(smollm2_path: Path) -> None:
    import needs

    needs.module("llama_cpp", needs.LLAMA)
    from speculabel.backends.llamacpp.backend import LABEL_PRUNING, LlamaCppBackend

    items = [Item(str(i), {"text": t}) for i, t in enumerate(MESSAGES)]
    votes: dict[float, Any] = {}
    tokens: dict[float, int] = {}
    for eps in (0.0, LABEL_PRUNING):
        b = LlamaCppBackend("smollm2-135m", smollm2_path, chat=True, n_threads=1,
                            label_pruning=eps)
        try:
            b.score(ROUTING, items[:1])  # the task prefix, evaluated once
            start = b.tokens_evaluated
            votes[eps] = b.score(ROUTING, items)
            tokens[eps] = b.tokens_evaluated - start
        finally:
            b.close()
    assert tokens[LABEL_PRUNING] < tokens[0.0], tokens
    for exact, pruned in zip(votes[0.0], votes[LABEL_PRUNING], strict=True):
        assert list(pruned.probs) == ROUTING.label_names
        assert math.isclose(sum(pruned.probs.values()), 1.0, abs_tol=1e-9)
        # within the tolerance, plus a little of llama.cpp's batching noise (the item's tokens
        # go in the same batches; labels after the first may be split otherwise)
        assert _tv(exact.probs, pruned.probs) <= LABEL_PRUNING + 0.005, (exact.probs, pruned.probs)
        ranked = sorted(exact.probs.values())
        if ranked[-1] - ranked[-2] > 0.1:
            assert pruned.label == exact.label
    # the default applies to many-label tasks only, and never with contextual calibration
    b = LlamaCppBackend("smollm2-135m", smollm2_path, chat=True, n_threads=1)
    try:
        from speculabel.tasks import SENTIMENT

        assert b.pruning(ROUTING) == LABEL_PRUNING and b.pruning(SENTIMENT) == 0.0
        b.calibration = dict.fromkeys(ROUTING.label_names, 0.0)
        assert b.pruning(ROUTING) == 0.0
    finally:
        b.close()


def test_default_pruned_votes_never_share_a_vote_store_key_with_exact_ones(
        smollm2_path: Path, tmp_path: Path) -> None:
    """A many-label vote scored with the default pruning is kept apart from an exact one (and
    from one at an explicit tolerance); 3-label votes keep the plain key."""
    from speculabel.backends.cached import CachedBackend
    from speculabel.backends.llamacpp.backend import LABEL_PRUNING, LlamaCppBackend
    from speculabel.io.votes import VoteStore
    from speculabel.records import Item
    from speculabel.tasks import SENTIMENT

    default = LlamaCppBackend("smollm2-135m", smollm2_path, chat=True, n_threads=1)
    exact = LlamaCppBackend("smollm2-135m", smollm2_path, chat=True, n_threads=1,
                            label_pruning=0.0)
    try:
        plain = default.fingerprint()
        assert default.vote_fingerprint(SENTIMENT) == plain
        assert default.vote_fingerprint(ROUTING) == f"{plain}+prune:{LABEL_PRUNING:g}"
        assert exact.vote_fingerprint(ROUTING) == exact.fingerprint() != plain
        assert len({default.vote_fingerprint(ROUTING), exact.vote_fingerprint(ROUTING),
                    plain}) == 3
        # through a vote store: the exact run's stored votes are not served to the pruned one
        item = [Item("r1", {"text": "My card was charged twice for one purchase."})]
        with VoteStore(tmp_path / "v.sqlite") as store:
            first = CachedBackend(exact, store).score(ROUTING, item)[0]
            again = CachedBackend(default, store).score(ROUTING, item)[0]
            assert not first.cached and not again.cached
            assert CachedBackend(default, store).score(ROUTING, item)[0].cached
    finally:
        default.close()
        exact.close()


@pytest.mark.slow
def test_pruning_bench_rows_compare_with_the_exact_scores(smollm2_path: Path) -> None:
    import needs

    needs.module("llama_cpp", needs.LLAMA)
    from speculabel.bench.intents import read_split
    from speculabel.bench.pruning import pruning_rows, table

    needs.data(lambda: read_split("test"), "banking77")
    rows = pruning_rows("smollm2-135m", 2, [0.01])
    assert [r["tolerance"] for r in rows] == [0.0, 0.01]
    assert rows[0]["tv_max"] == 0.0 and rows[0]["same_label_as_exact"] == 1.0
    assert rows[1]["tokens_per_item"] <= rows[0]["tokens_per_item"]
    assert rows[1]["tv_max"] <= 0.01 + 0.005
    assert "| 0.01 |" in table(rows)


@pytest.mark.slow
def test_judge_teacher_labels_are_stored_and_never_bought_twice(smollm2_path: Path,
                                                                tmp_path: Path) -> None:
    import needs

    needs.module("llama_cpp", needs.LLAMA)
    from speculabel.bench.intents import IntentSplit, categories, judge_taught

    needs.data(categories, "banking77")
    texts = ["My card has not arrived yet.", "How do I top up by bank transfer?",
             "Why was I charged a fee at the ATM?", "I want to close my account."]
    split = IntentSplit(texts, np.array(["x"] * 4), np.eye(4, dtype=np.float32))
    cache = tmp_path / "judge.jsonl"
    got = judge_taught(split, 3, "smollm2-135m", cache, seed=1)
    assert len(got.texts) == 3 and set(got.texts) <= set(texts)
    assert set(got.labels.tolist()) <= set(categories())  # the judge's labels, not gold's
    assert got.x.shape == (3, 4)
    # a second call finds every answer stored: no model is loaded (this one does not exist)
    again = judge_taught(split, 3, "no-such-model", cache, seed=1)
    assert again.texts == got.texts and again.labels.tolist() == got.labels.tolist()
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 3  # one line per answer


def test_stored_judge_answers_survive_a_torn_line_and_read_the_old_format(tmp_path: Path) -> None:
    import json

    from speculabel.bench.intents import read_answers

    cache = tmp_path / "judge-x-train.jsonl"
    cache.with_suffix(".json").write_text(json.dumps({"k0": "a", "k1": None}), encoding="utf-8")
    cache.write_text(json.dumps({"key": "k2", "label": "b"}) + "\n"
                     + json.dumps({"key": "k1", "label": "c"}) + "\n" + '{"key": "k3", "la',
                     encoding="utf-8")
    assert read_answers(cache) == {"k0": "a", "k1": "c", "k2": "b"}
    assert read_answers(tmp_path / "none.jsonl") == {}
