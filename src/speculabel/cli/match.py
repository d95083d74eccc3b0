"""``speculabel match``: the similar tickets of a queue, resumably.

Everything that can be wrong is found before the first model loads: the settings (config and
flags), every backend against the task, the input files (every row read), the output and its
sidecars.  Then MiniLM embeds each ticket once, the candidate pairs are found, the cascade
decides them (journalled as they are decided), and one line per ticket is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from speculabel.cli.common import EXIT_INTERRUPTED, IdOpt, QuietOpt, csv_list, echo_note, fail
from speculabel.match.grouping import DEFAULT_GROUPING
from speculabel.match.run import DEFAULT_FLOOR, DEFAULT_K


def match(
    queue: Annotated[str, typer.Argument(show_default=False,
                                         help="Tickets: .csv, .tsv, .jsonl or .parquet.")],
    output: Annotated[str, typer.Option(
        "--output", "-o", show_default=False,
        help="One line per ticket: .jsonl (or .csv, .parquet); settings in OUTPUT.meta.json, "
             "the decided pairs in OUTPUT.pairs.jsonl. Rerun to resume.")],
    text_column: Annotated[str, typer.Option("--text-column", help="Column with the ticket text.")
                           ] = "text",
    id_column: IdOpt = None,
    against: Annotated[Path | None, typer.Option(
        help="Past tickets (same columns): each queue ticket is also matched against them.")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Nearest neighbours per ticket (chosen by "
                                                       "the match bench).")] = DEFAULT_K,
    floor: Annotated[float, typer.Option(min=-1.0, max=1.0,
                                         help="Least cosine of a candidate pair (chosen by the "
                                              "match bench).")] = DEFAULT_FLOOR,
    config: Annotated[Path | None, typer.Option(
        help="cascade.toml (e.g. from certify_matches or calibrate); flags override it.")
    ] = None,
    workers: Annotated[str | None, typer.Option(
        help="One to three worker specs [default: similarity:minilm,learner:minilm, learning "
             "from the judge].")] = None,
    judge: Annotated[str | None, typer.Option(help="Judge model spec [default: qwen2.5-1.5b].")
                     ] = None,
    policy: Annotated[str | None, typer.Option(help="Acceptance rule [default: majority].")
                      ] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Threshold for confident-majority / weighted.")] = None,
    reject: Annotated[float | None, typer.Option(
        min=0.0, max=1.0,
        help="Least confidence at which the workers drop a pair as no match (a match needs "
             "--threshold) [default: the certificate's, else the threshold].")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Pairs per batch [default: 8].")
                          ] = None,
    judge_budget: Annotated[float | None, typer.Option(
        help="The judge decides at most this share of the candidate pairs (pairs of tickets "
             "without a match first, then the likeliest); the rest the workers leave are not "
             "asked [default: the certificate's, else no limit].")] = None,
    grouping: Annotated[str, typer.Option(
        help="How matches become duplicate groups: cohesive (two groups merge only when "
             "their matches are a large enough share of the smaller one's, pairs decided not "
             "similar counting against: a lone wrong match does not chain two groups) or "
             "components (every chain of matches is one group).")] = DEFAULT_GROUPING,
    search: Annotated[str, typer.Option(
        help="Nearest-neighbour search: auto (exact numpy up to 20,000 tickets, else usearch "
             "HNSW when installed), exact, usearch.")] = "auto",
    engine: Annotated[str, typer.Option(
        help="Where the candidate pairs are decided: local (this process) or ray (a local Ray "
             "instance, or the cluster at --address; workers that learn must be frozen, e.g. "
             "from certify_matches; no --judge-budget). Needs pip install 'speculabel[ray]'.")
    ] = "local",
    address: Annotated[str | None, typer.Option(
        help="--engine ray: the cluster (auto, ray://HOST:10001, HOST:6379) [default: start a "
             "local instance].")] = None,
    adaptive: Annotated[bool, typer.Option(
        "--adaptive", help="No labels or calibration needed: the judge labels a random share "
        "of the candidate pairs (the learning workers learn from it), then buys labels until "
        "a rank cut is certified for --target agreement with the judge over all candidate "
        "pairs; the workers decide the pairs above it.")] = False,
    target: Annotated[float, typer.Option(min=0.0, max=1.0, help="--adaptive: agreement with "
                                          "the judge to certify over the candidate pairs.")
                      ] = 0.85,
    delta: Annotated[float, typer.Option(min=0.0, max=1.0, help="--adaptive: allowed "
                                         "probability that the guarantee fails.")] = 0.1,
    quiet: QuietOpt = False,
) -> None:
    """Find the similar tickets in a queue: one JSON line per ticket with its matches and its
    duplicate group.

    Candidate pairs are each ticket's --k nearest neighbours (MiniLM cosine >= --floor); the
    similar-ticket cascade decides them; accepted matches are grouped (--grouping). At the end
    the run states how many candidate pairs there were, how many the judge decided, and what is
    guaranteed about the reported matches (when the config carries a certificate). Exit status:
    0 done, 2 bad input or settings (nothing loaded or written), 3 pairs left undecided (judge
    unavailable: rerun), 130 interrupted (rerun to resume).
    """
    from speculabel.adaptive.decider import AdaptiveDecider
    from speculabel.backends.base import BackendError
    from speculabel.cascade.build import check_setup
    from speculabel.cascade.config import ConfigError, make_config, read_config_data
    from speculabel.io.tables import InputError, read_items
    from speculabel.match.api import certified_rule
    from speculabel.match.output import MatchOutput, MatchRunInfo
    from speculabel.match.run import MATCH_LABEL, MatchSettings
    from speculabel.records import Item
    from speculabel.tasks import TaskError, load_task

    try:
        data = read_config_data(config) if config else {}
        found = data.get("certificate")
        cert: dict[str, Any] = found if isinstance(found, dict) else {}
        if judge_budget is None and cert.get("judge_budget") is not None:
            judge_budget = float(cert["judge_budget"])
        settings = MatchSettings(k=k, floor=floor, engine=search, judge_budget=judge_budget,
                                 grouping=grouping)
        settings.check()
        data.setdefault("task", "similar-ticket")
        flags = {"workers": csv_list(workers, "--workers"), "judge": judge, "policy": policy,
                 "threshold": threshold, "batch_size": batch_size}
        data.update({k_: v for k_, v in flags.items() if v is not None})
        if adaptive:
            data.update({"adaptive": True, "target": target, "delta": delta})
        cfg = make_config(data, f"{config} (with the flags)" if config else "settings")
        if cfg.adaptive and (engine != "local" or judge_budget is not None or reject is not None):
            raise ConfigError("--adaptive runs with --engine local, no --judge-budget and no "
                              "--reject (it certifies its own cut)")
        the_task = load_task(cfg.task)
        if len(the_task.fields) != 2 or MATCH_LABEL not in the_task.label_names:
            raise ConfigError(f"task {the_task.name!r} is not a pair task with a "
                              f"{MATCH_LABEL!r} label; match needs one (e.g. similar-ticket)")
        check_setup(cfg, the_task)
        rule = certified_rule(cfg, reject)
        _check_engine(engine, address, cfg, settings)
        decider = (AdaptiveDecider(cfg, the_task, Path(output).with_name(
            Path(output).name + ".adaptive") / "finite.json", lambda m: echo_note(m, quiet))
            if cfg.adaptive else None)
    except (ConfigError, TaskError, BackendError, ValueError) as e:
        raise fail(str(e)) from None
    out_path = Path(output)
    for src in [Path(queue), *([against] if against else [])]:
        if src.exists() and out_path.exists() and src.resolve() == out_path.resolve():
            raise fail(f"the output {out_path} is an input file; give another -o")
    text_task = _text_task(the_task)
    try:
        entries = list(read_items(queue, text_task, columns={"text": text_column},
                                  id_column=id_column))
        past_entries = list(read_items(against, text_task, columns={"text": text_column},
                                       id_column=id_column)) if against else []
        run = MatchRunInfo(
            {**settings.to_json(), **cfg.decision_settings(),
             "rule": rule.describe() if rule is not None else None,
             "task_prompt": the_task.fingerprint()},
            {"queue": str(Path(queue).resolve()), "against": str(against.resolve())
             if against else None, "text_column": text_column, "id_column": id_column})
        out = MatchOutput(out_path, run)
    except InputError as e:
        raise fail(str(e)) from None
    past = [e for e in past_entries if isinstance(e, Item)]
    if len(past) < len(past_entries):
        echo_note(f"{len(past_entries) - len(past)} past tickets are skipped (bad rows)", quiet)
    with out:
        if out.dropped_pending:
            echo_note(f"{out.dropped_pending} pairs left pending are decided again", quiet)
        if out.pairs:
            echo_note(f"resuming: {len(out.pairs)} pairs already decided in "
                      f"{out.pairs_path}", quiet)
        _run(entries, past, cfg, rule, settings, out, out_path, quiet, engine, address, decider)


def _check_engine(engine: str, address: str | None, cfg: Any, settings: Any) -> None:
    """What the Ray engine cannot do, refused before anything loads."""
    from speculabel.scale.settings import EngineError, check_ray_setup

    if engine not in ("local", "ray"):
        raise ValueError(f"--engine is local or ray, not {engine!r}")
    if engine == "local":
        if address is not None:
            raise ValueError("--address: only with --engine ray")
        return
    if settings.judge_budget is not None:
        raise ValueError("--judge-budget needs --engine local (the pairs are re-ranked after "
                         "each judge answer)")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install 'speculabel[ray]'") from None
    try:
        check_ray_setup(cfg, "id")  # the pairs' ids are their keys
    except EngineError as e:
        raise ValueError(str(e)) from None


def _ray_decider(cfg: Any, rule: Any, address: str | None, quiet: bool) -> Any:
    """The pair stage on Ray: each batch of pairs through the Ray pipeline."""
    from speculabel.scale.items import classify_items
    from speculabel.scale.ray_engine import ensure_ray
    from speculabel.tasks import load_task

    ensure_ray(address, quiet)
    task = load_task(cfg.task)
    return lambda items: classify_items(items, cfg, task, policy=rule)


def _cascade(cfg: Any, rule: Any, quiet: bool) -> Any:
    from speculabel.backends.base import BackendError
    from speculabel.match.api import build_match_cascade
    from speculabel.models import ModelError

    try:
        return build_match_cascade(cfg, rule, lambda m: echo_note(m, quiet))
    except (BackendError, ModelError, ValueError) as e:
        raise fail(str(e)) from None


def _run(entries: list[Any], past: list[Any], cfg: Any, rule: Any, settings: Any,
         out: Any, out_path: Path, quiet: bool, engine: str = "local",
         address: str | None = None, adaptive: Any = None) -> None:
    from speculabel.match.run import run_match
    from speculabel.match.statement import statement
    from speculabel.runs import learner_dirs

    learning = {} if adaptive else learner_dirs(cfg.workers, cfg.models, out_path)
    for spec, where in learning.items():
        cfg.models.setdefault(spec, {})["directory"] = str(where)
    if learning and settings.judge_budget is not None:
        echo_note(f"note: {', '.join(learning)} learn from the judge, but under a judge budget "
                  "the workers decide before the judge is asked: fit them first (a config from "
                  "certify_matches)", quiet)
    decide = adaptive or (_ray_decider(cfg, rule, address, quiet) if engine == "ray" else None)
    cascade = _cascade(cfg, rule, quiet) if decide is None else None
    try:
        with _Bars(quiet) as bars:
            result = run_match(entries, cascade, past=past, settings=settings, output=out,
                               progress=bars.update, decide=decide)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: the pairs decided so far are saved in {out.pairs_path}; "
                   "rerun the same command to resume", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if cascade is not None:
            cascade.close()
    for line in statement(result.stats, settings,
                          adaptive.certificate() if adaptive else cfg.certificate):
        typer.echo(line)
    typer.echo(f"results: {out_path}")
    if result.stats.pending:
        typer.secho(f"{result.stats.pending} pairs are not decided (judge unavailable); run the "
                    "same command again to finish them.", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(3)


class _Bars:
    """One progress bar per stage (embed, candidates, pairs, groups) on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tasks: dict[str, Any] = {}
        self.progress: Any = None

    def __enter__(self) -> _Bars:
        if not self.quiet:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                refresh_per_second=4, console=Console(stderr=True))
            self.progress.start()
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        if self.progress is None:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=max(total, 1))
        self.progress.update(self.tasks[stage], completed=done if total else 1,
                             total=max(total, 1))

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _text_task(task: Any) -> Any:
    """The task with one ``text`` field: what the ticket reader needs (no label changes)."""
    import dataclasses

    return dataclasses.replace(task, fields=("text",), examples=(), input_template="{text}")


def register(app: typer.Typer) -> None:
    app.command("match")(match)
