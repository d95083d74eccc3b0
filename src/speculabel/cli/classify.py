"""``speculabel classify``: label a table with the cascade, resumably.

Everything that can be wrong is found before the first model loads, in this order: the settings
(config file and flags, type-checked), the task, every backend against the task, the input
file, the output file.  Then the models load and the run starts; each record is written the
moment its item is decided.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from speculabel.cascade.config import DEFAULT_JUDGE, DEFAULT_WORKERS, TASK_DEFAULT_WORKERS
from speculabel.cli.adaptive import (
    AdaptiveOpt,
    AuditOpt,
    DeltaOpt,
    FitOpt,
    MethodOpt,
    RecertifyOpt,
    ScopeOpt,
    SeedOpt,
    TargetOpt,
    WarmupOpt,
    check_adaptive_flags,
)
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
    exit_if_pending,
    fail,
    print_summary,
    run_with_progress,
    stopped,
)
from speculabel.policy import POLICIES


def classify(
    input: Annotated[
        str,
        typer.Argument(show_default=False,
                       help="Input table: .csv, .tsv, .jsonl or .parquet (--engine ray: also a "
                            "directory of them, or a URI Ray reads, e.g. s3://bucket/data/)."),
    ],
    output: Annotated[
        str,
        typer.Option("--output", "-o", show_default=False,
                     help="Results file: .jsonl (JSON Lines, one record a line), .csv, .tsv or "
                          ".parquet; the run's settings go to OUT.meta.json beside it. With "
                          "--engine ray a results directory of record shards. Rerun to resume."),
    ],
    config: Annotated[
        Path | None, typer.Option(help="cascade.toml with the settings below (flags override it).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="Built-in task (sentiment, similar-ticket) or a task TOML file "
                          "[default: sentiment]."),
    ] = None,
    text_column: TextOpt = None,
    text_a_column: TextAOpt = None,
    text_b_column: TextBOpt = None,
    id_column: IdOpt = None,
    delimiter: DelimiterOpt = None,
    workers: Annotated[
        str | None,
        typer.Option(
            help="One to three comma-separated model specs [default: "
            + "; ".join(f"{t}: {','.join(w)}" for t, w in TASK_DEFAULT_WORKERS.items())
            + f"; other tasks: {','.join(DEFAULT_WORKERS)}]. Learning workers (learner:, "
            "similarity:) abstain until the judge has given them a few labels of every class."
        ),
    ] = None,
    judge: Annotated[str | None, typer.Option(help=f"Judge model spec [default: {DEFAULT_JUDGE}].")] = None,
    policy: Annotated[
        str | None, typer.Option(help=f"Acceptance rule: {', '.join(POLICIES)} [default: majority].")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Confidence threshold between 0 and 1; required by confident-majority "
                          "and weighted, refused by the other rules [default: none]."),
    ] = None,
    early_exit: Annotated[
        bool | None,
        typer.Option(
            "--early-exit/--no-early-exit",
            help="Three workers: ask the third only when the first two do not settle it "
                 "[default: no].",
        ),
    ] = None,
    parallel_workers: Annotated[
        bool | None,
        typer.Option(
            "--parallel-workers/--sequential-workers",
            help="Ask the workers of a batch at the same time (for servers; in-process models "
                 "share the CPU) [default: sequential].",
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Items per batch [default: 8].")] = None,
    judge_only: Annotated[
        bool,
        typer.Option("--judge-only",
                     help="No workers: the judge labels every item (the baseline to compare a "
                          "cascade with, in the same output format)."),
    ] = False,
    votes: VotesOpt = None,
    no_votes: Annotated[
        bool, typer.Option("--no-votes", help="Do not read or write the vote store.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=0, help="Only the first N rows.")] = None,
    allow_changed_run: Annotated[
        bool,
        typer.Option("--allow-changed-run",
                     help="Add to an OUTPUT made with other settings or another input (refused "
                          "by default; every record names the run that made it)."),
    ] = False,
    quiet: QuietOpt = False,
    adaptive: AdaptiveOpt = None,
    target: TargetOpt = None,
    delta: DeltaOpt = None,
    scope: ScopeOpt = None,
    audit_rate: AuditOpt = None,
    warmup: WarmupOpt = None,
    recertify_every: RecertifyOpt = None,
    seed: SeedOpt = None,
    adaptive_method: MethodOpt = None,
    fit: FitOpt = None,
    engine: Annotated[
        str,
        typer.Option(help="local: this process; ray: a Ray Data pipeline (a local Ray instance, "
                          "or the cluster at --address), actor pools for the models (see --fused), OUTPUT "
                          "a directory of shards. Needs pip install 'speculabel[ray]'."),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="--engine ray: the cluster (auto, ray://HOST:10001, HOST:6379) "
                          "[default: [ray] address, else a local instance]."),
    ] = None,
    pool_size: Annotated[
        int | None, typer.Option(min=1, help="--engine ray: actors per in-process worker model "
                                             "[default: 1].")
    ] = None,
    judge_pool_size: Annotated[
        int | None, typer.Option(min=1, help="--engine ray: actors for an in-process judge "
                                             "[default: 1].")
    ] = None,
    cpus_per_actor: Annotated[
        float | None,
        typer.Option(min=0.01, help="--engine ray: CPUs per worker actor (llama.cpp threads) "
                                    "[default: the cluster's CPUs shared out, at most 1].")
    ] = None,
    judge_cpus_per_actor: Annotated[
        float | None,
        typer.Option(min=0.01, help="--engine ray: CPUs per judge actor [default: as "
                                    "--cpus-per-actor].")
    ] = None,
    shard_rows: Annotated[
        int | None, typer.Option(min=1, help="--engine ray: records per shard at most "
                                             "[default: 256].")
    ] = None,
    shard_format: Annotated[
        str | None, typer.Option(help="--engine ray: jsonl or parquet shards [default: jsonl].")
    ] = None,
    fused: Annotated[
        bool | None,
        typer.Option("--fused/--no-fused",
                     help="--engine ray: every model in one actor (--pool-size of them), each "
                          "batch through all steps in that process, or one actor pool per model "
                          "[default: fused when per-model actors would get under one CPU "
                          "each].")
    ] = None,
) -> None:
    """Label a table with the cascade; one JSON record per row in OUTPUT.

    Each record is written (and flushed) the moment its row is decided. Running the same command
    again skips the rows already in OUTPUT, so an interrupted run resumes without duplicates;
    OUTPUT remembers the settings and input that made it and refuses others. Exit status: 0 done,
    2 bad input or settings (nothing is loaded or written), 3 some items left undecided (judge
    unavailable: run the same command again), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM
    (both: what was decided is saved; rerun to resume).

    --engine ray runs the same cascade (the same cascade.toml, the same records) as a Ray Data
    pipeline into a results directory; it needs --id-column (see docs/scale.md).
    """
    from speculabel.backends.base import BackendError
    from speculabel.cascade.build import check_setup
    from speculabel.cascade.config import (
        ConfigError,
        make_config,
        ray_default_workers,
        read_config_data,
    )
    from speculabel.io.results import ResultsError
    from speculabel.io.tables import InputError, parse_delimiter
    from speculabel.scale.settings import EngineError, check_engine, make_ray_settings, pop_ray_table
    from speculabel.tasks import TaskError, load_task

    if judge_only and workers is not None:
        raise fail("--judge-only uses no workers: leave out --workers")
    check_adaptive_flags(target=target, delta=delta, audit_rate=audit_rate)
    overrides: dict[str, Any] = {
        "judge_only": judge_only or None,
        "task": task, "workers": csv_list(workers, "--workers"), "judge": judge,
        "policy": policy, "threshold": threshold, "early_exit": early_exit,
        "parallel_workers": parallel_workers, "batch_size": batch_size,
        "adaptive": adaptive, "target": target, "delta": delta, "scope": scope,
        "audit_rate": audit_rate, "warmup": warmup, "recertify_every": recertify_every,
        "seed": seed, "adaptive_method": adaptive_method, "fit": fit,
    }
    ray_flags: dict[str, Any] = {
        "address": address, "pool_size": pool_size, "judge_pool_size": judge_pool_size,
        "cpus_per_actor": cpus_per_actor, "judge_cpus_per_actor": judge_cpus_per_actor,
        "shard_rows": shard_rows, "shard_format": shard_format, "fused": fused,
    }
    try:
        data = read_config_data(config) if config else {}
        ray_table = pop_ray_table(data, str(config))  # the engine's own table, never a label's
        data.update({k: v for k, v in overrides.items() if v is not None})
        if engine == "ray" and "workers" not in data and not data.get("judge_only"):
            data["workers"] = ray_default_workers(str(data.get("task") or "sentiment"))
            echo_note(f"--engine ray: the default workers learn from the judge as they come, "
                      f"which needs one process; running {','.join(data['workers'])} (calibrate "
                      "a learning worker first to run it frozen on Ray)", quiet)
        cfg = make_config(data, f"{config} (with the flags)" if config else "settings")
        check_engine(engine, adaptive=cfg.adaptive)  # adaptive runs are single-process
        if cfg.adaptive:
            cfg.adaptive_settings().check()
        the_task = load_task(cfg.task)
        columns = column_map(the_task, text_column, text_a_column, text_b_column)
        check_setup(cfg, the_task)
        ray_settings = make_ray_settings(ray_table, ray_flags,
                                         f"{config} (with the flags)" if config else "flags")
    except (ConfigError, TaskError, BackendError, EngineError, ValueError) as e:
        raise fail(str(e)) from None
    if engine == "ray":
        from speculabel.cli.ray import classify_ray

        if delimiter is not None:
            raise fail("--delimiter: not with --engine ray (Ray reads CSV with ',')")
        classify_ray(input=input, output=output, cfg=cfg, task=the_task, columns=columns,
                     id_column=id_column, settings=ray_settings, votes=votes, no_votes=no_votes,
                     limit=limit, allow_changed_run=allow_changed_run, quiet=quiet)
        return
    given = [f"--{k.replace('_', '-')}" for k, v in ray_flags.items() if v is not None]
    if given:
        raise fail(f"{', '.join(given)}: only with --engine ray")
    from speculabel.runs import FileRun

    out_path = Path(output)
    try:
        frun = FileRun(input, out_path, cfg, the_task, columns=columns, id_column=id_column,
                       delimiter=parse_delimiter(delimiter), limit=limit,
                       allow_changed_run=allow_changed_run)
    except (InputError, ResultsError) as e:
        raise fail(str(e)) from None
    if frun.dropped_retryable:
        echo_note(f"{frun.dropped_retryable} records of a retryable error are decided again",
                  quiet)
    if frun.skipped:
        echo_note(f"resuming: {frun.skipped} of {frun.n_rows} rows already in {out_path}",
                  quiet)
    _run(frun, out_path, votes, no_votes, quiet)


class _Live:
    """The run's stats as they become known (the cascade is built when the run starts)."""

    def __init__(self, frun: Any) -> None:
        self.frun = frun

    @property
    def items(self) -> int:
        return self.frun.stats.items if self.frun.stats is not None else 0

    @property
    def judge_rate(self) -> float:
        return self.frun.stats.judge_rate if self.frun.stats is not None else 0.0


