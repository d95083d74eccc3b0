"""``speculabel demo``: prints :mod:`speculabel.bench.demo` (the cascade on a built-in sample,
timed against the judge alone)."""

from __future__ import annotations

from typing import Annotated

import typer

from speculabel.cascade.config import DEFAULT_JUDGE
from speculabel.cli.common import console as make_console
from speculabel.cli.common import csv_list


def _short(text: str, n: int = 48) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def run_demo(
    tasks: list[str],
    workers: list[str] | None,
    judge: str,
    policy: str,
    threshold: float | None,
    *,
    pull: bool = True,
) -> int:
    """Print each task's demo (:func:`speculabel.bench.demo.run_demo_task`); the exit status."""
    from rich.table import Table

    from speculabel.bench.demo import SAMPLES, demo_settings, load_sample, run_demo_task
    from speculabel.cascade import ConfigError, make_config
    from speculabel.models import CATALOGUE, is_installed
    from speculabel.models import pull as pull_model

    console = make_console()
    unknown_tasks = [t for t in tasks if t not in SAMPLES]
    if unknown_tasks:
        console.print(f"[red]error:[/] no demo sample for {unknown_tasks}; choose {list(SAMPLES)}")
        return 2
    found = {t: demo_settings(t, workers, judge, policy, threshold, console.print) for t in tasks}
    wanted = {m for s, _ in found.values() for m in [*s["workers"], s["judge"]]}
    needed = sorted(m for m in wanted if m in CATALOGUE and not is_installed(m))
    if needed:
        if not pull:
            console.print(f"[red]error:[/] not installed: {needed}; run speculabel models pull")
            return 2
        for name in needed:
            console.print(f"pulling {name} (once) ...")
            pull_model(name, progress=lambda m: console.print(f"  {m}"))

    for task_name in tasks:
        settings, note = found[task_name]
        try:
            cfg = make_config(settings)
        except ConfigError as e:
            console.print(f"[red]error:[/] {e}")
            return 2
        names = ", ".join(settings["workers"])
        n_items = len(load_sample(task_name)[0])
        console.rule(f"[bold]{task_name}: {n_items} items, workers {names}, judge {cfg.judge}, {cfg.policy}"
                     + (f"@{cfg.threshold:g}" if cfg.threshold is not None else ""))
        if note:
            console.print(f"certified by the bench: {note}")
        with console.status("classifying ...") as status:
            run = run_demo_task(settings, note, say=lambda m: console.print(f"[dim]{m}[/]"),
                                progress=lambda k, n: status.update(f"classifying ... {k}/{n}"))
        table = Table(show_lines=False)
        for col in ("item", "text", "worker votes (p)", "decided by", "label", "gold"):
            table.add_column(col)
        for it, rec in zip(run.items, run.records, strict=True):
            text = " | ".join(_short(v, 30) for v in it.fields.values())
            votes = ", ".join(f"{v.label or 'abstain'} {v.confidence:.2f}" for v in rec.votes)
            style = "green" if rec.label == run.gold[it.id] else "red"
            table.add_row(it.id, _short(text, 50), votes, rec.decided_by or "-",
                          f"[{style}]{rec.label}[/]", run.gold[it.id])
        console.print(table)
        n = len(run.records)
        console.print(
            f"judge-call rate: [bold]{run.judge_calls / n:.0%}[/] ({run.judge_calls}/{n})   "
            f"agreement with the judge: {run.agreement:.0%}   "
            f"accuracy vs gold: cascade {run.accuracy:.0%}, judge alone {run.judge_accuracy:.0%}"
        )
        console.print(
            f"time: cascade [bold]{run.cascade_s:.1f} s[/] ({run.cascade_s / n * 1000:.0f} "
            f"ms/item), judge alone [bold]{run.judge_s:.1f} s[/] ({run.judge_s / n * 1000:.0f} "
            f"ms/item), speedup {run.speedup:.2f}x"
        )
    return 0


def demo(
    task: Annotated[str, typer.Option(help="sentiment, similar-ticket, or all.")] = "all",
    workers: Annotated[
        str | None, typer.Option(help="Worker specs [default: the task's default workers].")
    ] = None,
    judge: Annotated[str, typer.Option(help="Judge spec.")] = DEFAULT_JUDGE,
    policy: Annotated[
        str,
        typer.Option(help="Acceptance rule, or 'certified': the fastest configuration the bench "
                          "certified for the task (its learning workers refitted from the shared "
                          "data) [default: certified, else majority with the default workers]."),
    ] = "certified",
    threshold: Annotated[float | None, typer.Option(help="Threshold for confident-majority.")] = None,
    no_pull: Annotated[bool, typer.Option("--no-pull", help="Do not install missing models.")] = False,
) -> None:
    """Run the cascade on a small built-in sample and compare with the judge alone.

    Pulls the default models first if they are missing (about 2 GB, once).
    """
    tasks = ["sentiment", "similar-ticket"] if task == "all" else [task]
    code = run_demo(tasks, csv_list(workers, "--workers"), judge, policy, threshold,
                    pull=not no_pull)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
