"""The ``speculabel bench`` command (registered into the main CLI by :func:`register`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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
    fail,
)
from speculabel.cli.common import console as make_console

DATASET_TASKS = {"tweeteval": "sentiment", "banking77-pairs": "similar-ticket"}


def _floats(value: str) -> list[float]:
    try:
        out = [float(v) for v in csv_list(value, "--thresholds") or []]
    except ValueError:
        raise fail(f"--thresholds must be comma-separated numbers, got {value!r}") from None
    bad = [t for t in out if not 0.0 <= t <= 1.0]
    if bad:
        raise fail(f"thresholds must lie in [0, 1], got {bad}")
    return out


def _read_file(
    path: Path, task: Any, columns: dict[str, str], id_column: str | None,
    gold_column: str | None, limit: int | None, delimiter: str | None = None,
) -> tuple[list[Any], list[str | None] | None, list[str]]:
    """Items (bad rows dropped, and reported) and gold labels from a table, as ``classify``."""
    from speculabel.io.tables import (
        InputError,
        RowError,
        parse_delimiter,
        read_items,
        read_labelled,
    )
    from speculabel.records import Item

    try:
        sep = parse_delimiter(delimiter)
        if gold_column:
            items, gold_all, bad = read_labelled(path, task, gold_column, columns=columns,
                                                 id_column=id_column, delimiter=sep)
            gold: list[str | None] | None = gold_all
        else:
            rows = list(read_items(path, task, columns=columns, id_column=id_column,
                                   delimiter=sep))
            items = [r for r in rows if isinstance(r, Item)]
            bad = [r for r in rows if isinstance(r, RowError)]
            gold = None
    except InputError as e:
        raise fail(str(e)) from None
    if limit is not None:
        items = items[:limit]
        gold = gold[:limit] if gold is not None else None
    notes = [f"skipped {r.error}" for r in bad]
    missing = sum(g is None for g in gold) if gold is not None else 0
    if missing:
        notes.append(f"{missing} items have no gold label (left out of accuracy)")
    return items, gold, notes


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to the main CLI."""

    @app.command("bench")
    def bench(
        input: Annotated[
            Path | None,
            typer.Argument(help="Input table (.csv/.tsv/.jsonl/.parquet), or use --dataset."),
        ] = None,
        models: Annotated[
            str, typer.Option(help="Comma-separated model specs; the last is the judge unless "
                                   "--judge says otherwise.")
        ] = "smollm2-135m,gemma3-270m,qwen2.5-0.5b,qwen2.5-1.5b",
        judge: Annotated[str | None, typer.Option(help="Which of --models is the judge.")] = None,
        dataset: Annotated[
            str | None,
            typer.Option(help="Built-in data set from ../shared/data: tweeteval or "
                              "banking77-pairs (instead of INPUT)."),
        ] = None,
        split: Annotated[
            str, typer.Option(help="Data set split (tweeteval: test or val).")
        ] = "test",
        seed: Annotated[int, typer.Option(help="Seed for building banking77 pairs.")] = 0,
        task: Annotated[
            str | None,
            typer.Option(help="Built-in task or task TOML (default for --dataset: its task)."),
        ] = None,
        text_column: TextOpt = None,
        text_a_column: TextAOpt = None,
        text_b_column: TextBOpt = None,
        id_column: IdOpt = None,
        delimiter: DelimiterOpt = None,
        gold_column: Annotated[
            str | None, typer.Option(help="Column with gold labels (optional).")
        ] = None,
        limit: Annotated[
            int | None,
            typer.Option(help="Use the first N items (default: 500 for --dataset, all rows "
                              "for a file)."),
        ] = None,
        out: Annotated[
            Path | None, typer.Option(help="Report folder (default: bench-out/TASK).")
        ] = None,
        votes: VotesOpt = None,
        batch_size: Annotated[int, typer.Option(help="Items per model call.")] = 8,
        thresholds: Annotated[
            str | None,
            typer.Option(help="Confident-majority thresholds to sweep "
                              "(default: 0.5,0.6,0.7,0.8,0.9,0.95; --report-only: as before)."),
        ] = None,
        measure_items: Annotated[
            int,
            typer.Option(help="Items for the measured runs of the best configurations (0: skip)."),
        ] = 100,
        fit_items: Annotated[
            int | None,
            typer.Option(min=0, help="Items set aside to fit workers that learn (learner:minilm, "
                                     "similarity:minilm) [default: a fifth of the items, at most "
                                     "300]; the rest is halved into certify and held-out shares."),
        ] = None,
        fit_from: Annotated[
            str | None,
            typer.Option(help="Take the fit share (--fit-items of them) from this data set spec "
                              "(e.g. tweeteval:test:6000) instead of the bench items; bench items "
                              "are never used, their judge labels are computed once."),
        ] = None,
        delta: Annotated[
            float, typer.Option(help="Allowed probability that a certified target fails.")
        ] = 0.1,
        splits: Annotated[
            int, typer.Option(min=1, help="Random re-splits for the check of the guarantee.")
        ] = 100,
        remeasure: Annotated[
            bool,
            typer.Option("--remeasure", help="Time the measured runs again even when the last "
                                             "bench in OUT measured the same models, items and "
                                             "configurations (reused by default)."),
        ] = False,
        report_only: Annotated[
            bool,
            typer.Option("--report-only", help="Redo analysis and report from OUT/bench.json and "
                                               "the vote store; no model is loaded."),
        ] = False,
        interleave: Annotated[
            bool,
            typer.Option("--interleave/--model-by-model",
                         help="Load all models and let them take turns batch by batch, so that "
                              "other work on the machine slows them alike (default); or run "
                              "one model after the other with one model in memory."),
        ] = True,
        stream: Annotated[
            list[Path] | None,
            typer.Option("--stream", metavar="FILE.json",
                         help="An adaptive-run stream result (JSON from make bench-stream) to "
                              "put into the report: the judge-call rate per window as the "
                              "workers learn, and whether the guarantee held. Repeat for "
                              "several."),
        ] = None,
        no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")] = False,
        skip_missing_data: Annotated[
            bool,
            typer.Option("--skip-missing-data",
                         help="When the --dataset files are absent, say so and exit 0."),
        ] = False,
        quiet: QuietOpt = False,
    ) -> None:
        """Run every model on the same items, store every vote, report the paper's numbers.

        Agreement of every model with every other and with gold; coverage, agreement, judge
        calls and speedup of every worker pair and triple under majority, unanimous and
        confident-majority; certified cascades (every set of one to three workers, workers that
        learn included: whole-data agreement 0.80 / 0.85 / 0.90 certified on all the evaluation
        items as classify --adaptive does, a rank cut bought with judge labels, checked over
        seeds of the label draw; agreement 0.90 on the workers' share and gold accuracy at most
        0.01 / 0.02 below the judge's certified on one share and measured on a held-out share,
        checked over random re-splits); then the real cascade of the best threshold
        configurations against the judge alone on held-out items. Votes are cached in the vote
        store: rerunning continues where it stopped and costs no model call for what is stored.
        Writes OUT/report.{json,md,html} and plots.
        """
        from speculabel.backends.base import BackendError
        from speculabel.bench.core import report_from_store, run_bench
        from speculabel.bench.manifest import DEFAULT_THRESHOLDS
        from speculabel.io.datasets import DataMissing, banking77_pairs, tweeteval
        from speculabel.io.paths import votes_path
        from speculabel.io.votes import VoteStoreError
        from speculabel.models import ModelError
        from speculabel.tasks import TaskError, load_task

        def say(msg: str) -> None:
            if not quiet:
                typer.echo(msg, err=True)

        ths = _floats(thresholds) if thresholds else None
        if report_only:
            if out is None:
                raise fail("--report-only needs --out DIR (the folder of an earlier bench)")
            try:
                res = report_from_store(out, store_path=votes_path(votes) if votes else None,
                                        judge=judge, plots=not no_plots,
                                        thresholds=ths, stream=stream)
            except (FileNotFoundError, ValueError, VoteStoreError) as e:
                raise fail(str(e)) from None
            _print(res.analysis, res.files)
            return

        specs = csv_list(models, "--models") or []
        if len(specs) < 3:
            raise fail("--models needs at least three models (two workers and a judge)")
        if judge is not None and judge not in specs:
            raise fail(f"--judge {judge!r} is not in --models ({', '.join(specs)})")
        if (input is None) == (dataset is None):
            raise fail("give either an INPUT file or --dataset (tweeteval, banking77-pairs)")

        ds_info: dict[str, Any] = {}
        notes: list[str] = []
        if dataset is not None:
            if dataset not in DATASET_TASKS:
                raise fail(f"unknown --dataset {dataset!r}; choose {', '.join(DATASET_TASKS)}")
            n = limit if limit is not None else 500
            try:
                data = (tweeteval(split, n) if dataset == "tweeteval"
                        else banking77_pairs(n, seed, split))
            except DataMissing as e:
                if skip_missing_data:
                    typer.secho(f"SKIPPED bench on {dataset}: {e}", fg=typer.colors.YELLOW,
                                err=True)
                    raise typer.Exit(0) from None
                raise fail(str(e)) from None
            task_name = task or DATASET_TASKS[dataset]
            items = data.items
            gold: list[str | None] | None = list(data.gold)
            ds_info = {"name": data.name, "source": data.source,
                       **{k: v for k, v in data.info.items() if k != "kinds"}}
        else:
            assert input is not None
            if task is None:
                raise fail("--task is required with an INPUT file")
            task_name = task
        try:
            the_task = load_task(task_name)
        except TaskError as e:
            raise fail(str(e)) from None
        if input is not None:
            columns = column_map(the_task, text_column, text_a_column, text_b_column)
            items, gold, notes = _read_file(input, the_task, columns, id_column, gold_column,
                                            limit, delimiter)
            ds_info = {"name": input.name, "source": str(input), "limit": limit}
        for note in notes:  # data problems are shown even with --quiet
            typer.secho(note, fg=typer.colors.YELLOW, err=True)
        if len(items) < 1:
            raise fail("no items to bench")

        out_dir = out or Path("bench-out") / the_task.name
        say(f"bench: task {the_task.name}, {len(items)} items, models {', '.join(specs)}, "
            f"judge {judge or specs[-1]}; report in {out_dir}")
        try:
            res = run_bench(
                the_task, items, gold, specs, out_dir, judge=judge,
                store_path=votes_path(votes) if votes else None,
                dataset=ds_info, batch_size=batch_size, thresholds=ths or DEFAULT_THRESHOLDS,
                measure_items=measure_items, progress=not quiet, plots=not no_plots,
                interleave=interleave, stream=stream, remeasure=remeasure,
                fit_items=fit_items, fit_from=fit_from, delta=delta, splits=splits, seed=seed,
                say=say,
            )
        except (BackendError, ModelError, ValueError, FileNotFoundError, VoteStoreError) as e:
            raise fail(str(e)) from None
        _print(res.analysis, res.files)


def _print(analysis: dict[str, Any], files: dict[str, Path]) -> None:
    from rich.table import Table as RichTable

    from speculabel.report import headline_tables

    console = make_console()
    for t in headline_tables(analysis):
        rt = RichTable(title=t.title, title_justify="left")
        for h in t.headers:
            rt.add_column(h)
        for r in t.rows:
            rt.add_row(*r)
        console.print(rt)
        if t.note:
            console.print(t.note, style="dim")
    console.print(f"selection: {analysis.get('selection', '')}")
    for key in ("md", "html", "json"):
        if key in files:
            console.print(f"report.{key}: {files[key]}")
