"""``speculabel calibrate``: certify a threshold on labelled items and write a cascade.toml.

The votes come from a vote store (``speculabel bench --out DIR`` leaves ``DIR/votes.sqlite``;
``classify`` keeps ``$SPECULABEL_HOME/votes.sqlite``); any vote missing there is computed and
stored.  The reference is the judge's label (default) or a gold column.  The method:
:mod:`speculabel.certify`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from speculabel.cascade.config import DEFAULT_JUDGE
from speculabel.cli.calibrate_plan import measure_offsets, print_plan, warn_one_class
from speculabel.cli.common import (
    DelimiterOpt,
    IdOpt,
    QuietOpt,
    TextAOpt,
    TextBOpt,
    TextOpt,
    VotesOpt,
    column_map,
    csv_list,
    echo_note,
    fail,
)
from speculabel.io.datasets import DATASET_SPECS

EXIT_INFEASIBLE = 1


def load_calibration_items(
    source: str,
    task: Any,
    *,
    gold_column: str | None = None,
    columns: dict[str, str] | None = None,
    id_column: str | None = None,
    limit: int | None = None,
    delimiter: str | None = None,
) -> tuple[list[Any], list[str | None] | None, list[str]]:
    """Items, gold labels when asked for, and notes on skipped rows: from a table or a data set
    spec (whose gold labels are used with ``--gold-column gold``)."""
    from speculabel.io import datasets
    from speculabel.io.tables import RowError, read_items, read_labelled
    from speculabel.records import Item

    if datasets.is_dataset_spec(source):
        data = datasets.from_spec(source, limit)
        return list(data.items), (list(data.gold) if gold_column else None), []
    gold: list[str | None] | None = None
    if gold_column:
        items, gold, bad = read_labelled(source, task, gold_column, columns=columns,
                                         id_column=id_column, delimiter=delimiter)
    else:
        rows = list(read_items(source, task, columns=columns, id_column=id_column,
                               delimiter=delimiter))
        items = [r for r in rows if isinstance(r, Item)]
        bad = [r for r in rows if isinstance(r, RowError)]
    if limit is not None:
        items = items[:limit]
        gold = gold[:limit] if gold is not None else None
    notes = [f"skipping {len(bad)} unreadable row(s), e.g. {bad[0].error}"] if bad else []
    return items, gold, notes


def calibrate(
    input: Annotated[
        str,
        typer.Argument(
            help="Calibration items: a table (.csv/.tsv/.jsonl/.parquet) or a data set "
            f"({', '.join(DATASET_SPECS)})."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The cascade.toml to write (fitted workers go "
                                                  "into a folder beside it, STEM.fitted/).")
    ] = Path("cascade.toml"),
    task: Annotated[str, typer.Option(help="Built-in task or task TOML file.")] = "sentiment",
    workers: Annotated[
        str | None,
        typer.Option(help="Comma-separated worker specs [default: the task's classify defaults]."),
    ] = None,
    judge: Annotated[str | None, typer.Option(help=f"Judge spec [default: {DEFAULT_JUDGE}].")] = None,
    scope: Annotated[
        str,
        typer.Option(help="What the target is about: dataset (agreement with the judge over all "
                          "items, judge-decided ones agreeing) or workers (agreement on the items "
                          "the workers decide)."),
    ] = "dataset",
    reference: Annotated[
        str | None,
        typer.Option(help="Labels to agree with: judge, or gold (needs --gold-column or a data "
                          "set) [default: judge; gold with --non-inferior]."),
    ] = None,
    non_inferior: Annotated[
        float | None,
        typer.Option("--non-inferior", metavar="EPS",
                     help="Instead of an agreement target: certify that the cascade's gold "
                          "accuracy is at most EPS below the judge's (needs gold labels)."),
    ] = None,
    gold_column: Annotated[
        str | None, typer.Option(help="Column with gold labels (tables; data sets have them).")
    ] = None,
    labels_from_column: Annotated[
        str | None,
        typer.Option(help="The task's labels are the distinct values of this column of INPUT "
                          "(e.g. 77 intents); the task with these labels is written beside "
                          "the config (STEM.task.toml) for classify."),
    ] = None,
    target: Annotated[
        float, typer.Option(help="Agreement to certify, between 0 and 1 (see --scope).")
    ] = 0.9,
    delta: Annotated[
        float, typer.Option(help="Allowed probability that the guarantee fails (over the draw "
                                 "of the calibration items).")
    ] = 0.1,
    policy: Annotated[
        str, typer.Option(help="confident-majority, weighted, confident-margin (the winner's lead "
                               "over the runner-up: many labels), or auto (the first two, at "
                               "delta/2 each).")
    ] = "confident-majority",
    model_calibration: Annotated[
        str,
        typer.Option(help="Per-model calibration: none, auto (kept where it helps), contextual, "
                     "temperature, both."),
    ] = "none",
    fit_fraction: Annotated[
        str | None,
        typer.Option(help="Share of items for fitting learning workers, weights and temperatures, "
                     "or auto (0.3, 0.5 and 0.7 tried at delta/3 each, for 10 labels or more "
                     "0.5, 0.6, 0.7, 0.75 and 0.8 at delta/5; the best certified "
                     "coverage kept) [default: auto when a worker learns; 0.3 when only weights "
                     "or temperatures are fitted; else 0]; the threshold is certified on the "
                     "rest."),
    ] = None,
    method: Annotated[
        str, typer.Option(help="fixed-sequence, fallback or bonferroni.")
    ] = "fixed-sequence",
    votes: VotesOpt = None,
    text_column: TextOpt = None,
    text_a_column: TextAOpt = None,
    text_b_column: TextBOpt = None,
    id_column: IdOpt = None,
    delimiter: DelimiterOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N items.")] = None,
    early_exit: Annotated[bool, typer.Option(help="Write early_exit = true.")] = False,
    report: Annotated[
        Path | None, typer.Option(help="Also write the full evidence as JSON here.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fit/certify split.")] = 0,
    buy: Annotated[
        str, typer.Option(help="all: the judge labels every item; sequential: a growing random "
                               "sample (--first items, doubled at each look, delta/K per look) "
                               "until more labels stop paying (see --volume).")
    ] = "all",
    first: Annotated[int | None, typer.Option(min=2, help="--buy sequential: the first look's "
                                                          "sample size [default: 200].")] = None,
    volume: Annotated[int | None, typer.Option(min=1, help="--buy sequential: the items you will "
                                                           "classify with the config; more labels "
                                                           "are bought while the coverage they add "
                                                           "saves more judge calls on them.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Certify the acceptance threshold with the fewest judge calls for a target, and write a
    cascade.toml that classify reads.

    Targets (each holds with probability >= 1 - DELTA over the draw of the calibration items):
    --scope dataset: agreement with the judge over all items >= TARGET (judge-decided items
    agree); --scope workers: agreement on the items the workers decide >= TARGET;
    --non-inferior EPS: gold accuracy at most EPS below the judge's. Workers that learn
    (learner:minilm, similarity:minilm) are fitted on a share of the items, saved beside the
    config and frozen, and the threshold is certified on the rest.

    Exit status: 0 written; 1 no threshold meets the target (nothing written); 2 bad input.
    """
    from speculabel.backends.base import BackendError
    from speculabel.cascade.build import check_setup
    from speculabel.cascade.config import ConfigError, default_workers, make_config
    from speculabel.certify.scope import SCOPES
    from speculabel.certify.threshold import METHODS
    from speculabel.cli.labelset import labels_from
    from speculabel.io.tables import InputError, parse_delimiter
    from speculabel.tasks import TaskError, load_task

    worker_specs = csv_list(workers, "--workers") or default_workers(task)
    judge_spec = judge or DEFAULT_JUDGE
    if non_inferior is not None:
        if not 0.0 <= non_inferior < 1.0:
            raise fail(f"--non-inferior must be in [0, 1), got {non_inferior:g}")
        if reference == "judge":
            raise fail("--non-inferior compares with gold labels: use --reference gold")
        reference, the_scope, goal = "gold", "non-inferior", non_inferior
    else:
        if scope not in SCOPES[:2]:
            raise fail(f"--scope must be dataset or workers, got {scope!r}")
        the_scope, goal = scope, target
        if not 0 < target < 1:
            raise fail(f"--target must be between 0 and 1, both excluded, got {target:g}")
    reference = reference or "judge"
    if reference not in ("judge", "gold"):
        raise fail(f"--reference must be judge or gold, got {reference!r}")
    if not 0 < delta < 1:
        raise fail(f"--delta must be between 0 and 1, both excluded, got {delta:g}")
    if method not in METHODS:
        raise fail(f"--method must be one of {', '.join(METHODS)}")
    if buy not in ("all", "sequential"):
        raise fail(f"--buy must be all or sequential, got {buy!r}")
    if buy == "sequential" and (reference == "gold" or non_inferior is not None
                                or labels_from_column or model_calibration != "none"):
        raise fail("--buy sequential buys the judge's labels: it takes no --reference gold, "
                   "--non-inferior, --labels-from-column or --model-calibration")
    share: float | str | None = fit_fraction
    if fit_fraction is not None and fit_fraction != "auto":
        try:
            share = float(fit_fraction)
        except ValueError:
            raise fail(f"--fit-fraction must be a number in [0, 1) or auto, got "
                       f"{fit_fraction!r}") from None
    try:
        names = labels_from(input, labels_from_column) if labels_from_column else None
        the_task = load_task(task, names)
        if names is not None and sorted(the_task.label_names) != names:
            from speculabel.tasks import with_labels

            the_task = with_labels(the_task, names)
        columns = column_map(the_task, text_column, text_a_column, text_b_column)
        probe = make_config({"task": task, "workers": worker_specs, "judge": judge_spec,
                             "policy": "confident-majority", "threshold": 0.0})
        check_setup(probe, the_task)
        items, gold, notes = load_calibration_items(
            input, the_task, gold_column=gold_column, columns=columns, id_column=id_column,
            limit=limit, delimiter=parse_delimiter(delimiter),
        )
    except (TaskError, ConfigError, BackendError, InputError, FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    if reference == "gold" and gold is None:
        raise fail(f"--reference gold needs gold labels: give --gold-column (the column of "
                   f"{input} that holds them), or a data set ({', '.join(DATASET_SPECS)})")
    for note in notes:
        typer.secho(note, fg=typer.colors.YELLOW, err=True)
    if not items:
        raise fail(f"no items in {input}")
    from speculabel.io.lock import OutputBusyError, OutputLock

    lock = OutputLock(output)  # one calibrate per config (and its STEM.fitted/ folder)
    try:
        lock.acquire()
    except (OutputBusyError, OSError) as e:
        raise fail(str(e)) from None
    try:
        if buy == "sequential":
            from speculabel.cli.calibrate_buy import buy_and_write

            buy_and_write(output, the_task, task_for_config(task), items, worker_specs,
                          judge_spec, scope=the_scope, target=goal, delta=delta, policy=policy,
                          fit_fraction=share, method=method, votes=votes, first=first,
                          volume=volume, seed=seed, quiet=quiet)
            return
        _certify_and_write(
            input, output, the_task, task, items, gold, worker_specs, judge_spec, the_scope, goal,
            reference, delta, policy, model_calibration, share, method, votes, early_exit,
            report, seed, quiet,
        )
    finally:
        lock.release()


def _certify_and_write(
    input: str, output: Path, the_task: Any, task: str, items: list[Any],
    gold: list[str | None] | None, worker_specs: list[str], judge_spec: str, scope: Any,
    goal: float, reference: str, delta: float, policy: str, model_calibration: str,
    fit_fraction: float | str | None, method: str, votes: Path | None, early_exit: bool,
    report: Path | None, seed: int, quiet: bool,
) -> None:
    import os
    import shutil

    from speculabel.backends.base import BackendError
    from speculabel.cascade.config import save_config
    from speculabel.certify.workflow import calibrate as run
    from speculabel.cli.labelset import same_task, write_task
    from speculabel.io.paths import votes_path
    from speculabel.io.votes import VoteStore, VoteStoreError
    from speculabel.tasks import BUILTIN_TASKS

    store_path = votes_path(votes)
    echo_note(f"{len(items)} calibration items; votes from {store_path}", quiet)
    last: dict[str, int] = {}

    def progress(spec: str, done: int, total: int) -> None:
        step = max(1, total // 10)
        if not quiet and (done == total or done // step != last.get(spec, -1) // step):
            typer.echo(f"  {spec}: {done}/{total}", err=True)
        last[spec] = done

    fitted = output.with_name(f"{output.stem}.fitted")
    staging = output.with_name(f".{output.stem}.fitted.{os.getpid()}.tmp")
    try:
        offsets: dict[str, dict[str, float]] = {}
        if model_calibration in ("auto", "contextual", "both"):
            offsets = measure_offsets(worker_specs, the_task, lambda m: echo_note(m, quiet))
        with VoteStore(store_path) as store:
            cal = run(the_task, items, gold, worker_specs, judge_spec, store=store,
                      fitted_dir=staging, target=goal, delta=delta, scope=scope,
                      reference=reference, policy=policy, model_calibration=model_calibration,
                      offsets=offsets, fit_fraction=fit_fraction, method=method, seed=seed,
                      progress=progress)
    except (BackendError, VoteStoreError, RuntimeError, ValueError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise fail(str(e)) from None
    plan, res = cal.plan, cal.plan.result
    ref_name = f"judge {judge_spec}" if reference == "judge" else "gold labels"
    warn_one_class(cal, ref_name)
    print_plan(plan, ref_name, cal.n_certify + cal.n_fit)
    for note in cal.notes:
        echo_note(note, quiet)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        evidence = {
            "input": input, "task": the_task.name, "workers": worker_specs, "judge": judge_spec,
            "reference": ref_name, "scope": scope, "target": goal, "delta": delta,
            "method": method, "offsets": offsets, "n_fit": cal.n_fit, "n_certify": cal.n_certify,
            "judge_accuracy": cal.judge_accuracy, "notes": cal.notes, "plan": plan.to_json(),
        }
        report.write_text(json.dumps(evidence, indent=2, default=str), encoding="utf-8")
        echo_note(f"evidence: {report}", quiet)
    if not res.feasible or res.coverage == 0:
        shutil.rmtree(staging, ignore_errors=True)
        level = delta / 2 if policy == "auto" else delta  # auto tests each rule at delta / 2
        best = (plan.max_feasible_target(cal.data, level, method)
                if cal.data and not res.feasible else None)
        typer.secho(f"{res.message(best, searched=cal.data is not None)}. Nothing written.",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_INFEASIBLE)

    if cal.fitted:
        shutil.rmtree(fitted, ignore_errors=True)
        staging.replace(fitted)
    if the_task != BUILTIN_TASKS.get(task) and not same_task(task, the_task):
        task = write_task(the_task, output)  # labels from a column: classify needs them
    models = {spec: {"directory": str((fitted / folder.name).resolve()), "frozen": True}
              for spec, folder in cal.fitted.items()}
    cfg = plan.to_config(task=task_for_config(task), workers=worker_specs, judge=judge_spec, early_exit=early_exit,
                         models=models, certificate={
                             "scope": scope, "target": goal, "delta": delta, "method": method,
                             "reference": ref_name, "fit_items": cal.n_fit,
                             "certify_items": cal.n_certify, "threshold": res.threshold,
                             "expected_judge_call_rate": round(res.judge_call_rate, 4),
                             "estimate": res.estimate, "bound": res.bound,
                             "promise": res.promise()})
    comment = (
        f"written by: speculabel calibrate {input} --task {task} --workers "
        f"{','.join(worker_specs)} --judge {judge_spec} --scope {scope} --target {goal:g} "
        f"--delta {delta:g} --policy {policy} --model-calibration {model_calibration} "
        f"--method {method}\n"
        f"reference: {ref_name}; {cal.n_fit + cal.n_certify} items ({cal.n_fit} fit, "
        f"{cal.n_certify} certify)\nguarantee: {res.promise()}"
    )
    save_config(cfg, output, comment)
    typer.echo(f"wrote {output}" + (f" and {fitted}/" if cal.fitted else "")
               + f": use it with  speculabel classify INPUT -o OUT --config {output}")


def task_for_config(task: str) -> str:
    """The task as a config holds it: a built-in name, or the TOML file's absolute path
    (``save_config`` writes it relative to the config, so the pair travels together)."""
    from speculabel.tasks import BUILTIN_TASKS

    return task if task in BUILTIN_TASKS else str(Path(task).expanduser().resolve())


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
