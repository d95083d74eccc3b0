"""The HTTP surface (Starlette on uvicorn) and the whole service's life.

``POST /v1/classify`` ``{"items": [...]}`` -> ``{"records": [...]}`` in request order (the
results file's record fields); ``GET /healthz`` 200 only once every model is loaded (503 while
loading, after a failed load and while stopping); ``GET /metrics`` Prometheus text.  Errors are
JSON ``{"error": {"field": ..., "message": ...}}``.  With an API key, ``/v1/*`` and ``/metrics``
need ``Authorization: Bearer KEY`` (``/healthz`` stays open for load balancers); the key is
compared in constant time and never written anywhere.

SIGTERM (or Ctrl-C): uvicorn stops accepting, lets in-flight requests finish, then the model
thread finishes what is queued, the log gets its ``stop`` line and the process exits 0.
"""

from __future__ import annotations

import asyncio
import hmac
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from speculabel.errors import SpeculabelError
from speculabel.serve.batcher import Batcher, Closed
from speculabel.serve.metrics import Metrics
from speculabel.serve.schema import BadRequest, parse_body
from speculabel.tasks import Task

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from speculabel.cascade.config import CascadeConfig
    from speculabel.serve.audit import AuditSettings


class ServeError(SpeculabelError, ValueError):
    """The service cannot start: the address cannot be listened on."""


@dataclass
class Limits:
    """What one request may carry, and how long the batcher waits to gather requests."""

    max_request_items: int = 256
    max_body_bytes: int = 1 << 20
    max_wait_s: float = 0.01
    max_batch_items: int = 256


@dataclass
class Service:
    task: Task
    batcher: Batcher
    metrics: Metrics
    limits: Limits
    api_key: str | None = None
    describe: dict[str, Any] | None = None


def error(status: int, field: str, message: str, **headers: str) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status,
                        headers=headers or None)


def make_app(svc: Service) -> Starlette:
    """The ASGI app over a started :class:`Batcher`."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def authorised(request: Request) -> bool:
        if svc.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                                  svc.api_key.encode())

    def refused() -> Response:
        return error(401, "authorization", "missing or wrong bearer token",
                     **{"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request) -> bytes:
        limit = svc.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, "body", f"{declared} bytes; at most {limit} per request")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, "body", f"more than {limit} bytes; at most {limit} per request")
            chunks.append(chunk)
        return b"".join(chunks)

    async def classify(request: Request) -> Response:
        t0 = time.perf_counter()
        response = await _classify(request)
        svc.metrics.requests.labels(path="/v1/classify", status=str(response.status_code)).inc()
        if response.status_code == 200:
            svc.metrics.latency.observe(time.perf_counter() - t0)
        return response

    async def _classify(request: Request) -> Response:
        if not authorised(request):
            return refused()
        try:
            items = parse_body(await read_body(request), svc.task, svc.limits.max_request_items)
        except BadRequest as e:
            return JSONResponse(e.to_json(), status_code=e.status)
        if svc.batcher.failed:
            return error(503, "service", f"the models did not load: {svc.batcher.failed}")
        if not items:
            return JSONResponse({"records": []})
        try:
            future = svc.batcher.submit(uuid.uuid4().hex[:16], items)
        except Closed as e:
            return error(503, "service", str(e))
        try:
            records = await asyncio.wrap_future(future)
        except Closed as e:
            return error(503, "service", str(e))
        except Exception as e:
            from speculabel.redact import redact

            return error(500, "service", redact(f"{type(e).__name__}: {e}"))
        return JSONResponse({"records": [r.to_json() for r in records]})

    async def healthz(request: Request) -> Response:
        b = svc.batcher
        if b.failed:
            status, code = {"status": "failed", "error": b.failed}, 503
        elif b.closed:
            status, code = {"status": "stopping"}, 503
        elif b.ready.is_set():
            status, code = {"status": "ready", **(svc.describe or {})}, 200
        else:
            status, code = {"status": "loading"}, 503
        svc.metrics.requests.labels(path="/healthz", status=str(code)).inc()
        return JSONResponse(status, status_code=code)

    async def metrics(request: Request) -> Response:
        if not authorised(request):
            return refused()
        svc.metrics.requests.labels(path="/metrics", status="200").inc()
        return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def http_error(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return error(code, "path" if code in (404, 405) else "service",
                     f"{detail}: {request.method} {request.url.path}")

    return Starlette(routes=[Route("/v1/classify", classify, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"]),
                             Route("/metrics", metrics, methods=["GET"])],
                     exception_handlers={HTTPException: http_error})


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before any model loads (a busy port fails at once)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ServeError(f"--host {host!r}: {e.strerror or e}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_service(cfg: CascadeConfig, task: Task, *, host: str, port: int, log_path: str,
                limits: Limits, audit: AuditSettings | None = None, api_key: str | None = None,
                note: Any = None) -> int:
    """Bind the port and open the log (either refused before anything loads), start loading
    the models, serve until SIGTERM or Ctrl-C; return the exit status (0, or 2 when the models
    did not load)."""
    import uvicorn

    from speculabel.cascade.build import build_cascade
    from speculabel.serve.audit import Audit
    from speculabel.serve.log import ServeLog

    settings = {"config": cfg.model_dump(mode="json"), "host": host, "port": port,
                "audit": None if audit is None else audit.__dict__, "auth": api_key is not None}
    sock = bind(host, port)
    port = sock.getsockname()[1]  # --port 0: the one the system chose
    settings["port"] = port
    log = ServeLog(log_path)
    try:
        log.open(settings)
    except BaseException:
        sock.close()
        raise
    checker = Audit(audit) if audit is not None else None
    if checker is not None and log.last_audit is not None and checker.restore(log.last_audit):
        say(note, f"audit goes on from the log: {checker.snapshot()['audit']['state']}, "
                  f"{checker.seq.n} audited items in the current sequence")
    metrics = Metrics()
    server: uvicorn.Server | None = None

    def stop_on_failure(why: str) -> None:
        say(note, f"the models did not load: {why}")
        if server is not None:
            server.should_exit = True

    batcher = Batcher(lambda: build_cascade(cfg, task=task), log, metrics, checker,
                      max_wait_s=limits.max_wait_s, max_items=limits.max_batch_items,
                      on_failure=stop_on_failure,
                      on_ready=lambda: say(note, f"ready: http://{host}:{port}/v1/classify"))
    describe = {"task": task.name, "workers": list(cfg.workers), "judge": cfg.judge,
                "policy": cfg.policy, "threshold": cfg.threshold}
    app = make_app(Service(task, batcher, metrics, limits, api_key, describe))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it stopped on once it has stopped; with this no-op handler
    # in place, a SIGTERM ends in a clean exit 0 after the drain below.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    batcher.start()
    say(note, f"serving {task.name} on http://{host}:{port} (log: {log_path}); loading models")
    try:
        server.run(sockets=[sock])
    finally:
        batcher.close()
        log.close()
        signal.signal(signal.SIGTERM, previous)
    if batcher.failed:
        return 2
    say(note, f"stopped; {log.next_seq} items in the log")
    return 0


def say(note: Any, message: str) -> None:
    if note is not None:
        note(message)
    else:
        print(message, file=sys.stderr, flush=True)
