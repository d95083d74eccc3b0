"""``speculabel.match(...)``: the similar tickets of a queue, from Python.

Takes a list of texts, a pandas Series (its index gives the ids) or a DataFrame (``text=`` the
column, ``id=`` a column of ids or the index), optionally past tickets to match against, and
returns the same records ``speculabel match`` writes: one per ticket, in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from speculabel.errors import SpeculabelError
from speculabel.io.tables import RowError
from speculabel.match.grouping import DEFAULT_GROUPING
from speculabel.match.run import DEFAULT_FLOOR, DEFAULT_K, MatchResult, MatchSettings, Progress
from speculabel.records import Item


def tickets(data: Any, text: str = "text", id: str | None = None) -> list[Item | RowError]:
    """The input as items with one ``text`` field; a missing or empty text is a
    :class:`RowError` at its place (its record says why); duplicate ids are refused."""
    if hasattr(data, "columns"):  # a DataFrame
        if text not in data.columns or (id is not None and id not in data.columns):
            missing = [c for c in (text, id) if c is not None and c not in data.columns]
            raise SpeculabelError(f"no column {', '.join(map(repr, missing))} in the frame; it "
                                  f"has {', '.join(map(repr, map(str, data.columns)))}")
        ids = [str(x) for x in (data[id].tolist() if id else data.index.tolist())]
        values = data[text].tolist()
    elif hasattr(data, "index") and hasattr(data, "tolist"):  # a Series
        ids, values = [str(x) for x in data.index.tolist()], data.tolist()
    else:
        values = list(data) if isinstance(data, Iterable) else [data]
        ids = [it.id if isinstance(it, Item) else str(i) for i, it in enumerate(values)]
    out: list[Item | RowError] = []
    seen: dict[str, int] = {}
    for pos, (tid, v) in enumerate(zip(ids, values, strict=True)):
        if tid in seen:
            raise SpeculabelError(f"ticket {pos}: duplicate id {tid!r} (first at {seen[tid]})")
        seen[tid] = pos
        value = v.fields.get("text", next(iter(v.fields.values()), None)) \
            if isinstance(v, Item) else v
        if not isinstance(value, str) or not value.strip():
            out.append(RowError(pos + 1, f"ticket {tid!r}: no text ({value!r})", tid))
        else:
            out.append(Item(tid, {"text": value}, row=pos + 1))
    return out


def match(
    data: Any,
    *,
    text: str = "text",
    id: str | None = None,
    against: Any = None,
    k: int = DEFAULT_K,
    floor: float = DEFAULT_FLOOR,
    judge_budget: float | None = None,
    grouping: str = DEFAULT_GROUPING,
    cascade: Any = None,
    certificate: Any = None,
    config: str | Path | None = None,
    workers: Sequence[str] | None = None,
    judge: str | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
) -> MatchResult:
    """The similar tickets of ``data`` (and their matches in ``against``, past tickets).

    The pairs are decided by ``cascade`` (a :class:`speculabel.Cascade` for the similar-ticket
    task, e.g. ``certify_matches(...).cascade(judge)``), else one built from ``config`` (a
    cascade.toml) or from ``workers`` / ``judge`` (the similar-ticket defaults).
    ``judge_budget``: the judge decides at most this share of the candidate pairs (those of
    tickets without a match first); the rest of what the workers leave is not asked.
    ``grouping``: how matches become groups, ``"cohesive"`` (two groups merge only when their
    matches are a large enough share of the smaller one's, pairs decided not similar counting
    against: a lone wrong match does not chain two groups) or ``"components"`` (every chain of
    matches is one group).
    ``certificate``: what ``cascade`` is certified for (a :class:`MatchCertificate`, or its
    ``to_json()``), stated in ``result.statement``; a config's own is read from it.  ``output``:
    also write the results there (resumable, like the CLI).  ``result.records``: one dict per
    ticket ``{"id", "matches": [{"id", "p", "decided_by", "cosine"}], "group"}``;
    ``result.stats`` and ``result.statement`` say what was done and what is guaranteed.
    """
    from speculabel.match.output import MatchOutput
    from speculabel.match.run import run_match
    from speculabel.match.statement import statement

    settings = MatchSettings(k=k, floor=floor, judge_budget=judge_budget, grouping=grouping)
    try:
        settings.check()
    except ValueError as e:
        raise SpeculabelError(str(e)) from None
    queue = tickets(data, text, id)
    past_entries = tickets(against, text, id) if against is not None else []
    past = [e for e in past_entries if isinstance(e, Item)]
    built = cascade is None
    cfg = None
    if built:
        cfg = _config(config, workers, judge)
        if judge_budget is None and cfg.certificate.get("judge_budget") is not None:
            settings = MatchSettings(k=k, floor=floor, grouping=grouping,
                                     judge_budget=float(cfg.certificate["judge_budget"]))
        cascade = build_match_cascade(cfg, certified_rule(cfg, None))
    out = None
    try:
        if output is not None:
            from speculabel.match.output import MatchRunInfo
            from speculabel.match.run import cascade_settings, content_key

            run = MatchRunInfo({**settings.to_json(), **cascade_settings(cascade)},
                               {"tickets": content_key(queue), "past": content_key(past)})
            out = MatchOutput(output, run)
        result = run_match(queue, cascade, past=past, settings=settings, output=out,
                           progress=progress)
    finally:
        if out is not None:
            out.close()
        if built:
            cascade.close()
    cert = cfg.certificate if cfg is not None else (
        certificate.to_json() if hasattr(certificate, "to_json") else certificate)
    result.statement = statement(result.stats, settings, cert)
    return result


def certified_rule(cfg: Any, reject: float | None) -> Any:
    """The pair rule of a config: a match threshold with its own reject level
    (:class:`~speculabel.match.policy.MatchRule`) when ``reject`` is given or the config carries
    a match-precision certificate with one; else None (the config's rule as it is)."""
    from speculabel.match.certify import SCOPE
    from speculabel.match.policy import MatchRule

    cert = cfg.certificate
    level = reject if reject is not None else (
        cert.get("reject") if cert.get("scope") == SCOPE else None)
    if level is None:
        return None
    if cfg.policy != "confident-majority" or cfg.threshold is None:
        from speculabel.cascade.config import ConfigError

        raise ConfigError("--reject needs --policy confident-majority and a --threshold (the "
                          "confidence at which the workers report a match)")
    return MatchRule(cfg.threshold, float(level))


def build_match_cascade(cfg: Any, rule: Any = None,
                        progress: Callable[[str], None] | None = None) -> Any:
    """The cascade a config names, ``rule`` replacing its acceptance rule when given."""
    from speculabel.cascade.build import build_cascade, check_setup, load_backends
    from speculabel.cascade.run import Cascade
    from speculabel.tasks import load_task

    if rule is None:
        return build_cascade(cfg, progress=progress)
    task = load_task(cfg.task)
    check_setup(cfg, task)
    loaded = load_backends([*cfg.workers, *([cfg.judge] if cfg.judge else [])], task,
                           cfg.models, progress)
    n = len(cfg.workers)
    return Cascade(task, loaded[:n], loaded[n] if cfg.judge else None, rule,
                   parallel_workers=cfg.parallel_workers, batch_size=cfg.batch_size,
                   calibration={k: v.model_dump() for k, v in cfg.calibration.items()})


def _config(config: str | Path | None, workers: Sequence[str] | None, judge: str | None) -> Any:
    from speculabel.cascade.config import make_config, read_config_data

    data = read_config_data(Path(config)) if config else {}
    data.setdefault("task", "similar-ticket")
    if workers is not None:
        data["workers"] = list(workers)
    if judge is not None:
        data["judge"] = judge
    return make_config(data, str(config) if config else "settings")
