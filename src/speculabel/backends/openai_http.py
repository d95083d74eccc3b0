"""Models behind OpenAI-compatible servers: vLLM, Ollama, llama.cpp server, hosted APIs.

Spec: ``openai:MODEL@BASE_URL``, e.g. ``openai:qwen2.5-0.5b@http://127.0.0.1:8081/v1``.

How a vote is read from the endpoint (``method``, chosen once per endpoint, recorded on every
vote):

``logprobs``
    One request per item for the *first answer token* with ``max_tokens=1``, ``temperature=0``
    and the top-K log-probabilities (chat: ``logprobs=true, top_logprobs=K``; completions:
    ``logprobs=K``).  Each label is scored by the log-probability of the first token of its
    answer text (the longest returned token that is a prefix of the answer), and the label
    log-probabilities are renormalised over the label set.  When every answer is one token
    (negative/neutral/positive and yes/no are, for every catalogue model) this is exactly what
    the in-process backend computes, so the votes agree up to numerical noise; for longer
    answers with distinct first tokens the HTTP vote scores the first token only, where the
    in-process backend scores the whole answer.  A label whose first token is not among the top K gets the K-th
    log-probability (an upper bound; K defaults to 20, the OpenAI and vLLM maximum; llama.cpp
    accepts more).  Labels whose answers share their first token cannot be told apart this
    way: in ``prompt="completion"`` mode each label's whole continuation is then scored with
    ``echo`` (one request per label); in chat mode the item abstains with that reason.
``choice``
    Constrained decoding to exactly one answer (llama.cpp ``grammar``, vLLM
    ``structured_outputs``/``guided_choice``, or an OpenAI ``json_schema`` with an enum).  The
    vote's confidence is the probability the endpoint reports for the generated answer when it
    reports log-probabilities, otherwise there is none (``probs`` is empty: the vote counts for
    majority rules, but never passes a confidence threshold).
``text``
    Free text, parsed strictly (the whole answer must be one label); only when asked for.

``method="auto"`` probes the endpoint with the first item: ``logprobs`` when it returns
log-probabilities, else ``choice``.  It never falls back to ``text``.

Faults: every request has a timeout; connection errors, timeouts, 429 and 502/503/504 are
retried with jittered exponential backoff (429 honours ``Retry-After``), capped in attempts and
in total time.  When the retries are spent the vote is an abstention whose reason starts with
``unavailable:``; the cascade leaves such judge items undecided for the next run.  After one
item finds the endpoint down, the following requests are tried once (no retries) until one
succeeds, so a dead server costs seconds, not minutes.

Concurrency: requests run on one private asyncio loop in a background thread (so ``score``
works whether or not the caller's thread runs an event loop); at most ``max_in_flight``
requests per base URL are in flight, shared by every backend that uses that URL.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from speculabel.backends.base import Backend, BackendError
from speculabel.records import Item, Vote, normalise_logprobs
from speculabel.task import Task

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable:"
METHODS = ("auto", "logprobs", "choice", "text")
PROMPTS = ("chat", "completion")
CHOICE_FORMATS = ("auto", "grammar", "structured_outputs", "guided_choice", "json_schema")
_RETRY_STATUS = {429, 502, 503, 504}
T = TypeVar("T")


# ------------------------------------------------------------------------ spec parsing
def parse_spec(spec: str) -> tuple[str, str]:
    """``openai:MODEL@BASE_URL`` -> (model, base_url without a trailing slash)."""
    if not spec.startswith("openai:"):
        raise BackendError(f"not an OpenAI endpoint spec: {spec!r} (expected openai:MODEL@URL)")
    rest = spec[len("openai:") :]
    model, sep, url = rest.rpartition("@")
    if not sep or not model or not url:
        raise BackendError(
            f"bad model spec {spec!r}: expected openai:MODEL@BASE_URL, "
            "e.g. openai:qwen2.5-0.5b@http://127.0.0.1:8081/v1"
        )
    if not url.startswith(("http://", "https://")):
        raise BackendError(f"bad model spec {spec!r}: the base URL must start with http(s)://")
    return model, url.rstrip("/")


# ------------------------------------------------------------------------ private loop
class _LoopThread:
    """One asyncio loop in a daemon thread, shared by every HTTP backend of the process."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="speculabel-http", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("OpenAIBackend.score called from its own event loop; use ascore")
        return self.submit(coro).result()


