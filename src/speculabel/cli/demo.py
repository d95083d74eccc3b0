"""``speculabel demo``: the cascade on a built-in sample, timed against the judge alone.

The sample (30 short reviews, 20 support-ticket pairs) was written for this project; it carries
gold labels so the demo can show accuracy next to the judge-call rate and the time.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Annotated, Any

import typer

from speculabel.cascade.config import DEFAULT_JUDGE
from speculabel.cli.common import console as make_console
from speculabel.cli.common import csv_list
from speculabel.records import Item, Record

SAMPLES = {"sentiment": "demo_sentiment.jsonl", "similar-ticket": "demo_tickets.jsonl"}


def load_sample(task_name: str) -> tuple[list[Item], dict[str, str]]:
    path = resources.files("speculabel") / "data" / SAMPLES[task_name]
    items: list[Item] = []
    gold: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        fields = {k: v for k, v in row.items() if k not in ("id", "gold")}
        items.append(Item(row["id"], fields))
        gold[row["id"]] = row["gold"]
    return items, gold


def _short(text: str, n: int = 48) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


CERTIFIED = "demo.toml"


def certified_setup(task_name: str, say: Any) -> tuple[dict[str, Any], str] | None:
    """The fastest configuration the bench certified for this task (``data/demo.toml``), with
    its learning workers fitted again, exactly as the bench fitted them: on the gold labels of
    the same fit share (the items of ``fit.data`` outside the bench items ``fit.exclude``; needs
    ``../shared/data``; kept under ``$SPECULABEL_HOME/demo``).  None when there is none or the
    data is absent."""
    import tomllib

    from speculabel.bench.core import outside_items
    from speculabel.certify.workflow import fit_learner, learning
    from speculabel.io.datasets import DataMissing, from_spec
    from speculabel.io.paths import home_dir
    from speculabel.io.votes import item_key
    from speculabel.tasks import load_task

    raw = (resources.files("speculabel") / "data" / CERTIFIED).read_text(encoding="utf-8")
    entry = tomllib.loads(raw).get(task_name)
    if entry is None:
        return None
    models: dict[str, dict[str, Any]] = {}
    learners = [w for w in entry["workers"] if learning(w)]
    if learners:
        fit = entry["fit"]
        task = load_task(task_name)
        for spec in learners:
            folder = home_dir() / "demo" / task_name / spec.replace(":", "-")
            if not (folder / "meta.json").exists():
                try:
                    bench = {item_key(task, it) for it in from_spec(fit["exclude"]).items}
                    pool = outside_items(task, fit["data"], fit["items"], bench)
                except DataMissing as e:
                    say(f"[yellow]the certified configuration refits {spec} from the shared "
                        f"data, which is absent ({e}); showing the default workers[/]")
                    return None
                say(f"[dim]fitting {spec} on {len(pool)} gold labels of {fit['data']} "
                    "(once)[/]")
                worker = fit_learner(spec, task, [it for it, _ in pool], [g for _, g in pool],
                                     folder)
                worker.close()
            models[spec] = {"directory": str(folder), "frozen": True}
    cfg = {"task": task_name, "workers": entry["workers"], "judge": entry["judge"],
           "policy": "confident-majority", "threshold": entry["threshold"], "models": models,
           "batch_size": 1}
    return cfg, entry["certificate"]


def run_demo(
    tasks: list[str],
    workers: list[str] | None,
    judge: str,
    policy: str,
    threshold: float | None,
    *,
    pull: bool = True,
) -> int:
    from rich.table import Table

    from speculabel.backends.capabilities import warm_up
    from speculabel.cascade import ConfigError, build_cascade, default_workers, make_config
    from speculabel.models import CATALOGUE, is_installed
    from speculabel.models import pull as pull_model
    from speculabel.tasks import load_task

    console = make_console()
    unknown_tasks = [t for t in tasks if t not in SAMPLES]
    if unknown_tasks:
        console.print(f"[red]error:[/] no demo sample for {unknown_tasks}; choose {list(SAMPLES)}")
        return 2
    settings: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    for t in tasks:
        found = None if workers or policy != "certified" else certified_setup(t, console.print)
        if found is not None:
            settings[t], notes[t] = found
        else:
            rule = "majority" if policy == "certified" else policy
            settings[t] = {"task": t, "workers": workers or default_workers(t), "judge": judge,
                           "policy": rule, "threshold": threshold, "batch_size": 1}
    all_workers = {t: list(settings[t]["workers"]) for t in tasks}
    wanted = {m for ws in all_workers.values() for m in ws} | {s["judge"] for s in settings.values()}
    needed = sorted(m for m in wanted if m in CATALOGUE and not is_installed(m))
    if needed:
        if not pull:
            console.print(f"[red]error:[/] not installed: {needed}; run speculabel models pull")
            return 2
        for name in needed:
            console.print(f"pulling {name} (once) ...")
            pull_model(name, progress=lambda m: console.print(f"  {m}"))

    for task_name in tasks:
        task = load_task(task_name)
        items, gold = load_sample(task_name)
        try:
            cfg = make_config(settings[task_name])
        except ConfigError as e:
            console.print(f"[red]error:[/] {e}")
            return 2
        names = ", ".join(all_workers[task_name])
        console.rule(f"[bold]{task_name}: {len(items)} items, workers {names}, judge {cfg.judge}, "
                     f"{cfg.policy}" + (f"@{cfg.threshold:g}" if cfg.threshold is not None else ""))
        if task_name in notes:
            console.print(f"certified by the bench: {notes[task_name]}")
        cascade = build_cascade(cfg, task=task, progress=lambda m: console.print(f"[dim]{m}[/]"))
        try:
            # as the bench measures: both timings start warm, with empty per-text caches
            warm_up([*cascade.workers, *([cascade.judge] if cascade.judge else [])], task, items)
            t0 = time.perf_counter()
            records: list[Record] = []
            with console.status("classifying ...") as status:
                for rec in cascade.classify_iter(items):
                    records.append(rec)
                    status.update(f"classifying ... {len(records)}/{len(items)}")
            cascade_s = time.perf_counter() - t0
            # the judge alone on every item, same process, same loaded model, no cache
            assert cascade.judge is not None
            t1 = time.perf_counter()
            with console.status("judge alone on every item ..."):
                judge_votes = cascade.judge.score(task, items)
            judge_s = time.perf_counter() - t1
        finally:
            cascade.close()

        table = Table(show_lines=False)
        table.add_column("item")
        table.add_column("text")
        table.add_column("worker votes (p)")
        table.add_column("decided by")
        table.add_column("label")
        table.add_column("gold")
        for it, rec in zip(items, records, strict=True):
            text = " | ".join(_short(v, 30) for v in it.fields.values())
            votes = ", ".join(
                f"{v.label or 'abstain'} {v.confidence:.2f}" for v in rec.votes
            )
            style = "green" if rec.label == gold[it.id] else "red"
            table.add_row(
                it.id, _short(text, 50), votes, rec.decided_by or "-",
                f"[{style}]{rec.label}[/]", gold[it.id],
            )
        console.print(table)
        st = cascade.stats
        n = len(records)
        acc = sum(r.label == gold[it.id] for it, r in zip(items, records, strict=True)) / n
        j_acc = sum(v.label == gold[it.id] for it, v in zip(items, judge_votes, strict=True)) / n
        agree = sum(
            r.label == v.label for r, v in zip(records, judge_votes, strict=True)
        ) / n
        console.print(
            f"judge-call rate: [bold]{st.judge_rate:.0%}[/] ({st.judge_calls}/{n})   "
            f"agreement with the judge: {agree:.0%}   "
            f"accuracy vs gold: cascade {acc:.0%}, judge alone {j_acc:.0%}"
        )
        console.print(
            f"time: cascade [bold]{cascade_s:.1f} s[/] ({cascade_s / n * 1000:.0f} ms/item), "
            f"judge alone [bold]{judge_s:.1f} s[/] ({judge_s / n * 1000:.0f} ms/item), "
            f"speedup {judge_s / cascade_s:.2f}x"
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
