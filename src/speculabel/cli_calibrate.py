"""``speculabel calibrate``: certify a threshold on labelled items and write a cascade.toml.

The votes come from a vote store (``speculabel bench --out DIR`` leaves ``DIR/votes.sqlite``;
``classify`` keeps ``$SPECULABEL_HOME/votes.sqlite``); any vote missing there is computed and
stored.  The reference is the judge's label (default) or a gold column.  See
:mod:`speculabel.calibrate` for the method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from speculabel.cli_options import IdOpt, TextAOpt, TextBOpt, TextOpt

DATASET_SPECS = ("tweeteval:val", "tweeteval:test", "banking77-pairs")
EXIT_INFEASIBLE = 1


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _store_path(votes: Path | None) -> Path:
    if votes is None:
        from speculabel.models import home_dir

        return home_dir() / "votes.sqlite"
    return votes / "votes.sqlite" if votes.is_dir() else votes


def load_calibration_items(
    source: str,
    task: Any,
    *,
    gold_column: str | None = None,
    columns: dict[str, str] | None = None,
    id_column: str | None = None,
    limit: int | None = None,
) -> tuple[list[Any], list[str | None] | None]:
    """Items, and gold labels when asked for: from a table, or a data set spec.

    Data set specs: ``tweeteval:val[:N]``, ``tweeteval:test[:N]``, ``banking77-pairs[:N]``
    (their gold labels are used with ``--gold-column gold``).
    """
    from speculabel.records import Item

    head = source.partition(":")[0]
    gold: list[str | None] | None = None
    if head == "tweeteval" or source.startswith("banking77-pairs"):
        from speculabel import datasets

        parts = source.split(":")
        if head == "tweeteval":
            split = parts[1] if len(parts) > 1 else "val"
            n = int(parts[2]) if len(parts) > 2 else limit
            data = datasets.tweeteval(split, n)
        else:
            n = int(parts[1]) if len(parts) > 1 else (limit or 500)
            data = datasets.banking77_pairs(n)
        chosen = data.items[:limit] if limit else data.items
        if gold_column:
            gold = list(data.gold[: len(chosen)])
        return list(chosen), gold

    from speculabel.store import RowError, read_items

    rows = [r for r in read_items(source, task, columns=columns, id_column=id_column)]
    items: list[Item] = [r for r in rows if isinstance(r, Item)]
    bad = [r for r in rows if isinstance(r, RowError)]
    if bad:
        typer.echo(f"skipping {len(bad)} unreadable row(s), e.g. {bad[0].error}", err=True)
    if gold_column:
        gold = _read_column(Path(source), gold_column, [it.id for it in items], id_column)
    if limit is not None:
        items = items[:limit]
        gold = gold[:limit] if gold is not None else None
    return items, gold


def _read_column(
    path: Path, column: str, ids: list[str], id_column: str | None
) -> list[str | None]:
    """One column's values, aligned with the items' ids (row numbers when no id column)."""
    from speculabel.store import InputError, _rows

    names, rows = _rows(path)
    if column not in names:
        raise InputError(f"{path}: no column {column!r}; the file has: {', '.join(names)}")
    by_id: dict[str, str | None] = {}
    for rowno, row in enumerate(rows, 1):
        key = str(row.get(id_column, "")).strip() if id_column else str(rowno)
        value = row.get(column)
        text = None if value is None or str(value).strip() == "" else str(value).strip()
        by_id.setdefault(key, text)
    return [by_id.get(i) for i in ids]


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` command to the main CLI."""
    app.command("calibrate")(calibrate)


