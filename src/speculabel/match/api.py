"""``speculabel.match(...)``: the similar tickets of a queue, from Python.

Takes a list of texts, a pandas Series (its index gives the ids) or a DataFrame (``text=`` the
column, ``id=`` a column of ids or the index), optionally past tickets to match against, and
returns the same records ``speculabel match`` writes: one per ticket, in input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from speculabel.errors import SpeculabelError
from speculabel.io.tables import RowError
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
    cascade: Any = None,
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
    tickets without a match first); the rest of what the workers leave is not asked.  ``output``:
    also write the results there (resumable, like the CLI).  ``result.records``: one dict per
    ticket ``{"id", "matches": [{"id", "p", "decided_by", "cosine"}], "group"}``;
    ``result.stats`` and ``result.statement`` say what was done and what is guaranteed.
    """
    from speculabel.match.output import MatchOutput
    from speculabel.match.run import run_match
    from speculabel.match.statement import statement

    settings = MatchSettings(k=k, floor=floor, judge_budget=judge_budget)
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
        from speculabel.cascade.build import build_cascade

        cascade = build_cascade(cfg)
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
    cert = cfg.certificate if cfg is not None else getattr(cascade, "certificate", None)
    result.statement = statement(result.stats, settings, cert)
    return result


def _config(config: str | Path | None, workers: Sequence[str] | None, judge: str | None) -> Any:
    from speculabel.cascade.config import make_config, read_config_data

    data = read_config_data(Path(config)) if config else {}
    data.setdefault("task", "similar-ticket")
    if workers is not None:
        data["workers"] = list(workers)
    if judge is not None:
        data["judge"] = judge
    return make_config(data, str(config) if config else "settings")
