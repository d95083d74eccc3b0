"""A fake OpenAI-compatible endpoint for tests of pure logic and of the command line: a real HTTP
server on 127.0.0.1 whose answers each test sets (log-probabilities, delays, error statuses).
A pytest plugin: ``pytest_plugins = ["fake_openai"]`` gives the ``fake`` fixture."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class Fake:
    """Behaviour of the fake endpoint, changed by each test."""

    def __init__(self) -> None:
        self.models = ["m1", "m2"]
        self.owned_by = "me"
        self.top: dict[str, float] | None = {
            "negative": -2.0,
            "neutral": -1.0,
            "positive": -0.5,
            "The": -0.1,
        }
        self.choice_text = "positive"
        self.delay_s = 0.0
        self.status: list[int] = []  # statuses to answer before succeeding
        self.retry_after: str | None = None
        self.error_body: str | None = None  # the message of error answers (default: the status)
        #: answer by the item: the prompt's last user message -> top log-probabilities
        self.top_for: Any = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()


def _handler(fake: Fake) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def do_GET(self) -> None:
            fake.auth.append(self.headers.get("Authorization"))
            if self.path != "/v1/models":
                self._send(404, {"detail": "Not Found"})
                return
            self._send(
                200,
                {
                    "object": "list",
                    "data": [{"id": m, "object": "model", "owned_by": fake.owned_by} for m in fake.models],
                },
            )

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(n) or b"{}")
            with fake.lock:
                fake.requests.append(body)
                fake.auth.append(self.headers.get("Authorization"))
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                status = fake.status.pop(0) if fake.status else 200
            try:
                time.sleep(fake.delay_s)
                if status != 200:
                    hdr = {"Retry-After": fake.retry_after} if fake.retry_after else {}
                    msg = fake.error_body or f"status {status}"
                    self._send(status, {"error": {"message": msg}}, hdr)
                    return
                self._send(200, self._answer(body))
            finally:
                with fake.lock:
                    fake.in_flight -= 1

        def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
            chat = self.path.endswith("/chat/completions")
            constrained = any(k in body for k in ("grammar", "structured_outputs", "guided_choice", "response_format"))
            text = fake.choice_text if constrained or body.get("max_tokens", 16) > 1 else "x"
            if "response_format" in body:
                text = json.dumps({"label": fake.choice_text})
            lp: Any = None
            top = fake.top
            if fake.top_for is not None and body.get("messages"):
                top = fake.top_for(str(body["messages"][-1].get("content", "")))
            if body.get("logprobs") and top is not None:
                if chat:
                    lp = {
                        "content": [
                            {
                                "token": text,
                                "logprob": -0.3,
                                "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()],
                            }
                        ]
                    }
                else:
                    lp = {
                        "tokens": [text],
                        "token_logprobs": [-0.3],
                        "text_offset": [0],
                        "top_logprobs": [{(" " + t if t[0].islower() else t): v for t, v in top.items()}],
                    }
            choice: dict[str, Any] = {"index": 0, "logprobs": lp, "finish_reason": "length"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            return {"id": "x", "object": "chat.completion", "choices": [choice]}

    return H


@pytest.fixture()
def fake() -> Iterator[tuple[Fake, str]]:
    f = Fake()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(f))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield f, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()
