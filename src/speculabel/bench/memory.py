"""Memory flat in the input's length: ``speculabel classify`` over inputs of growing size, each
run's peak resident memory (RSS) measured.

Each size gets a JSON Lines input made from the TweetEval texts (``../shared/data``, cycled,
every row its own id ``t0`` ...), and ``classify`` runs on it as a child process with a cascade
that needs no LLM (by default the VADER lexicon as the only model, ``--judge-only``), no vote
store, batches of 512.  The child's peak RSS is its own ``ru_maxrss`` (``os.wait4``: per child,
not the maximum over all children); the output is then read back to check that every id is
there exactly once.  Seconds are reported to show what a run costs, not as a speed claim.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: the model flags of the default run: VADER alone, as the judge of every item (no LLM)
DEFAULT_MODELS = ("--judge-only", "--judge", "vader")


def tweet_texts() -> list[str]:
    """The TweetEval texts of the shared data (test, then validation)."""
    from speculabel.io.datasets import shared_data_dir

    d = shared_data_dir("tweeteval-sentiment")
    out: list[str] = []
    for name in ("test_text.txt", "val_text.txt"):
        out.extend(t.strip() for t in (d / name).read_text(encoding="utf-8").splitlines())
    return [t for t in out if t]


def write_input(path: Path, rows: int, texts: Sequence[str]) -> None:
    """``rows`` JSON lines ``{"id": "t<i>", "text": ...}``, the texts cycled."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            fh.write(json.dumps({"id": f"t{i}", "text": texts[i % len(texts)]},
                                ensure_ascii=False) + "\n")


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, float, float]:
    """Run ``cmd``; (exit status, seconds, the child's own peak RSS in MB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()  # small: --quiet; read before waiting, so the pipe never fills
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: "
                           f"{err.decode(errors='replace')[-2000:]}")
    return proc.returncode, seconds, usage.ru_maxrss / 1024  # kB on Linux


def check_output(path: Path, rows: int) -> int:
    """Every id ``t0`` .. ``t<rows-1>`` exactly once (else ValueError); the records read."""
    seen: set[str] = set()
    count = 0
    with path.open("rb") as fh:
        for line in fh:
            rid = json.loads(line)["id"]
            if rid in seen:
                raise ValueError(f"{path}: id {rid} twice")
            seen.add(rid)
            count += 1
    missing = rows - len(seen & {f"t{i}" for i in range(rows)})
    if count != rows or missing:
        raise ValueError(f"{path}: {count} records for {rows} rows ({missing} ids missing)")
    return count


def slopes(runs: list[dict[str, Any]]) -> None:
    """Each run's ``mb_per_100k_rows``: the growth of peak RSS from the smallest run, per
    100,000 rows more (None for the smallest)."""
    base = min(runs, key=lambda r: r["rows"])
    for r in runs:
        extra = r["rows"] - base["rows"]
        r["mb_per_100k_rows"] = (round((r["peak_rss_mb"] - base["peak_rss_mb"]) * 1e5 / extra, 3)
                                 if extra else None)


def run_memory_bench(sizes: Sequence[int], *, workdir: Path | None = None,
                     models: Sequence[str] = DEFAULT_MODELS, batch_size: int = 512,
                     note: Callable[[str], Any] = print) -> dict[str, Any]:
    """Classify an input of each size in a child process; the runs and their peak RSS."""
    texts = tweet_texts()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="speculabel-memory-", dir=workdir) as tmp:
        for rows in sizes:
            inp, out = Path(tmp) / f"in-{rows}.jsonl", Path(tmp) / f"out-{rows}.jsonl"
            write_input(inp, rows, texts)
            cmd = [sys.executable, "-m", "speculabel", "classify", str(inp), "-o", str(out),
                   "--id-column", "id", *models, "--no-votes", "--quiet",
                   "--batch-size", str(batch_size)]
            note(f"{rows:,} rows: {' '.join(cmd[1:])}")
            _, seconds, rss = run_child(cmd)
            records = check_output(out, rows)
            runs.append({"rows": rows, "records": records, "seconds": round(seconds, 1),
                         "peak_rss_mb": round(rss, 1), "input_mb": round(inp.stat().st_size / 1e6, 1)})
            inp.unlink()
            out.unlink()
    slopes(runs)
    return {"what": "peak RSS of speculabel classify by input rows", "models": list(models),
            "batch_size": batch_size, "python": sys.version.split()[0], "runs": runs}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'rows':>10}  {'seconds':>8}  {'peak RSS MB':>11}  {'MB per 100k rows':>16}"]
    for r in result["runs"]:
        slope = "-" if r["mb_per_100k_rows"] is None else f"{r['mb_per_100k_rows']:.2f}"
        lines.append(f"{r['rows']:>10,}  {r['seconds']:>8.1f}  {r['peak_rss_mb']:>11.1f}  "
                     f"{slope:>16}")
    lines.append("MB per 100k rows: peak RSS growth over the smallest run, per 100,000 more rows")
    return "\n".join(lines)
