"""Calibration: a confidence threshold with a statistical guarantee, and better-scaled workers.

The guarantee (Criterion 2 made safe)
-------------------------------------
On a calibration set where every item has a *reference* label (the judge's, or gold), we pick the
loosest threshold ``t`` of an acceptance rule (``confident-majority`` or ``weighted``) such that

    P( agreement with the reference on the items the workers decide  >=  target )  >=  1 - delta

over the draw of the calibration set, for new items drawn from the same distribution.

Method: **exact binomial test with fixed-sequence testing** (as in Trust or Escalate, Jung et
al. 2024, and Learn-then-Test, Angelopoulos et al. 2021).  For each threshold ``t`` of a fixed
grid, walked from strict (1.0) to loose (0.0), the null hypothesis is "the disagreement rate of
the items accepted at ``t`` exceeds ``eps = 1 - target``".  Given ``n`` accepted calibration
items of which ``k`` disagree, its exact p-value is ``P(Binomial(n, eps) <= k)``; equivalently,
the test passes when the one-sided Clopper-Pearson upper bound on the disagreement rate,
at level ``1 - delta``, is below ``eps``.  Testing in a fixed order and stopping at the first
failure controls the family-wise error at ``delta`` without any multiplicity correction, so
each test runs at the full ``delta``; the chosen threshold is the last one that passed, which
accepts the most items (fewest judge calls) among the certified ones.

One practical detail, stated openly: at the strict end of the grid almost no item is accepted,
and no test on fewer than ``n_min = ceil(log(delta) / log(1 - eps))`` items can pass even with no
disagreement at all (45 items for target 0.95 at delta 0.1).  Taken literally, fixed-sequence
testing would stop there.  We start the sequence at the first threshold with at least
``n_min`` accepted items.  That starting point depends on the confidence scores only, never on
the labels; it is exact when agreement does not fall as confidence rises (the usual case, and
what a confidence score is for), and :mod:`scripts/guarantee_check.py` measures the violation
rate over random calibration/test splits of real data.  ``method="bonferroni"`` is the variant
with no such condition (every grid threshold tested at ``delta / len(grid)``, the loosest that
passes wins); it is more conservative.

Per-model calibration
---------------------
* **Contextual calibration** (Zhao et al. 2021): a model's mean log-probabilities on
  content-free inputs (``"N/A"``, ``""``, ``"[MASK]"``) are its label bias; subtracting them
  re-centres its distribution.  It can change the arg-max, so it changes accuracy (up or down).
* **Temperature scaling**: divide log-probabilities by ``T`` fitted by likelihood on the
  reference labels.  It never changes a model's own arg-max, only how confident it claims to be
  (which matters when several workers' confidences are averaged or weighted).

Each is kept for a model only when it helps on held-out folds of the calibration set
(accuracy for the offsets, log-loss for the temperature): see :func:`choose_model_calibration`.
Both are applied by :func:`speculabel.backends.calibrated.calibrate_vote`, the function the
cascade uses at run time, so calibration and classification see identical numbers.

Reliability weights
-------------------
For ``policy = "weighted"`` each worker's weight is the log-odds of its measured agreement with
the reference, against chance for ``K`` labels: ``w = log(acc * (K - 1) / (1 - acc))``, which is
the optimal weight of a symmetric ("one-coin") Dawid-Skene model; a worker at or below chance
gets weight 0.  The weighted vote's threshold is then certified exactly like the confident
majority's.

Data reuse: fitting temperatures, choosing offsets and weights look at the reference labels too.
With ``fit_fraction > 0`` they are fitted on that share of the calibration set and the threshold
is certified on the rest, so the guarantee is untouched by the fitting.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.backends.calibrated import calibrate_vote
from speculabel.policy import ConfidentMajority, Policy, WeightedVote
from speculabel.records import Item, Vote

METHODS = ("fixed-sequence", "fallback", "bonferroni")
FALLBACK_STARTS = 3
CALIBRATED_POLICIES = ("confident-majority", "weighted")
CONTENT_FREE = ("N/A", "", "[MASK]")


# ----------------------------------------------------------------------------- binomial tools

_LOGFACT_CACHE: list[np.ndarray] = [np.zeros(1)]


def _log_factorials(n: int) -> np.ndarray:
    """log(i!) for i = 0..n (cached, grows on demand)."""
    table = _LOGFACT_CACHE[0]
    if len(table) <= n:
        size = max(n + 1, 2 * len(table))
        table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, size, dtype=float)))])
        _LOGFACT_CACHE[0] = table
    return table[: n + 1]


def binom_cdf(k: int, n: int, p: float) -> float:
    """Exact ``P(Binomial(n, p) <= k)``, summed in log space (no scipy needed)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lf = _log_factorials(n)
    i = np.arange(k + 1)
    logpmf = lf[n] - lf[i] - lf[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    m = float(logpmf.max())
    return float(min(1.0, math.exp(m) * np.exp(logpmf - m).sum()))


@functools.lru_cache(maxsize=1 << 16)  # a threshold sweep asks for the same (k, n) again and again
def binom_p_value(k: int, n: int, eps: float) -> float:
    """p-value of "disagreement rate > eps" after seeing ``k`` disagreements in ``n`` items.

    ``P(Binomial(n, eps) <= k)``: small when ``k`` is far below ``n * eps``.  With ``n = 0`` it
    is 1 (no evidence).
    """
    if n <= 0:
        return 1.0
    return binom_cdf(k, n, eps)


@functools.lru_cache(maxsize=1 << 16)
def binom_upper_bound(k: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson upper bound on a rate at confidence ``1 - delta``.

    The largest ``p`` with ``P(Binomial(n, p) <= k) >= delta``, i.e. the ``1 - delta``
    quantile of ``Beta(k + 1, n - k)``.  Exact; found by bisection on :func:`binom_cdf`.
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if n <= 0 or k >= n:
        return 1.0
    if k < 0:
        raise ValueError("k must be >= 0")
    if k == 0:
        return 1.0 - delta ** (1.0 / n)
    fast = _scipy_beta_ppf()
    if fast is not None:
        return float(fast(1.0 - delta, k + 1, n - k))
    lo, hi = k / n, 1.0
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        if binom_cdf(k, n, mid) >= delta:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return hi  # the side with P(Bin(n, hi) <= k) < delta: never below the exact bound


def _scipy_beta_ppf() -> Callable[[float, int, int], float] | None:
    """scipy's Beta quantile when scipy is installed (same bound, faster); else None."""
    try:
        from scipy.special import betaincinv
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return None
    return lambda q, a, b: float(betaincinv(a, b, q))


def min_items(target: float, delta: float) -> int:
    """Fewest accepted items on which a test can pass at all (with zero disagreement)."""
    eps = 1.0 - target
    if eps <= 0.0:
        return 10**12  # a target of 1.0 can never be certified from a finite sample
    if eps >= 1.0:
        return 0
    return max(1, math.ceil(math.log(delta) / math.log1p(-eps) - 1e-12))


def default_grid(step: float = 0.005) -> list[float]:
    """Thresholds from 1.0 down to 0.0 (strict to loose), fixed before seeing any data."""
    n = round(1.0 / step)
    return [round(1.0 - i * step, 6) for i in range(n + 1)]


# ----------------------------------------------------------------------------- threshold search


@dataclass(frozen=True)
class SequenceStep:
    """One threshold of the sequence: ``n`` accepted items, ``k`` of them disagreeing."""

    threshold: float
    n: int
    k: int
    p_value: float
    passed: bool

    @property
    def agreement(self) -> float | None:
        return 1.0 - self.k / self.n if self.n else None


@dataclass
class CalibrationResult:
    """The chosen threshold and what it promises.

    ``coverage``: share of calibration items the workers decide at ``threshold`` (1 minus the
    judge-call rate).  ``agreement``: their empirical agreement with the reference.  ``bound``:
    the lower confidence bound on that agreement (``1 -`` Clopper-Pearson upper bound on
    disagreement at level ``1 - delta``).  When no threshold qualifies, ``feasible`` is False,
    ``threshold`` is None (the workers must decide nothing) and ``shortfall`` says how far the
    best agreement any grid threshold can certify is below the target.
    """

    target: float
    delta: float
    method: str
    n_items: int
    threshold: float | None
    coverage: float
    agreement: float | None
    bound: float | None
    feasible: bool
    shortfall: float
    best_bound: float  # the highest agreement lower bound over the grid
    best_bound_threshold: float | None
    n_min: int
    steps: list[SequenceStep] = field(default_factory=list, repr=False)
    stopped_at: float | None = None  # fixed-sequence: the first threshold whose test failed

    @property
    def judge_call_rate(self) -> float:
        return 1.0 - self.coverage

    def message(self) -> str:
        if self.feasible:
            return (
                f"threshold {self.threshold:g}: the workers decide {100 * self.coverage:.1f}% of "
                f"items (judge-call rate {100 * self.judge_call_rate:.1f}%); agreement on those "
                f"{100 * (self.agreement or 0):.1f}% on {self.n_items} calibration items, "
                f"at least {100 * (self.bound or 0):.1f}% with probability "
                f"{100 * (1 - self.delta):g}% (target {100 * self.target:g}%)"
            )
        where = (
            f" (threshold {self.best_bound_threshold:g})"
            if self.best_bound_threshold is not None
            else ""
        )
        if self.best_bound >= self.target:
            stop = f" at threshold {self.stopped_at:g}" if self.stopped_at is not None else ""
            return (
                f"no threshold meets the target: threshold {self.best_bound_threshold:g} alone "
                f"would show agreement >= {100 * self.best_bound:.1f}%, but the {self.method} "
                f"test sequence (strict to loose) failed earlier{stop}, on too few or too noisy "
                f"items, and may not go past a failure; more calibration items, or "
                f"--method fallback (fresh starts further on), can reach it"
            )
        return (
            f"no threshold meets the target: agreement {100 * self.target:g}% with probability "
            f"{100 * (1 - self.delta):g}% cannot be certified on these {self.n_items} items; the "
            f"best certifiable agreement is {100 * self.best_bound:.1f}%{where}, short by "
            f"{100 * self.shortfall:.1f} points"
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = [asdict(s) for s in self.steps if s.n > 0]
        d["judge_call_rate"] = self.judge_call_rate
        return d


def calibrate_threshold(
    scores: Sequence[float] | np.ndarray,
    agree: Sequence[bool] | np.ndarray,
    target: float,
    delta: float,
    *,
    grid: Sequence[float] | None = None,
    method: str = "fixed-sequence",
) -> CalibrationResult:
    """The loosest grid threshold certified to give ``agreement >= target`` w.p. ``1 - delta``.

    ``scores[i]``: the rule's support for item ``i`` (accepted at threshold ``t`` iff
    ``scores[i] >= t``); ``-inf`` or NaN for an item the rule never accepts (no majority, too
    few answers).  ``agree[i]``: whether the workers' label equals the reference.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    s = np.asarray(scores, dtype=float)
    a = np.asarray(agree, dtype=bool)
    if s.shape != a.shape:
        raise ValueError(f"{len(s)} scores but {len(a)} agreement flags")
    s = np.where(np.isnan(s), -np.inf, s)
    thresholds = sorted({float(t) for t in (grid if grid is not None else default_grid())},
                        reverse=True)
    n_total = len(s)
    eps = 1.0 - target

    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    wrong_cum = np.concatenate([[0], np.cumsum(~a[order])])
    neg = -s_sorted  # ascending
    steps: list[SequenceStep] = []
    if method == "fixed-sequence":
        level = delta
    elif method == "fallback":
        level = delta / FALLBACK_STARTS
    else:
        level = delta / max(1, len(thresholds))
    n_start = min_items(target, level)
    # fallback: a fresh share of delta joins at n_start, 4 n_start, 16 n_start accepted items
    starts = [n_start * 4**i for i in range(FALLBACK_STARTS)]
    chosen: SequenceStep | None = None
    chosen_level = level
    carried = 0.0  # fixed-sequence / fallback: the level passed on by a rejection
    started = 0
    stopped = False
    stopped_at: float | None = None
    best_bound, best_t = 0.0, None
    for t in thresholds:
        n = int(np.searchsorted(neg, -t, side="right"))  # items with score >= t
        k = int(wrong_cum[n])
        p = binom_p_value(k, n, eps)
        if method == "bonferroni":
            ok = p <= level
            if ok and (chosen is None or n >= chosen.n):
                chosen = SequenceStep(t, n, k, p, True)
        else:
            # the sequence starts at the first threshold where a test can pass at all
            fresh = 0.0
            while started < (1 if method == "fixed-sequence" else FALLBACK_STARTS) and \
                    n >= starts[started]:
                fresh += level
                started += 1
            here = carried + fresh
            ok = here > 0 and not stopped and p <= here
            if ok:
                chosen, chosen_level = SequenceStep(t, n, k, p, True), here
            elif here > 0 and method == "fixed-sequence" and not stopped:
                stopped, stopped_at = True, t
            carried = here if ok else 0.0
        steps.append(SequenceStep(t, n, k, p, ok))
    # the best agreement any threshold can certify (the "by how much" of an infeasible target)
    seen: set[tuple[int, int]] = set()
    for st in steps:
        if st.n == 0 or (st.n, st.k) in seen:
            continue
        seen.add((st.n, st.k))
        lcb = 1.0 - binom_upper_bound(st.k, st.n, level)
        if lcb > best_bound + 1e-12:
            best_bound, best_t = lcb, st.threshold
    if chosen is None:
        return CalibrationResult(
            target, delta, method, n_total, None, 0.0, None, None, False,
            max(0.0, target - best_bound), best_bound, best_t, n_start, steps, stopped_at,
        )
    return CalibrationResult(
        target, delta, method, n_total, chosen.threshold,
        chosen.n / n_total if n_total else 0.0,
        1.0 - chosen.k / chosen.n,
        1.0 - binom_upper_bound(chosen.k, chosen.n, chosen_level),
        True, 0.0, best_bound, best_t, n_start, steps, stopped_at,
    )


def max_feasible_target(
    scores: Sequence[float] | np.ndarray,
    agree: Sequence[bool] | np.ndarray,
    delta: float,
    *,
    grid: Sequence[float] | None = None,
    method: str = "fixed-sequence",
    resolution: float = 0.001,
) -> float | None:
    """The highest target (to ``resolution``) that these votes can be calibrated for, or None."""
    if not calibrate_threshold(scores, agree, resolution, delta, grid=grid, method=method).feasible:
        return None
    lo, hi = resolution, 1.0 - resolution
    while hi - lo > resolution:
        mid = 0.5 * (lo + hi)
        if calibrate_threshold(scores, agree, mid, delta, grid=grid, method=method).feasible:
            lo = mid
        else:
            hi = mid
    return round(lo, 6)


# ----------------------------------------------------------------------------- votes -> scores


def policy_scores(
    policy: Policy, votes: Sequence[Sequence[Vote]], n_workers: int | None = None
) -> tuple[np.ndarray, list[str | None]]:
    """Each item's support under ``policy`` run at threshold 0, and the workers' label.

    An item the rule does not accept even at threshold 0 (no majority, a tie, too few answers)
    gets ``-inf``: no threshold lets the workers decide it.
    """
    scores = np.full(len(votes), -np.inf)
    labels: list[str | None] = []
    for i, vs in enumerate(votes):
        d = policy.decide(vs, n_workers if n_workers is not None else len(vs))
        labels.append(d.label)
        if d.accepted:
            scores[i] = d.support
    return scores, labels


def agreement_flags(labels: Sequence[str | None], reference: Sequence[str | None]) -> np.ndarray:
    pairs = zip(labels, reference, strict=True)
    return np.array([a is not None and r is not None and a == r for a, r in pairs], dtype=bool)


def make_calibrated_policy(
    name: str, threshold: float = 0.0, weights: Mapping[str, float] | None = None
) -> Policy:
    if name == "confident-majority":
        return ConfidentMajority(threshold)
    if name == "weighted":
        return WeightedVote(dict(weights or {}), threshold)
    raise ValueError(f"policy {name!r} has no threshold to calibrate; use one of "
                     f"{', '.join(CALIBRATED_POLICIES)}")


# ------------------------------------------------------------------------- per-model calibration


def contextual_offsets(
    score: Callable[[Sequence[Item]], Sequence[Vote]],
    fields: Sequence[str],
    content_free: Sequence[str] = CONTENT_FREE,
) -> dict[str, float]:
    """A model's mean label log-probabilities on content-free inputs (Zhao et al. 2021).

    ``score`` is e.g. ``lambda items: backend.score(task, items)``.  Every field of an item gets
    the same content-free string.  Inputs the model abstains on (some backends refuse an empty
    text) are skipped; if it answers none of them, :class:`ValueError`.
    """
    items = [Item(f"content-free-{i}", {f: text for f in fields}) for i, text in
             enumerate(content_free)]
    votes = [v for v in score(items) if v.label is not None and v.probs]
    if not votes:
        raise ValueError("the model answered none of the content-free inputs")
    labels = list(votes[0].probs)
    out = {}
    for lab in labels:
        out[lab] = float(np.mean([math.log(max(v.probs.get(lab, 0.0), 1e-12)) for v in votes]))
    # centre them: only differences between labels matter after renormalising
    mean = float(np.mean(list(out.values())))
    return {k: round(v - mean, 6) for k, v in out.items()}


def apply_calibration(
    votes: Sequence[Vote], offsets: Mapping[str, float] | None = None, temperature: float = 1.0
) -> list[Vote]:
    """The same transform the cascade applies at run time (``calibrate_vote``)."""
    if not offsets and temperature == 1.0:
        return list(votes)
    return [calibrate_vote(v, dict(offsets or {}), temperature) for v in votes]


def _logprob_matrix(
    votes: Sequence[Vote], labels: Sequence[str], offsets: Mapping[str, float] | None
) -> np.ndarray:
    off = np.array([(offsets or {}).get(lab, 0.0) for lab in labels])
    m = np.array([[math.log(max(v.probs.get(lab, 0.0), 1e-12)) for lab in labels] for v in votes])
    return m - off if len(votes) else np.zeros((0, len(labels)))


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    logz = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(logz - z[np.arange(len(y)), y]))


def fit_temperature(
    votes: Sequence[Vote],
    reference: Sequence[str],
    labels: Sequence[str],
    offsets: Mapping[str, float] | None = None,
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """Temperature minimising log-loss against the reference (golden-section on log T).

    Abstentions and items whose reference is not a known label are ignored.
    """
    idx = {lab: j for j, lab in enumerate(labels)}
    keep = [(v, r) for v, r in zip(votes, reference, strict=True)
            if v.label is not None and v.probs and r in idx]
    if len(keep) < 2:
        return 1.0
    logits = _logprob_matrix([v for v, _ in keep], labels, offsets)
    y = np.array([idx[r] for _, r in keep])
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    c, d = hi - g * (hi - lo), lo + g * (hi - lo)
    fc, fd = _nll(logits, y, math.exp(c)), _nll(logits, y, math.exp(d))
    for _ in range(60):
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - g * (hi - lo)
            fc = _nll(logits, y, math.exp(c))
        else:
            lo, c, fc = c, d, fd
            d = lo + g * (hi - lo)
            fd = _nll(logits, y, math.exp(d))
        if hi - lo < 1e-4:
            break
    return round(math.exp(0.5 * (lo + hi)), 4)


@dataclass
class ModelCalibration:
    """What :func:`choose_model_calibration` keeps for one model, and the measurements behind it."""

    model: str
    offsets: dict[str, float] | None = None
    temperature: float = 1.0
    report: dict[str, Any] = field(default_factory=dict)

    def to_config(self) -> dict[str, Any]:
        """The ``[calibration."model"]`` table (empty when nothing is kept)."""
        out: dict[str, Any] = {}
        if self.temperature != 1.0:
            out["temperature"] = float(self.temperature)
        if self.offsets:
            out["offsets"] = {k: float(v) for k, v in self.offsets.items()}
        return out


def _cv_eval(
    votes: Sequence[Vote],
    reference: Sequence[str],
    labels: Sequence[str],
    offsets: Mapping[str, float] | None,
    folds: int,
    seed: int,
) -> dict[str, float]:
    """Held-out accuracy, log-loss at T=1 and log-loss with T fitted on the other folds."""
    idx = {lab: j for j, lab in enumerate(labels)}
    keep = [i for i, (v, r) in enumerate(zip(votes, reference, strict=True))
            if v.label is not None and v.probs and r in idx]
    if len(keep) < 2 * folds:
        folds = max(2, len(keep) // 2) if len(keep) >= 4 else 1
    logits = _logprob_matrix([votes[i] for i in keep], labels, offsets)
    y = np.array([idx[reference[i]] for i in keep])
    if len(keep) == 0:
        return {"n": 0, "accuracy": 0.0, "nll": float("inf"), "nll_ts": float("inf"),
                "temperature": 1.0}
    acc = float(np.mean(logits.argmax(axis=1) == y))
    nll1 = _nll(logits, y, 1.0)
    if folds < 2:
        return {"n": len(keep), "accuracy": acc, "nll": nll1, "nll_ts": nll1, "temperature": 1.0}
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(keep)) % folds
    held = []
    for f in range(folds):
        tr, te = fold_of != f, fold_of == f
        t = fit_temperature([votes[keep[i]] for i in np.flatnonzero(tr)],
                            [reference[keep[i]] for i in np.flatnonzero(tr)], labels, offsets)
        held.append(_nll(logits[te], y[te], t) * te.sum())
    t_all = fit_temperature([votes[i] for i in keep], [reference[i] for i in keep], labels,
                            offsets)
    return {"n": len(keep), "accuracy": acc, "nll": nll1,
            "nll_ts": float(sum(held) / len(keep)), "temperature": t_all}


def _flips(
    votes: Sequence[Vote], reference: Sequence[str], offsets: Mapping[str, float]
) -> tuple[int, int]:
    """Items the offsets turn right (gained) and turn wrong (lost) against the reference."""
    gained = lost = 0
    for v, r in zip(votes, reference, strict=True):
        if v.label is None or not v.probs:
            continue
        after = calibrate_vote(v, dict(offsets)).label
        if after == v.label:
            continue
        gained += after == r
        lost += v.label == r
    return gained, lost


def choose_model_calibration(
    model: str,
    votes: Sequence[Vote],
    reference: Sequence[str],
    labels: Sequence[str],
    offsets: Mapping[str, float] | None = None,
    *,
    use_offsets: bool | None = None,
    use_temperature: bool | None = None,
    folds: int = 5,
    seed: int = 0,
    significance: float = 0.1,
) -> ModelCalibration:
    """Keep contextual offsets and/or a temperature for one model only where they help.

    ``use_offsets`` / ``use_temperature``: True forces, False forbids, None (default) decides by
    measured effect: the offsets stay when they raise accuracy against the reference
    significantly (one-sided sign test on the items whose label they change, at
    ``significance``); the
    temperature stays when, fitted on the other folds, it lowers held-out log-loss.  Accuracy is
    in-sample for the offsets (they are fitted on content-free inputs, not on these labels).
    """
    raw = _cv_eval(votes, reference, labels, None, folds, seed)
    report: dict[str, Any] = {"raw": raw}
    keep_off = False
    if offsets:
        cc = _cv_eval(votes, reference, labels, offsets, folds, seed)
        report["contextual"] = cc
        gained, lost = _flips(votes, reference, offsets)
        p = binom_cdf(lost, gained + lost, 0.5) if gained > lost else 1.0
        cc["fixed"], cc["broke"], cc["sign_test_p"] = gained, lost, p
        # by default, a paired sign test on the items it changes: an accuracy gain on a small
        # fit set is often noise, and a wrong offset costs every later item
        keep_off = p <= significance if use_offsets is None else use_offsets
    elif use_offsets:
        raise ValueError(f"{model}: contextual calibration asked for, but no offsets measured")
    chosen = report["contextual"] if keep_off else raw
    better = chosen["nll_ts"] < chosen["nll"] - 1e-4
    keep_t = better if use_temperature is None else use_temperature
    temperature = float(chosen["temperature"]) if keep_t else 1.0
    report["kept"] = {"offsets": keep_off, "temperature": keep_t}
    return ModelCalibration(model, dict(offsets) if keep_off and offsets else None, temperature,
                            report)


# ----------------------------------------------------------------------------- reliability weights


def reliability_weights(
    votes_by_model: Mapping[str, Sequence[Vote]],
    reference: Sequence[str | None],
    n_labels: int,
    *,
    max_weight: float = 5.0,
) -> dict[str, float]:
    """Log-odds of each worker's agreement with the reference, against chance for K labels.

    ``w = log(acc * (K - 1) / (1 - acc))`` (one-coin Dawid-Skene), ``acc`` smoothed as
    ``(agree + 1) / (answered + K)``; clipped to ``[0, max_weight]``.  Abstentions do not count.
    """
    k = max(2, n_labels)
    out = {}
    for model, votes in votes_by_model.items():
        answered = [(v, r) for v, r in zip(votes, reference, strict=True)
                    if v.label is not None and r is not None]
        agree = sum(v.label == r for v, r in answered)
        acc = (agree + 1) / (len(answered) + k)
        w = math.log(acc * (k - 1) / (1 - acc))
        out[model] = round(min(max_weight, max(0.0, w)), 4)
    return out


# ----------------------------------------------------------------------------- the whole plan


@dataclass
class CalibrationData:
    """Per-item worker votes (raw, uncalibrated), the reference labels, and the task labels."""

    labels: list[str]
    workers: list[str]
    votes: list[list[Vote]]  # votes[i][w]: worker w on item i
    reference: list[str | None]
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.votes) != len(self.reference):
            raise ValueError(f"{len(self.votes)} vote rows but {len(self.reference)} references")
        if not self.ids:
            self.ids = [str(i) for i in range(len(self.votes))]

    def subset(self, idx: Sequence[int]) -> CalibrationData:
        return CalibrationData(self.labels, self.workers, [self.votes[i] for i in idx],
                               [self.reference[i] for i in idx], [self.ids[i] for i in idx])

    def with_reference(self) -> CalibrationData:
        """Only the items that have a reference label."""
        return self.subset([i for i, r in enumerate(self.reference) if r is not None])

    def worker_votes(self, w: int) -> list[Vote]:
        return [row[w] for row in self.votes]

    def __len__(self) -> int:
        return len(self.votes)


@dataclass
class CascadePlan:
    """A calibrated acceptance rule: what ``write_config`` writes, and the evidence for it."""

    policy: str
    result: CalibrationResult
    weights: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, ModelCalibration] = field(default_factory=dict)
    alternatives: dict[str, CalibrationResult] = field(default_factory=dict)
    n_fit: int = 0
    n_test: int = 0

    @property
    def threshold(self) -> float | None:
        return self.result.threshold

    def calibration_table(self) -> dict[str, dict[str, Any]]:
        return {m: c.to_config() for m, c in self.calibration.items() if c.to_config()}

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "threshold": self.threshold,
            "result": self.result.to_json(),
            "weights": self.weights,
            "calibration": {m: {"offsets": c.offsets, "temperature": c.temperature,
                                "report": c.report} for m, c in self.calibration.items()},
            "alternatives": {k: v.to_json() for k, v in self.alternatives.items()},
            "n_fit": self.n_fit,
            "n_test": self.n_test,
        }


def calibrated_votes(data: CalibrationData, calibration: Mapping[str, ModelCalibration]
                     ) -> list[list[Vote]]:
    """The votes as the cascade will see them after per-model calibration."""
    cols = []
    for w, name in enumerate(data.workers):
        c = calibration.get(name)
        vs = data.worker_votes(w)
        cols.append(apply_calibration(vs, c.offsets, c.temperature) if c else vs)
    return [list(row) for row in zip(*cols, strict=True)] if cols else [[] for _ in data.votes]


def evaluate_rule(
    data: CalibrationData,
    policy: str,
    threshold: float | None,
    *,
    weights: Mapping[str, float] | None = None,
    calibration: Mapping[str, ModelCalibration] | None = None,
) -> dict[str, float]:
    """Coverage and agreement of a rule on (other) labelled data: what the guarantee is about."""
    data = data.with_reference()
    scores, agree = rule_scores(data, policy, weights, calibration)
    acc = scores >= threshold if threshold is not None else np.zeros(len(scores), dtype=bool)
    n = int(acc.sum())
    return {
        "n": len(scores),
        "decided": n,
        "coverage": n / len(scores) if len(scores) else 0.0,
        "agreement": float(agree[acc].mean()) if n else float("nan"),
    }


def fit_rule(
    fit_part: CalibrationData,
    policy: str,
    *,
    offsets: Mapping[str, Mapping[str, float]] | None = None,
    model_calibration: str = "none",
    seed: int = 0,
) -> tuple[dict[str, ModelCalibration], dict[str, float]]:
    """Per-model calibration and (for ``weighted``/``auto``) reliability weights, fitted on
    ``fit_part``; see :func:`plan_cascade` for the options."""
    if model_calibration not in ("none", "auto", "contextual", "temperature", "both"):
        raise ValueError(f"unknown model calibration {model_calibration!r}")
    calibration: dict[str, ModelCalibration] = {}
    if model_calibration != "none":
        force_off, force_t = {
            "auto": (None, None),
            "contextual": (True, False),
            "temperature": (False, True),
            "both": (True, True),
        }[model_calibration]
        for w, name in enumerate(fit_part.workers):
            off = (offsets or {}).get(name)
            if force_off and not off:
                raise ValueError(f"{name}: contextual calibration asked for, but no offsets "
                                 "were measured for it")
            calibration[name] = choose_model_calibration(
                name, fit_part.worker_votes(w),
                [r or "" for r in fit_part.reference], fit_part.labels, off,
                use_offsets=force_off, use_temperature=force_t, seed=seed,
            )
    weights: dict[str, float] = {}
    if policy in ("weighted", "auto"):
        cal_votes = calibrated_votes(fit_part, calibration)
        weights = reliability_weights(
            {name: [row[w] for row in cal_votes] for w, name in enumerate(fit_part.workers)},
            fit_part.reference, len(fit_part.labels),
        )
    return calibration, weights


def rule_scores(
    data: CalibrationData,
    policy: str,
    weights: Mapping[str, float] | None = None,
    calibration: Mapping[str, ModelCalibration] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's support under the rule (``-inf``: never accepted) and whether the workers'
    label agrees with the reference, after per-model calibration."""
    votes = calibrated_votes(data, calibration or {})
    scores, labels = policy_scores(make_calibrated_policy(policy, 0.0, weights), votes,
                                   len(data.workers))
    return scores, agreement_flags(labels, data.reference)


def plan_cascade(
    data: CalibrationData,
    target: float,
    delta: float,
    *,
    policy: str = "confident-majority",
    offsets: Mapping[str, Mapping[str, float]] | None = None,
    model_calibration: str = "none",
    fit_fraction: float | None = None,
    method: str = "fixed-sequence",
    grid: Sequence[float] | None = None,
    seed: int = 0,
) -> CascadePlan:
    """Fit per-model calibration and weights, then certify a threshold.

    ``policy``: ``confident-majority``, ``weighted`` or ``auto`` (both, each certified at
    ``delta / 2`` so that picking the better one keeps the guarantee; the one with the larger
    coverage wins).  ``model_calibration``: ``none``, ``auto`` (per model, by measured effect),
    ``contextual``, ``temperature`` or ``both`` (forced for every model).  ``offsets``: measured
    contextual offsets per model (see :func:`contextual_offsets`).  ``fit_fraction``: share of
    the items used for fitting (default 0.3 when anything is fitted, else 0); the threshold is
    certified on the others.
    """
    if model_calibration not in ("none", "auto", "contextual", "temperature", "both"):
        raise ValueError(f"unknown model calibration {model_calibration!r}")
    if policy not in (*CALIBRATED_POLICIES, "auto"):
        raise ValueError(f"unknown policy {policy!r}; choose confident-majority, weighted or auto")
    data = data.with_reference()
    if len(data) == 0:
        raise ValueError("no calibration item has a reference label")
    fits = model_calibration != "none" or policy in ("weighted", "auto")
    if fit_fraction is None:
        fit_fraction = 0.3 if fits else 0.0
    if not 0.0 <= fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must be in [0, 1), got {fit_fraction}")
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    n_fit = round(fit_fraction * len(data))
    fit_part = data.subset(sorted(order[:n_fit])) if n_fit else data
    test_part = data.subset(sorted(order[n_fit:])) if n_fit else data

    calibration, weights = fit_rule(
        fit_part, policy, offsets=offsets, model_calibration=model_calibration, seed=seed
    )

    candidates = list(CALIBRATED_POLICIES) if policy == "auto" else [policy]
    level = delta / len(candidates)
    results: dict[str, CalibrationResult] = {}
    for name in candidates:
        scores, agree = rule_scores(test_part, name, weights, calibration)
        res = calibrate_threshold(scores, agree, target, level, grid=grid, method=method)
        res.delta = delta  # report the overall level; each candidate ran at delta / len
        results[name] = res
    best = max(candidates, key=lambda n: (results[n].feasible, results[n].coverage,
                                          results[n].best_bound))
    return CascadePlan(
        policy=best,
        result=results[best],
        weights=weights if best == "weighted" else {},
        calibration=calibration,
        alternatives={n: r for n, r in results.items() if n != best},
        n_fit=n_fit,
        n_test=len(test_part),
    )


# ----------------------------------------------------------------------------- cascade.toml


def write_config(
    path: str | Path,
    *,
    task: str,
    workers: Sequence[str],
    judge: str | None,
    policy: str,
    threshold: float | None,
    weights: Mapping[str, float] | None = None,
    calibration: Mapping[str, Mapping[str, Any]] | None = None,
    early_exit: bool = False,
    comment: str = "",
) -> Path:
    """Write a ``cascade.toml`` that ``speculabel classify --config`` reads.

    Keys: ``task``, ``workers``, ``judge``, ``policy``, ``threshold``, ``early_exit``, and the
    optional ``[weights]`` and ``[calibration."model"]`` tables.  ``comment`` lines go on top.
    """
    import tomli_w

    from speculabel.config import CascadeConfig, dump_config

    cfg = CascadeConfig(
        task=task,
        workers=list(workers),
        judge=judge,
        policy=policy,
        threshold=None if threshold is None else float(threshold),
        early_exit=early_exit,
        weights={k: float(v) for k, v in (weights or {}).items()},
        calibration={k: dict(v) for k, v in (calibration or {}).items() if v},
    )
    cfg.validate(str(path))
    body = tomli_w.dumps(dump_config(cfg))
    head = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(head + body, encoding="utf-8")
    return p


# ----------------------------------------------------------------------------- gathering votes


def collect_votes(
    task: Any,
    items: Sequence[Item],
    specs: Sequence[str],
    store: Any,
    *,
    batch_size: int = 16,
    progress: Callable[[str, int, int], None] | None = None,
    backend_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, list[Vote]]:
    """Every model's raw vote on every item, from the vote store where present, else computed.

    ``store`` is a :class:`speculabel.votestore.VoteStore` (or ``None`` to compute everything);
    computed votes are written to it batch by batch, so an interrupted run loses at most one
    batch.  Models are loaded one at a time, and not at all when the store has all their votes.
    """
    from speculabel.backends.registry import load_backend
    from speculabel.cascade import CachedBackend
    from speculabel.votestore import item_key

    out: dict[str, list[Vote]] = {}
    keys = [item_key(task, it) for it in items]
    for spec in specs:
        backend = load_backend(spec, **dict((backend_options or {}).get(spec, {})))
        try:
            scorer: Any = backend
            if store is not None and getattr(backend, "cacheable", True):
                scorer = CachedBackend(backend, store)
                hits = store.get_many(scorer.fingerprint(), task.fingerprint(), keys)
                if len(hits) == len(set(keys)):
                    out[spec] = [Vote(**{**hits[k].__dict__, "model": spec}) for k in keys]
                    if progress:
                        progress(spec, len(items), len(items))
                    continue
            votes: list[Vote] = []
            for i in range(0, len(items), batch_size):
                votes.extend(scorer.score(task, items[i : i + batch_size]))
                if progress:
                    progress(spec, len(votes), len(items))
            out[spec] = votes
        finally:
            backend.close()
    return out


def stored_votes(
    task: Any, items: Sequence[Item], specs: Sequence[str], store: Any
) -> dict[str, list[Vote | None]]:
    """Each model's stored vote per item (``None`` where the store has none); computes nothing.

    Each model is loaded only to read its fingerprint.
    """
    from speculabel.backends.registry import load_backend
    from speculabel.votestore import item_key

    keys = [item_key(task, it) for it in items]
    out: dict[str, list[Vote | None]] = {}
    for spec in specs:
        backend = load_backend(spec)
        try:
            fp = backend.fingerprint()
        finally:
            backend.close()
        hits = store.get_many(fp, task.fingerprint(), keys)
        out[spec] = [
            Vote(**{**hits[k].__dict__, "model": spec}) if k in hits else None for k in keys
        ]
    return out