def _run(frun: Any, out_path: Path, votes: Path | None, no_votes: bool, quiet: bool) -> None:
    """Decide what is left with a progress bar; the summary, or one line for what went wrong
    (with how many records are saved)."""
    from speculabel.backends.base import BackendError
    from speculabel.io.results import ResultsError
    from speculabel.io.votes import VoteStoreError
    from speculabel.models import ModelError

    if not frun.n_items:
        for _ in frun.records():  # the bad rows' records, if any
            pass
        typer.echo(f"nothing to do: all {frun.n_rows} rows are in {out_path}")
        return
    store = _open_votes(votes, no_votes)
    try:
        run_with_progress(frun.records(store, lambda m: echo_note(m, quiet)), frun.n_todo,
                          _Live(frun), lambda rec: None, quiet)
    except KeyboardInterrupt as e:
        raise stopped(e, frun.saved, out_path) from None
    except ResultsError as e:  # disk full: the message says what is saved
        raise fail(str(e)) from None
    except VoteStoreError as e:  # a store fault: what is decided stays saved
        saved = (f"; the {frun.saved} records decided are saved in {out_path}: rerun the "
                 "same command to resume" if frun.saved else "; nothing was written")
        raise fail(f"{e}{saved}") from None
    except (BackendError, ModelError, ValueError, OSError) as e:  # a model loaded on first use
        raise fail(f"{e}; the {frun.saved} records written in this run are saved in "
                   f"{out_path}: rerun the same command to resume") from None
    finally:
        if store is not None:
            store.close()
    if frun.cfg.adaptive and frun.session is not None:
        session = frun.session
        typer.secho(f"certified: {frun.statement}", err=True,
                    fg=typer.colors.GREEN if session.certified else typer.colors.YELLOW)
        rate = session.report.get("judge_call_rate")
        echo_note(f"judge calls {'-' if rate is None else f'{rate:.1%}'} of "
                  f"{session.report.get('items')} items; per window, looks and the audit in "
                  f"{session.report_path}", quiet)
    _finish(frun.stats, frun.n_bad, out_path)


def _finish(stats: Any, n_errors: int, out_path: Path) -> None:
    """The summary table; exit status 3 when items are left pending."""
    summary = stats.summary()
    summary["failures"] = int(summary["failures"]) + n_errors
    print_summary(summary, out_path)
    exit_if_pending(stats.pending)


def _open_votes(votes: Path | None, no_votes: bool) -> Any:
    from speculabel.io.paths import votes_path
    from speculabel.io.votes import VoteStore, VoteStoreError

    if no_votes:
        return None
    try:
        return VoteStore(votes_path(votes))
    except VoteStoreError as e:
        raise fail(str(e)) from None


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
