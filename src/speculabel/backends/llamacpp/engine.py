"""The KV-cache engine of the llama.cpp backend: evaluate token sequences, read label log-probs.

* The KV cache holds the task's *static prefix* (instructions and examples: the tokens every
  prompt of the task begins with), evaluated once on its own.  Each item rolls the cache back to
  that prefix and evaluates only its own tokens.  Reuse is decided on token ids, never on text, so
  it is exact by construction: no prefix cut can fall inside a BPE merge.  Labels that share
  leading tokens share their evaluation the same way.
* Every item is evaluated from the same point in the same batches whatever came before it:
  llama.cpp's numerics depend on how tokens are batched (up to 0.03 in probability on gemma3-270m,
  measured), and reusing "whatever the last item left" made an item's vote depend on its
  neighbour.  Votes are therefore a function of (model, task, item) alone.
* Logits are read for the positions that predict label tokens only (``llama_get_logits_ith``);
  the log-softmax is computed here with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from speculabel.errors import SpeculabelError


class Unanswerable(SpeculabelError):
    """This item cannot be scored (the reason becomes the abstention's message)."""


@dataclass
class _Row:
    """Logits at one position and their log-sum-exp: ``logits[t] - lse`` is log p(t)."""

    logits: np.ndarray
    lse: float

    def logprob(self, token: int) -> float:
        return float(self.logits[token]) - self.lse


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _chain(seqs: Sequence[list[int]]) -> int:
    """The longest run of sequences each beginning the next: labels of one group split into
    that many sets in which none begins another (Mirsky), each holding at most the group's
    first-token probability."""
    return max(sum(s[: len(o)] == o for o in seqs) for s in seqs)


class KVEngine:
    """One llama.cpp context: the tokens in its cache and the decode calls that fill it."""

    def __init__(self, llama_cpp: Any, llm: Any, *, prefix_cache: bool = True) -> None:
        self._lc = llama_cpp
        self._ctx = llm.ctx
        self.prefix_cache = prefix_cache
        # one decode call takes at most the context's n_batch tokens
        self._n_batch = int(llama_cpp.llama_n_batch(self._ctx))
        self._n_vocab = int(llm.n_vocab())
        self._batch: Any = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self.kv: list[int] = []  # tokens whose keys/values are in the cache, positions 0..
        # the task prefix evaluated on its own at positions 0.. (None: the cache holds no such)
        self._canon: list[int] | None = None
        #: tokens run through the model so far (prefix reuse shows here, whatever the CPU load)
        self.tokens_evaluated = 0

    def free(self) -> None:
        self._lc.llama_batch_free(self._batch)

    def clear(self) -> None:
        self._lc.llama_memory_clear(self._lc.llama_get_memory(self._ctx), True)
        self.kv = []
        self._canon = None

    def anchor(self, target: list[int], prefix: list[int]) -> int:
        """Prepare the cache for a new item and return the position its evaluation starts from:
        the end of the task prefix (evaluated alone: once, or for every item without
        ``prefix_cache``, so that both modes give the same votes), or 0 when the item's tokens do
        not begin with it (then the item is evaluated whole, from an empty cache)."""
        if len(prefix) < 2 or target[: len(prefix)] != prefix:
            self.clear()
            return 0
        if not self.prefix_cache or self._canon != prefix or self.kv[: len(prefix)] != prefix:
            self.clear()
            self.ensure(prefix, len(prefix) - 1)
            self._canon = list(prefix)
        return len(prefix)

    def ensure(self, target: list[int], want_from: int, cap: int | None = None) -> list[_Row]:
        """Make the cache hold exactly ``target``; return the rows (next-token distributions) at
        positions ``want_from .. len(target)-1``.  Reuses the longest common token prefix, but
        never more than ``cap`` tokens."""
        keep = min(common_prefix(self.kv, target), want_from)
        if cap is not None:
            keep = min(keep, cap)
        if keep < len(self.kv):
            if self._canon is not None and keep < len(self._canon):
                self._canon = None
            mem = self._lc.llama_get_memory(self._ctx)
            ok = keep > 0 and self._lc.llama_memory_seq_rm(mem, 0, keep, -1)
            # a cache that cannot roll back (recurrent, pruned sliding window): start over
            if not ok or self._lc.llama_memory_seq_pos_min(mem, 0) > 0:
                self.clear()
                keep = 0
            else:
                del self.kv[keep:]
        rows: list[_Row] = []
        b = self._batch
        pos = keep
        while pos < len(target):
            chunk = target[pos : pos + self._n_batch]
            b.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = pos + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = pos + i >= want_from
            rc = self._lc.llama_decode(self._ctx, b)
            if rc != 0:
                self.clear()
                raise RuntimeError(f"llama_decode returned {rc}")
            self.kv.extend(chunk)
            self.tokens_evaluated += len(chunk)
            for i in range(len(chunk)):
                if pos + i >= want_from:
                    ptr = self._lc.llama_get_logits_ith(self._ctx, i)
                    logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()
                    m = float(logits.max())
                    lse = m + float(np.log(np.exp(logits.astype(np.float64) - m).sum()))
                    rows.append(_Row(logits, lse))
            pos += len(chunk)
        return rows

    def score_sequences(
        self, sequences: dict[str, list[int]], prefix: list[int] | None = None,
        prune: float = 0.0,
    ) -> dict[str, float]:
        """Sum of token log-probs of each sequence after the part all of them share.  The first
        evaluation starts at the task prefix (see :meth:`anchor`), the others reuse it.

        ``prune > 0`` (many labels): a label's probability is at most its first token's, and the
        labels that begin with one token share at most that token's probability.  Labels are
        scored whole in groups by first token, most probable first, until the groups left hold
        at most ``prune`` times the probability already found; those left get ``-inf``.  The
        renormalised distribution is then within ``prune`` of the exact one in total variation,
        and its most probable label is exact unless it is that close to a tie."""
        seqs = list(sequences.values())
        others = seqs[1:] or [seqs[0][:-1]]  # one label: everything but its last token
        shared = min(common_prefix(seqs[0], s) for s in others)
        shared = min(shared, min(len(s) for s in seqs) - 1)
        if shared < 1:
            raise Unanswerable("the labels' token sequences share no prompt")
        rests = {k: s[shared:] for k, s in sequences.items()}
        rows: dict[tuple[int, ...], _Row] = {}
        names = sorted(rests, key=lambda k: rests[k])
        if prune > 0.0:
            # the first label in token order, evaluated as the exact path does (the item's
            # tokens in the same batches, so the two differ by the pruning alone), gives the
            # distribution of every label's first token
            self._visit(sequences, rests, names[:1], shared, rows, prefix or [])
            groups: dict[int, list[str]] = {}
            for name in names:
                groups.setdefault(rests[name][0], []).append(name)
            order = sorted(groups, key=lambda t: -rows[()].logprob(t))
            # labels none of which begins another share the first token's probability; a label
            # that begins another (no end marker) may not, so each chain of such labels counts
            bound = [float(np.exp(rows[()].logprob(t))) * _chain([rests[k] for k in groups[t]])
                     for t in order]
            left = float(sum(bound))
            found = 0.0
            scored: dict[str, float] = {}
            for g, tok in enumerate(order):
                if found > 0.0 and left <= prune * found:
                    break
                left -= bound[g]
                self._visit(sequences, rests, groups[tok], shared, rows, None)
                for name in groups[tok]:
                    scored[name] = self._sum(rows, rests[name])
                    found += float(np.exp(scored[name]))
            return {name: scored.get(name, float("-inf")) for name in rests}
        # visit labels in token order so that neighbours share their leading tokens
        self._visit(sequences, rests, names, shared, rows, prefix or [])
        return {name: self._sum(rows, rest) for name, rest in rests.items()}

    def _visit(self, sequences: dict[str, list[int]], rests: dict[str, list[int]],
               names: Sequence[str], shared: int, rows: dict[tuple[int, ...], _Row],
               prefix: list[int] | None) -> None:
        """Evaluate what ``names`` need that ``rows`` lacks, in this order; ``prefix``: anchor
        the first evaluation there (None: the cache already holds the shared part)."""
        cap: int | None = None
        for visit, name in enumerate(names):
            rest = rests[name]
            missing = next((i for i in range(len(rest)) if tuple(rest[:i]) not in rows), None)
            if missing is None:
                continue
            target = sequences[name][:-1]
            if visit == 0 and prefix is not None:
                cap = self.anchor(target, prefix)
            new = self.ensure(target, shared - 1 + missing, cap)
            cap = None
            for k, row in enumerate(new):
                rows[tuple(rest[: missing + k])] = row

    @staticmethod
    def _sum(rows: dict[tuple[int, ...], _Row], rest: list[int]) -> float:
        return sum(rows[tuple(rest[:i])].logprob(tok) for i, tok in enumerate(rest))
