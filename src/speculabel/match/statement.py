"""The statement of a match run: what was asked, who decided, and what is guaranteed.

Only what holds is said: the counts are facts of this run; a guarantee is quoted only when the
cascade carries one (``[certificate]`` of its config), with exactly what it covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from speculabel.match.run import MatchSettings, MatchStats


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def statement(stats: MatchStats, settings: MatchSettings,
              certificate: Mapping[str, Any] | None = None) -> list[str]:
    """The run's statement, one sentence per line."""
    s = stats
    decided = s.decided_by_workers + s.judge_calls
    lines = [
        f"{s.tickets} tickets" + (f" against {s.past} past tickets" if s.past else "")
        + f": {s.candidate_pairs} candidate pairs (each ticket's {settings.k} nearest "
        f"neighbours with cosine >= {settings.floor:g}), out of "
        f"{s.tickets * (s.tickets - 1) // 2 + s.tickets * s.past} possible pairs.",
        f"The workers decided {s.decided_by_workers} pairs, the judge {s.judge_calls} "
        f"({_pct(s.judge_calls, s.candidate_pairs)} of the candidate pairs)"
        + (f"; {s.resumed_pairs} were decided by an earlier run" if s.resumed_pairs else "")
        + (f"; {s.pending} are pending (judge unavailable: rerun to decide them)"
           if s.pending else "")
        + (f"; {s.over_budget} were left unasked (judge budget: at most "
           f"{100 * (settings.judge_budget or 0):g}% of the candidate pairs)"
           if s.over_budget else "")
        + (f"; {s.errors} failed" if s.errors else "") + ".",
        f"{s.matches} matches reported ({s.matches_by_workers} by the workers, "
        f"{s.matches_by_judge} by the judge); {s.tickets_with_match} tickets "
        f"({_pct(s.tickets_with_match, s.tickets)}) have at least one; {s.groups} groups.",
    ]
    if decided == 0:
        return lines
    lines.extend(guarantee(stats, certificate))
    return lines


def guarantee(stats: MatchStats, certificate: Mapping[str, Any] | None) -> list[str]:
    """What the cascade's certificate says about these matches, and what it does not cover."""
    s = stats
    judged = (f"The judge's {s.matches_by_judge} matches agree with the judge by construction; "
              "their agreement with the truth is the judge's accuracy, which nothing here "
              "certifies.")
    if not certificate or not certificate.get("promise"):
        return [f"No guarantee on the matches: the cascade is not calibrated (run "
                f"speculabel.match.certify_matches on labelled candidate pairs, or calibrate, "
                f"and pass the config). {judged}"]
    promise = str(certificate["promise"])
    if certificate.get("scope") == "adaptive":
        if not certificate.get("certified"):
            return [f"Adaptive run: {promise}. {judged}"]
        return [f"Certified (adaptive run): {promise}. The items are this run's "
                f"{s.candidate_pairs} candidate pairs, matches and non-matches together; it "
                f"does not bound the precision of the {s.matches_by_workers} matches the workers "
                f"reported alone (certify_matches does). {judged}"]
    if certificate.get("scope") == "match-precision":
        ref = certificate.get("reference", "the reference")
        out = [f"Certified: {promise}. It covers the {s.matches_by_workers} matches the "
               f"workers reported, if this queue's candidate pairs are drawn like the "
               f"calibration pairs."]
        if ref == "judge" and s.matches:
            out.append(f"With the judge's {s.matches_by_judge} matches agreeing with it, all "
                       f"{s.matches} reported matches then agree with the judge at the same "
                       "certified rate or better.")
        else:
            out.append(judged)
        return out
    scope = certificate.get("scope", "?")
    return [f"The cascade's certificate (scope {scope}): {promise}. It concerns the pairs the "
            f"workers decide (here {s.decided_by_workers}), matches and non-matches together, "
            "for pairs drawn like its calibration items; it does not bound the precision of the "
            f"{s.matches_by_workers} matches they reported (certify_matches does). {judged}"]