# per base URL: the in-flight limit (smallest configured) and its semaphore (made on the loop)
_LIMITS: dict[str, int] = {}
_SEMAPHORES: dict[str, asyncio.Semaphore] = {}


def _semaphore(base_url: str) -> asyncio.Semaphore:
    sem = _SEMAPHORES.get(base_url)
    if sem is None:
        sem = _SEMAPHORES[base_url] = asyncio.Semaphore(_LIMITS.get(base_url, 4))
    return sem


# ------------------------------------------------------------------------ errors
class _Unavailable(Exception):
    """The endpoint could not be reached or stayed overloaded for every attempt."""


class _Failed(Exception):
    """The endpoint answered, but this request failed (bad request, server error)."""


@dataclass
class _Scored:
    probs: dict[str, float]
    method: str
    label: str | None = None  # set for choice/text votes (probs may then be empty)


class _Abstain(Exception):
    """The endpoint answered, but no label can be read from the answer."""


# ------------------------------------------------------------------------ the backend
class OpenAIBackend(Backend):
    """A model served over an OpenAI-compatible HTTP API (see the module docstring)."""

    def __init__(
        self,
        spec: str,
        *,
        api_key_env: str | None = None,
        max_in_flight: int = 4,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        retry_budget_s: float = 60.0,
        method: str = "auto",
        prompt: str = "chat",
        choice_format: str = "auto",
        top_logprobs: int = 20,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_text_tokens: int = 16,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.model, self.base_url = parse_spec(spec)
        if method not in METHODS:
            raise BackendError(f"{spec}: unknown method {method!r}; choose one of {METHODS}")
        if prompt not in PROMPTS:
            raise BackendError(f"{spec}: unknown prompt {prompt!r}; choose one of {PROMPTS}")
        if choice_format not in CHOICE_FORMATS:
            raise BackendError(f"{spec}: unknown choice_format {choice_format!r}; choose one of {CHOICE_FORMATS}")
        if max_in_flight < 1:
            raise BackendError(f"{spec}: max_in_flight must be >= 1")
        if top_logprobs < 1:
            raise BackendError(f"{spec}: top_logprobs must be >= 1")
        self.api_key_env = api_key_env
        self._api_key: str | None = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise BackendError(f"{spec}: the environment variable {api_key_env} (api_key_env) is not set")
            self._api_key = key
        self.max_in_flight = int(max_in_flight)
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.retry_budget_s = float(retry_budget_s)
        self.requested_method = method
        self.prompt = prompt
        self.requested_choice_format = choice_format
        self.top_logprobs = int(top_logprobs)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_text_tokens = int(max_text_tokens)
        self.extra_body = dict(extra_body or {})
        _LIMITS[self.base_url] = min(_LIMITS.get(self.base_url, self.max_in_flight), self.max_in_flight)
        # resolved lazily
        self.method: str | None = None if method == "auto" else method
        self.choice_format: str | None = None if choice_format == "auto" else choice_format
        self.server_models: list[dict[str, Any]] | None = None
        self._client: httpx.AsyncClient | None = None
        self._down = False
        self._endpoint_logprobs: bool | None = None
        self._resolve_lock: asyncio.Lock | None = None
        self._requests = 0

    # -------------------------------------------------------------- identity
    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend({self.spec!r}, method={self.method or self.requested_method!r})"

    def fingerprint(self) -> str:
        """``openai:MODEL@URL`` plus the model root the server reports, prompt mode and method."""
        self.check()
        fp = f"openai:{self.model}@{self.base_url}"
        root = self._served_root()
        if root and root != self.model:
            fp += f"#{root}"
        if self.prompt != "chat":
            fp += f";prompt={self.prompt}"
        if self.requested_method != "auto":
            fp += f";method={self.requested_method}"
        return fp

    def _served_root(self) -> str | None:
        for m in self.server_models or []:
            if m.get("id") == self.model:
                root = m.get("root")
                return str(root) if root else None
        return None

    # -------------------------------------------------------------- public API
    def check(self) -> None:
        """Fail early and clearly: the URL answers, the key works, the model is served.

        Runs once (the CLI calls it at start-up; otherwise the first ``score`` does).
        """
        if self.server_models is None:
            _LoopThread.get().run(self._check())

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        if not items:
            return []
        self.check()
        return _LoopThread.get().run(self._score_all(task, items))

    async def ascore(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        """``score`` for callers that run their own event loop."""
        if self.server_models is None:
            await asyncio.wrap_future(_LoopThread.get().submit(self._check()))
        return await asyncio.wrap_future(_LoopThread.get().submit(self._score_all(task, items)))

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            lt = _LoopThread.get()
            try:
                lt.submit(client.aclose()).result(timeout=5)
            except Exception as e:  # closing must never mask the real outcome
                log.debug("closing the HTTP client failed: %s", e)

    # -------------------------------------------------------------- plumbing
    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self._api_key:
            h["Authorization"] = f"Bearer {self._api_key}"
        return h

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=max(10, 2 * self.max_in_flight)),
                headers=self._headers(),
                follow_redirects=True,
            )
        return self._client

    async def _check(self) -> None:
        import httpx

        url = f"{self.base_url}/models"
        wait = max(self.timeout_s, 10.0)  # listing models is cheap; a busy server may queue it
        try:
            resp = await self._get_client().get(url, timeout=wait)
        except httpx.TimeoutException as e:
            raise BackendError(f"{self.spec}: {url} did not answer within {wait:g} s") from e
        except httpx.TransportError as e:
            raise BackendError(
                f"{self.spec}: cannot reach {self.base_url} ({type(e).__name__}: {e}). "
                "Is the server running, and is this its OpenAI base URL (usually ending in /v1)?"
            ) from e
        if resp.status_code in (401, 403):
            hint = (
                f"check the key in ${self.api_key_env}"
                if self.api_key_env
                else "set api_key_env to the name of the environment variable holding the key"
            )
            raise BackendError(f"{self.spec}: {url} refused the request (HTTP {resp.status_code}): {hint}")
        if resp.status_code == 404:
            raise BackendError(
                f"{self.spec}: {url} does not exist (HTTP 404): is {self.base_url} the server's "
                "OpenAI-compatible base URL? It usually ends in /v1."
            )
        if resp.status_code != 200:
            raise BackendError(f"{self.spec}: {url} answered HTTP {resp.status_code}: {_snippet(resp.text)}")
        try:
            data = resp.json()
            models = [m for m in data["data"] if isinstance(m, dict) and "id" in m]
        except (ValueError, KeyError, TypeError) as e:
            raise BackendError(
                f"{self.spec}: {url} is not an OpenAI-compatible model list: {_snippet(resp.text)}"
            ) from e
        ids = [str(m["id"]) for m in models]
        if self.model not in ids:
            raise BackendError(
                f"{self.spec}: model {self.model!r} is not served at {self.base_url}; "
                f"it serves: {', '.join(ids) or '(nothing)'}"
            )
        self.server_models = models
        if self.choice_format is None:
            owner = next((str(m.get("owned_by", "")) for m in models if m["id"] == self.model), "")
            self.choice_format = {
                "vllm": "structured_outputs",
                "me": "grammar",  # llama-cpp-python's server
                "llamacpp": "grammar",  # llama.cpp's own server
            }.get(owner, "json_schema")

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; raises _Unavailable (endpoint down) or _Failed (this request)."""
        import httpx

        url = f"{self.base_url}{path}"
        client = self._get_client()
        sem = _semaphore(self.base_url)
        t_end = time.monotonic() + self.retry_budget_s
        attempts = 1 if self._down else self.max_retries + 1
        last = ""
        server_errors = tried = 0
        for attempt in range(1, attempts + 1):
            tried = attempt
            retry_after: float | None = None
            try:
                async with sem:
                    self._requests += 1
                    resp = await client.post(url, json=body)
            except httpx.TimeoutException:
                last = f"no answer from {url} within {self.timeout_s:g} s"
            except httpx.TransportError as e:
                last = f"cannot reach {url} ({type(e).__name__}: {e})"
            else:
                if resp.status_code == 200:
                    self._down = False
                    try:
                        out: dict[str, Any] = resp.json()
                    except ValueError as e:
                        raise _Failed(f"{url} answered with invalid JSON: {_snippet(resp.text)}") from e
                    return out
                if resp.status_code == 429:
                    retry_after = _retry_after(resp.headers.get("retry-after"))
                    last = f"rate limited by {url} (HTTP 429)"
                elif resp.status_code in _RETRY_STATUS:
                    last = f"{url} answered HTTP {resp.status_code}: {_snippet(resp.text)}"
                elif resp.status_code >= 500:
                    server_errors += 1
                    last = f"{url} answered HTTP {resp.status_code}: {_snippet(resp.text)}"
                else:
                    raise _Failed(f"HTTP {resp.status_code} from {url}: {_snippet(resp.text)}")
            if attempt == attempts:
                break
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
            delay = random.uniform(delay / 2, delay)  # jitter: spread retries of many requests
            if retry_after is not None:
                delay = max(delay, retry_after)
            if time.monotonic() + delay > t_end:
                last += f"; retry budget of {self.retry_budget_s:g} s spent"
                break
            await asyncio.sleep(delay)
        if server_errors == tried:  # it answered every time: this request is the problem
            raise _Failed(f"{last} ({tried} attempt(s))")
        self._down = True
        raise _Unavailable(f"{last} ({tried} attempt(s))")

    # -------------------------------------------------------------- scoring
    async def _score_all(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        if self._resolve_lock is None:
            self._resolve_lock = asyncio.Lock()
        first: Vote | None = None
        if self.method is None:  # resolve "auto" with one item before sending the others
            async with self._resolve_lock:
                if self.method is None:
                    first = await self._vote(task, items[0], probe=True)
        rest = items[1:] if first is not None else items
        # still unresolved (endpoint down): every item probes for itself
        votes = list(await asyncio.gather(*(self._vote(task, it, probe=self.method is None) for it in rest)))
        return [first, *votes] if first is not None else votes

    async def _vote(self, task: Task, item: Item, *, probe: bool = False) -> Vote:
        t0 = time.perf_counter()
        method = self.method or "logprobs"
        try:
            if probe:
                scored = await self._probe(task, item)
            elif method == "logprobs":
                scored = await self._score_logprobs(task, item)
            elif method == "choice":
                scored = await self._score_choice(task, item)
            else:
                scored = await self._score_text(task, item)
        except _Unavailable as e:
            return Vote.abstain(self.spec, f"{UNAVAILABLE} {e}", latency_s=time.perf_counter() - t0, method=method)
        except (_Failed, _Abstain) as e:
            return Vote.abstain(self.spec, str(e), latency_s=time.perf_counter() - t0, method=self.method or method)
        dt = time.perf_counter() - t0
        if scored.label is not None:
            return Vote(self.spec, scored.label, scored.probs, dt, scored.method, None, item.truncated)
        return Vote.from_probs(self.spec, scored.probs, latency_s=dt, method=scored.method, truncated=item.truncated)

    async def _probe(self, task: Task, item: Item) -> _Scored:
        """Resolve ``method="auto"`` with the first item: log-probabilities if the endpoint has
        them, else constrained choice.  An unreachable endpoint leaves it unresolved."""
        try:
            data = await self._post(*self._logprob_request(task, item))
        except _Failed as e:
            if "logprob" not in str(e).lower():
                raise
            data = None
        if data is not None and _first_top_logprobs(data) is not None:
            self.method = "logprobs"
            self._endpoint_logprobs = True
            return self._read_logprobs(task, item, data)
        self._endpoint_logprobs = False
        self.method = "choice"
        log.warning(
            "%s: the endpoint returns no log-probabilities; using constrained choice (%s)",
            self.spec,
            self.choice_format,
        )
        return await self._score_choice(task, item)

    # .... logprobs
    def _logprob_request(self, task: Task, item: Item) -> tuple[str, dict[str, Any]]:
        if self.prompt == "chat":
            body: dict[str, Any] = {
                "model": self.model,
                "messages": task.chat_messages(item.fields),
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
            path = "/chat/completions"
        else:
            body = {
                "model": self.model,
                "prompt": task.completion_prompt(item.fields),
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": self.top_logprobs,
            }
            path = "/completions"
        body.update(self.extra_body)
        return path, body

    async def _score_logprobs(self, task: Task, item: Item) -> _Scored:
        data = await self._post(*self._logprob_request(task, item))
        if _first_top_logprobs(data) is None:
            raise _Failed("the endpoint returned no log-probabilities for this item")
        try:
            return self._read_logprobs(task, item, data)
        except _SharedFirstToken as e:
            if self.prompt != "completion":
                raise _Abstain(str(e)) from e
            return await self._score_continuations(task, item)

    def _read_logprobs(self, task: Task, item: Item, data: dict[str, Any]) -> _Scored:
        top = _first_top_logprobs(data)
        if top is None:
            raise _Failed("the endpoint returned no log-probabilities for this item")
        prefix = " " if self.prompt == "completion" else ""
        answers = {lab.name: prefix + lab.answer for lab in task.labels}
        return _Scored(label_logprobs(answers, top, self.top_logprobs), "logprobs")

    async def _score_continuations(self, task: Task, item: Item) -> _Scored:
        """Completion mode only: log P(answer | prompt) summed over its tokens, via ``echo``."""
        prompt = task.completion_prompt(item.fields)
        lps: dict[str, float] = {}
        for lab in task.labels:
            body: dict[str, Any] = {
                "model": self.model,
                "prompt": prompt + " " + lab.answer,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": 1,
                "echo": True,
                **self.extra_body,
            }
            data = await self._post("/completions", body)
            lps[lab.name] = _continuation_logprob(data, len(prompt))
        return _Scored(normalise_logprobs(lps), "logprobs")

    # .... constrained choice
    async def _score_choice(self, task: Task, item: Item) -> _Scored:
        answers = [lab.answer for lab in task.labels]
        fmt = self.choice_format or "json_schema"
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0}
        if self.prompt == "chat":
            body["messages"] = task.chat_messages(item.fields)
            path = "/chat/completions"
        else:
            body["prompt"] = task.completion_prompt(item.fields) + " "
            path = "/completions"
        if fmt == "grammar":
            body["grammar"] = "root ::= " + " | ".join(_gbnf_string(a) for a in answers)
        elif fmt == "structured_outputs":
            body["structured_outputs"] = {"choice": answers}
        elif fmt == "guided_choice":
            body["guided_choice"] = answers
        else:
            schema = {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": answers}},
                "required": ["label"],
                "additionalProperties": False,
            }
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "label", "schema": schema, "strict": True},
            }
        body["max_tokens"] = max(8, max(len(a) for a in answers) + (16 if fmt == "json_schema" else 2))
        if self._endpoint_logprobs and fmt != "json_schema":
            body["logprobs"] = True if self.prompt == "chat" else 1
        body.update(self.extra_body)
        data = await self._post(path, body)
        text = _output_text(data)
        if fmt == "json_schema":
            try:
                value = json.loads(text)["label"]
            except (ValueError, KeyError, TypeError) as e:
                raise _Abstain(
                    f"constrained answer is not the requested JSON {{'label': ...}}: {text!r}"
                    " (does the endpoint support response_format json_schema?)"
                ) from e
            text = str(value)
        by_answer = {lab.answer: lab.name for lab in task.labels}
        label = by_answer.get(text.strip())
        if label is None:
            raise _Abstain(
                f"constrained answer {text!r} is not one of the labels "
                f"(does the endpoint honour choice_format={fmt!r}?)"
            )
        probs: dict[str, float] = {}
        lp = _output_logprob_sum(data) if fmt != "json_schema" else None
        if lp is not None:
            probs = {label: min(1.0, math.exp(lp))}
        return _Scored(probs, "choice", label)

    # .... free text (explicit only)
    async def _score_text(self, task: Task, item: Item) -> _Scored:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": 0.0,
            "max_tokens": self.max_text_tokens,
        }
        if self.prompt == "chat":
            body["messages"] = task.chat_messages(item.fields)
            path = "/chat/completions"
        else:
            body["prompt"] = task.completion_prompt(item.fields)
            body["stop"] = ["\n"]
            path = "/completions"
        body.update(self.extra_body)
        data = await self._post(path, body)
        text = _output_text(data)
        label = parse_label_strict(task, text)
        if label is None:
            raise _Abstain(f"free-text answer {text!r} is not exactly one label")
        return _Scored({}, "text", label)


# ------------------------------------------------------------------------ pure helpers
class _SharedFirstToken(_Abstain):
    pass


def label_logprobs(answers: dict[str, str], top: dict[str, float], k: int | None = None) -> dict[str, float]:
    """Renormalised label distribution from the top next-token log-probabilities.

    ``answers`` maps label name -> the text the model would say (with the leading space in
    completion mode).  A label is scored by the longest returned token that is a non-empty
    prefix of its answer.  If no label matches exactly, tokens are compared without leading
    whitespace (some tokenizers report the first token with a space).  Labels with no match get
    the smallest returned log-probability (an upper bound on their true value).
    """
    tokens = {t: lp for t, lp in top.items() if t and math.isfinite(lp)}
    if not tokens:
        raise _Abstain("the endpoint returned no usable next-token log-probabilities")

    def best(strip: bool) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, answer in answers.items():
            target = answer.lstrip() if strip else answer
            cands = [
                t for t in tokens if (t.lstrip() if strip else t) and target.startswith(t.lstrip() if strip else t)
            ]
            if cands:
                found[name] = max(cands, key=lambda t: (len(t.lstrip() if strip else t), tokens[t]))
        return found

    match = best(False) or best(True)
    if not match:
        shown = ", ".join(repr(t) for t in sorted(tokens, key=lambda t: -tokens[t])[:5])
        raise _Abstain(f"none of the labels is among the top {k or len(tokens)} next tokens (top: {shown})")
    seen: dict[str, str] = {}
    for name, tok in match.items():
        if tok in seen:
            raise _SharedFirstToken(
                f"labels {seen[tok]!r} and {name!r} share their first token {tok!r}; give them "
                "answer texts that start differently, or use prompt='completion'"
            )
        seen[tok] = name
    floor = min(tokens.values())
    lps = {name: (tokens[match[name]] if name in match else floor) for name in answers}
    return normalise_logprobs(lps)


def _first_top_logprobs(data: dict[str, Any]) -> dict[str, float] | None:
    """The top log-probabilities of the first generated token, chat or completions format."""
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        return None
    lp = choice.get("logprobs") if isinstance(choice, dict) else None
    if not isinstance(lp, dict):
        return None
    content = lp.get("content")
    if isinstance(content, list) and content:  # chat format
        entries = content[0].get("top_logprobs") or []
        out: dict[str, float] = {}
        for e in entries:
            tok, val = e.get("token"), e.get("logprob")
            if isinstance(tok, str) and isinstance(val, int | float):
                out[tok] = max(float(val), out.get(tok, -math.inf))
        return out or None
    tops = lp.get("top_logprobs")
    if isinstance(tops, list) and tops and isinstance(tops[0], dict):  # completions format
        return {str(t): float(v) for t, v in tops[0].items() if isinstance(v, int | float)} or None
    return None


def _continuation_logprob(data: dict[str, Any], prompt_chars: int) -> float:
    """Sum of the echoed log-probabilities of the tokens after ``prompt_chars`` characters."""
    try:
        lp = data["choices"][0]["logprobs"]
        offsets, values = lp["text_offset"], lp["token_logprobs"]
    except (KeyError, IndexError, TypeError) as e:
        raise _Failed("the endpoint did not echo prompt log-probabilities") from e
    # the last entry is the one generated token (max_tokens=1): drop it
    pairs = list(zip(offsets, values, strict=False))[:-1]
    total = [v for off, v in pairs if off >= prompt_chars and v is not None]
    if not total:
        raise _Failed("the echoed log-probabilities do not cover the label")
    return float(sum(total))


def _output_text(data: dict[str, Any]) -> str:
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError) as e:
        raise _Failed(f"answer without choices: {_snippet(json.dumps(data))}") from e
    msg = choice.get("message")
    if isinstance(msg, dict):
        return str(msg.get("content") or "")
    return str(choice.get("text") or "")


def _output_logprob_sum(data: dict[str, Any]) -> float | None:
    try:
        lp = data["choices"][0].get("logprobs")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if not isinstance(lp, dict):
        return None
    if isinstance(lp.get("content"), list):
        vals = [e.get("logprob") for e in lp["content"]]
    else:
        vals = list(lp.get("token_logprobs") or [])
    nums = [float(v) for v in vals if isinstance(v, int | float)]
    return sum(nums) if nums and len(nums) == len(vals) else None


def parse_label_strict(task: Task, text: str) -> str | None:
    """The label a free-text answer names, or None: the whole answer must be one label.

    Surrounding whitespace, quotes and one trailing period are ignored, and case.
    """
    t = text.strip().strip("\"'`").strip()
    if t.endswith("."):
        t = t[:-1].strip()
    t = t.casefold()
    hits = {lab.name for lab in task.labels if t in (lab.answer.casefold(), lab.name.casefold())}
    return hits.pop() if len(hits) == 1 else None


def _gbnf_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def from_spec(spec: str, **options: Any) -> OpenAIBackend:
    """Registry factory: ``openai:MODEL@BASE_URL`` plus the options of :class:`OpenAIBackend`."""
    import inspect

    known = set(inspect.signature(OpenAIBackend.__init__).parameters) - {"self", "spec"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise BackendError(f"{spec}: unknown option(s) {unknown}; known: {sorted(known)}")
    return OpenAIBackend(spec, **options)