def calibrate(
    input: Annotated[
        str,
        typer.Argument(
            help="Calibration items: a table (.csv/.tsv/.jsonl/.parquet) or a data set "
            f"({', '.join(DATASET_SPECS)}, with :N to take the first N)."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The cascade.toml to write.")
    ] = Path("cascade.toml"),
    task: Annotated[str, typer.Option(help="Built-in task or task TOML file.")] = "sentiment",
    workers: Annotated[
        str | None,
        typer.Option(help="Comma-separated worker specs [default: the classify defaults]."),
    ] = None,
    judge: Annotated[
        str | None, typer.Option(help="Judge spec (the reference unless --gold-column).")
    ] = None,
    gold_column: Annotated[
        str | None,
        typer.Option(help="Use this column's gold labels as the reference instead of the judge's."),
    ] = None,
    target: Annotated[
        float, typer.Option(help="Required agreement with the reference on worker-decided items.")
    ] = 0.95,
    delta: Annotated[
        float, typer.Option(help="Allowed probability that the guarantee fails (over the draw).")
    ] = 0.1,
    policy: Annotated[
        str, typer.Option(help="confident-majority, weighted, or auto (both, at delta/2 each).")
    ] = "confident-majority",
    model_calibration: Annotated[
        str,
        typer.Option(help="Per-model calibration: none, auto (kept where it helps), contextual, "
                     "temperature, both."),
    ] = "none",
    fit_fraction: Annotated[
        float | None,
        typer.Option(help="Share of items for fitting weights/temperatures (default 0.3 when "
                     "anything is fitted, else 0); the threshold is certified on the rest."),
    ] = None,
    method: Annotated[
        str, typer.Option(help="fixed-sequence (default) or bonferroni.")
    ] = "fixed-sequence",
    votes: Annotated[
        Path | None,
        typer.Option(help="Vote store: a votes.sqlite file, or a bench --out directory "
                     "[default: $SPECULABEL_HOME/votes.sqlite]."),
    ] = None,
    text_column: TextOpt = None,
    text_a_column: TextAOpt = None,
    text_b_column: TextBOpt = None,
    id_column: IdOpt = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N items.")] = None,
    early_exit: Annotated[bool, typer.Option(help="Write early_exit = true.")] = False,
    report: Annotated[
        Path | None, typer.Option(help="Also write the full evidence as JSON here.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fit/certify split.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Choose the threshold with the fewest judge calls that keeps agreement >= TARGET
    with probability >= 1 - DELTA, and write it to a cascade.toml that classify reads.

    Exit status: 0 written; 1 no threshold meets the target (nothing written); 2 bad input.
    """
    from speculabel import calibrate as cal
    from speculabel.backends.base import BackendError
    from speculabel.config import DEFAULT_JUDGE, DEFAULT_WORKERS
    from speculabel.store import InputError
    from speculabel.task import TaskError, load_task

    listed = (workers or ",".join(DEFAULT_WORKERS)).split(",")
    worker_specs = [w.strip() for w in listed if w.strip()]
    judge_spec = judge or DEFAULT_JUDGE
    if not 1 <= len(worker_specs) <= 3:
        raise _fail(f"one to three workers, got {len(worker_specs)}")
    if not 0 < target < 1 or not 0 < delta < 1:
        raise _fail("--target and --delta must be between 0 and 1")
    if method not in cal.METHODS:
        raise _fail(f"--method must be one of {', '.join(cal.METHODS)}")
    try:
        the_task = load_task(task)
    except TaskError as e:
        raise _fail(str(e)) from None
    columns = {}
    if text_column:
        columns[the_task.fields[0]] = text_column
    if text_a_column:
        columns["text_a"] = text_a_column
    if text_b_column:
        columns["text_b"] = text_b_column
    try:
        items, gold = load_calibration_items(
            input, the_task, gold_column=gold_column, columns=columns, id_column=id_column,
            limit=limit,
        )
    except (InputError, FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    if not items:
        raise _fail(f"no items in {input}")

    def say(msg: str) -> None:
        if not quiet:
            typer.echo(msg, err=True)

    from speculabel.votestore import VoteStore

    store_path = _store_path(votes)
    say(f"{len(items)} calibration items; votes from {store_path}")
    last: dict[str, int] = {}

    def progress(spec: str, done: int, total: int) -> None:
        step = max(1, total // 10)
        if not quiet and (done == total or done // step != last.get(spec, -1) // step):
            typer.echo(f"  {spec}: {done}/{total}", err=True)
        last[spec] = done

    specs = list(worker_specs) + ([] if gold is not None else [judge_spec])
    offsets: dict[str, dict[str, float]] = {}
    try:
        with VoteStore(store_path) as store:
            got = cal.collect_votes(the_task, items, specs, store, progress=progress)
        if model_calibration in ("auto", "contextual", "both"):
            offsets = _measure_offsets(worker_specs, the_task, say)
    except (BackendError, RuntimeError, ValueError) as e:
        raise _fail(str(e)) from None

    if gold is not None:
        reference: list[str | None] = [g if g in the_task.label_names else None for g in gold]
        ref_name = f"gold column {gold_column!r}"
    else:
        reference = [v.label for v in got[judge_spec]]
        ref_name = f"judge {judge_spec}"
    data = cal.CalibrationData(
        labels=the_task.label_names,
        workers=list(worker_specs),
        votes=[list(row) for row in zip(*(got[w] for w in worker_specs), strict=True)],
        reference=reference,
        ids=[it.id for it in items],
    )
    n_ref = sum(r is not None for r in reference)
    if n_ref == 0:
        raise _fail(f"no item has a reference label from the {ref_name}")
    try:
        plan = cal.plan_cascade(
            data, target, delta, policy=policy, offsets=offsets,
            model_calibration=model_calibration, fit_fraction=fit_fraction, method=method,
            seed=seed,
        )
    except ValueError as e:
        raise _fail(str(e)) from None

    _print_plan(plan, ref_name, n_ref)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        evidence = {
            "input": input, "task": the_task.name, "workers": worker_specs, "judge": judge_spec,
            "reference": ref_name, "target": target, "delta": delta, "method": method,
            "offsets": offsets, "plan": plan.to_json(),
        }
        report.write_text(json.dumps(evidence, indent=2, default=str), encoding="utf-8")
        say(f"evidence: {report}")
    res = plan.result
    if not res.feasible:
        test_part = data.with_reference()
        scores, labels = cal.policy_scores(
            cal.make_calibrated_policy(plan.policy, 0.0, plan.weights),
            cal.calibrated_votes(test_part, plan.calibration), len(worker_specs),
        )
        best = cal.max_feasible_target(scores, cal.agreement_flags(labels, test_part.reference),
                                       delta, method=method)
        hint = (f"; the highest target these workers can be certified for at delta {delta:g} "
                f"is about {best:.3f}" if best is not None else "")
        typer.secho(f"{res.message()}{hint}. Nothing written.", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_INFEASIBLE)

    comment = (
        f"written by: speculabel calibrate {input} --task {task} --workers "
        f"{','.join(worker_specs)} --judge {judge_spec} --target {target:g} --delta {delta:g} "
        f"--policy {policy} --model-calibration {model_calibration} --method {method}\n"
        f"reference: {ref_name}; {n_ref} items ({plan.n_fit} fit, {plan.n_test} certify)\n"
        f"guarantee: agreement >= {target:g} on worker-decided items with probability "
        f">= {1 - delta:g} ({method} exact binomial test)\n"
        f"expected coverage {res.coverage:.3f} (judge-call rate {res.judge_call_rate:.3f}), "
        f"calibration agreement {res.agreement:.3f}, lower bound {res.bound:.3f}"
    )
    cal.write_config(
        output, task=task, workers=worker_specs, judge=judge_spec, policy=plan.policy,
        threshold=res.threshold, weights=plan.weights, calibration=plan.calibration_table(),
        early_exit=early_exit, comment=comment,
    )
    typer.echo(f"wrote {output}: use it with  speculabel classify INPUT -o OUT --config {output}")


def _measure_offsets(specs: list[str], task: Any, say: Any) -> dict[str, dict[str, float]]:
    """Contextual-calibration offsets of the LLM workers (three content-free inputs each)."""
    from speculabel import calibrate as cal
    from speculabel.backends.registry import kind_of, load_backend

    out: dict[str, dict[str, float]] = {}
    for spec in specs:
        if kind_of(spec) not in ("llamacpp", "openai"):
            continue  # lexicons and learners have no prompt bias to measure
        backend = load_backend(spec)

        def score(its: Any, b: Any = backend) -> Any:
            return b.score(task, its)

        try:
            out[spec] = cal.contextual_offsets(score, task.fields)
        except ValueError as e:
            say(f"  {spec}: no contextual offsets ({e})")
        finally:
            backend.close()
    return out


def _print_plan(plan: Any, ref_name: str, n_ref: int) -> None:
    from rich.console import Console
    from rich.table import Table

    res = plan.result
    t = Table(title=f"calibration against the {ref_name} ({n_ref} items)", show_header=False)
    t.add_row("policy", plan.policy)
    t.add_row("method", f"{res.method}, target {res.target:g}, delta {res.delta:g}")
    t.add_row("items fit / certify", f"{plan.n_fit} / {plan.n_test}")
    if res.feasible:
        t.add_row("threshold", f"{res.threshold:g}")
        t.add_row("expected coverage", f"{100 * res.coverage:.1f}% decided by the workers")
        t.add_row("judge-call rate", f"{100 * res.judge_call_rate:.1f}%")
        t.add_row("agreement (calibration)", f"{100 * res.agreement:.1f}%")
        t.add_row(f"lower bound ({100 * (1 - res.delta):g}%)", f"{100 * res.bound:.1f}%")
    else:
        t.add_row("threshold", "none qualifies")
        t.add_row("best single-threshold bound", f"{100 * res.best_bound:.1f}%")
        if res.shortfall > 0:
            t.add_row("short by", f"{100 * res.shortfall:.1f} points")
        elif res.stopped_at is not None:
            t.add_row("test sequence stopped at", f"threshold {res.stopped_at:g}")
    for name, alt in plan.alternatives.items():
        desc = (f"threshold {alt.threshold:g}, coverage {100 * alt.coverage:.1f}%"
                if alt.feasible else "infeasible")
        t.add_row(f"(also tried {name})", desc)
    for w, v in plan.weights.items():
        t.add_row(f"weight {w}", f"{v:g}")
    for m, c in plan.calibration.items():
        kept = c.report.get("kept", {})
        what = []
        if kept.get("offsets"):
            what.append("contextual offsets")
        if kept.get("temperature"):
            what.append(f"temperature {c.temperature:g}")
        raw = c.report.get("raw", {})
        cc = c.report.get("contextual")
        acc = f"accuracy {100 * raw.get('accuracy', 0):.1f}%"
        if cc:
            acc += f" raw, {100 * cc.get('accuracy', 0):.1f}% contextual"
        t.add_row(f"calibration {m}", f"{', '.join(what) or 'none kept'} ({acc})")
    Console(stderr=True).print(t)
