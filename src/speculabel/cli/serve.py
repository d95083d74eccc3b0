"""``speculabel serve``: the cascade behind an HTTP endpoint, its certificate checked as it serves.

Settings, the task, every backend, the audit settings, the API key, the port and the log are
checked before the first model loads; a problem is one line and exit status 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from speculabel.cli.common import QuietOpt, csv_list, echo_note, fail
from speculabel.policy import POLICIES


def serve(
    log: Annotated[
        Path, typer.Option("--log", show_default=False,
                           help="Append-only JSON Lines log of every answered item (exactly once, "
                                "fsynced before the answer is sent); a restart with the same log "
                                "goes on.")],
    config: Annotated[
        Path | None, typer.Option(help="cascade.toml (calibrate writes one; flags override it).")
    ] = None,
    task: Annotated[str | None, typer.Option(help="Built-in task or a task TOML file "
                                                  "[default: sentiment].")] = None,
    workers: Annotated[str | None, typer.Option(help="One to three comma-separated model specs "
                                                     "[default: the task's].")] = None,
    judge: Annotated[str | None, typer.Option(help="Judge model spec.")] = None,
    policy: Annotated[str | None, typer.Option(
        help=f"Acceptance rule: {', '.join(POLICIES)} [default: majority].")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Confidence threshold (confident-majority and weighted).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Items per model batch "
                                                               "[default: 8].")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default; give an "
                                           "API key before listening elsewhere).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key_env: Annotated[str | None, typer.Option(
        help="Name of an environment variable holding the API key: then /v1/* and /metrics "
             "need 'Authorization: Bearer KEY'. The key is never logged.")] = None,
    max_wait_ms: Annotated[float, typer.Option(
        min=0, help="How long the first waiting request waits for others to join its batch.")] = 10.0,
    max_batch_items: Annotated[int, typer.Option(
        min=1, help="Items gathered into one cascade call at most.")] = 256,
    max_request_items: Annotated[int, typer.Option(
        min=1, help="Items per request at most (more: 413).")] = 256,
    max_body_bytes: Annotated[int, typer.Option(
        min=1, help="Bytes per request body at most (more: 413).")] = 1 << 20,
    audit_target: Annotated[float | None, typer.Option(
        help="Agreement with the judge to keep checking [default: the config's [certificate] "
             "target; none: no audit].")] = None,
    audit_scope: Annotated[str | None, typer.Option(
        help="dataset (judge-decided items agree) or workers (the workers' share) [default: "
             "the certificate's, else dataset].")] = None,
    audit_rate: Annotated[float, typer.Option(
        help="Share of answered items the judge also labels, off the request path.")] = 0.05,
    audit_alpha: Annotated[float | None, typer.Option(
        help="Level of the anytime-valid bounds [default: the certificate's delta, else 0.05].")
    ] = None,
    fallback_to_judge: Annotated[bool, typer.Option(
        "--fallback-to-judge", help="When the audit refutes the certificate, send every item "
                                    "to the judge until it is re-certified.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the audit draw [default: random].")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Serve the cascade over HTTP: POST /v1/classify, GET /healthz, GET /metrics.

    Concurrent requests are gathered into the cascade's batches; every answered item is in the
    log exactly once; a random audit share also goes to the judge and /metrics shows the
    running agreement with its anytime-valid bounds. SIGTERM stops accepting, finishes what is
    in flight, flushes and exits 0.
    """
    from speculabel.backends.base import BackendError
    from speculabel.cascade.build import check_setup
    from speculabel.cascade.config import ConfigError, make_config, read_config_data
    from speculabel.serve.app import Limits, run_service
    from speculabel.tasks import TaskError, load_task

    overrides: dict[str, Any] = {"task": task, "workers": csv_list(workers, "--workers"),
                                 "judge": judge, "policy": policy, "threshold": threshold,
                                 "batch_size": batch_size}
    try:
        data = read_config_data(config) if config else {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        cfg = make_config(data, f"{config} (with the flags)" if config else "settings")
        if cfg.adaptive:
            raise ConfigError(f"{config}: an adaptive run's config cannot be served; serve the "
                              "config calibrate wrote")
        the_task = load_task(cfg.task)
        check_setup(cfg, the_task)
        audit = _audit_settings(cfg, audit_target, audit_scope, audit_rate, audit_alpha,
                                fallback_to_judge, seed)
    except (ConfigError, TaskError, BackendError, ValueError) as e:
        raise fail(str(e)) from None
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "").strip()
        if not api_key:
            raise fail(f"--api-key-env {api_key_env}: the environment variable is not set or empty")
    elif host not in ("127.0.0.1", "localhost", "::1"):
        echo_note(f"warning: listening on {host} without an API key (--api-key-env)", quiet)
    limits = Limits(max_request_items, max_body_bytes, max_wait_ms / 1000.0, max_batch_items)
    code = run_service(cfg, the_task, host=host, port=port, log_path=str(log), limits=limits,
                       audit=audit, api_key=api_key, note=lambda m: echo_note(m, quiet))
    if code:
        raise typer.Exit(code)


def _audit_settings(cfg: Any, target: float | None, scope: str | None, rate: float,
                    alpha: float | None, fallback: bool, seed: int | None) -> Any:
    """The audit to run, or None: no target (flag or certificate), rate 0, or no judge."""
    from speculabel.serve.audit import AuditSettings

    cert = cfg.certificate or {}
    target = target if target is not None else cert.get("target")
    if target is None or rate == 0:
        if fallback:
            raise ValueError("--fallback-to-judge needs an audit: give --audit-target (or a "
                             "config with a [certificate]) and a positive --audit-rate")
        return None
    if cfg.judge is None:
        raise ValueError("the audit asks the judge: give --judge, or leave out --audit-target")
    scope = scope or cert.get("scope") or "dataset"
    if scope not in ("dataset", "workers"):
        raise ValueError(f"--audit-scope must be dataset or workers, got {scope!r} (a gold "
                         "certificate cannot be checked without gold labels: give --audit-scope)")
    alpha = alpha if alpha is not None else float(cert.get("delta", 0.05))
    settings = AuditSettings(float(target), scope, rate, alpha, fallback, seed)  # type: ignore[arg-type]
    settings.check()
    return settings


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
