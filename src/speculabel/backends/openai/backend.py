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

Faults (timeouts, retries, a server that is down): :mod:`~speculabel.backends.openai.transport`.
When the retries are spent the vote is a *retryable* abstention (its message starts with
``unavailable:``); the cascade leaves such judge items undecided for the next run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from speculabel.backends.base import Backend, BackendError
from speculabel.backends.openai.parse import (
    Abstain,
    SharedFirstToken,
    continuation_logprob,
    first_top_logprobs,
    label_logprobs,
    output_logprob_sum,
    output_text,
    parse_label_strict,
)
from speculabel.backends.openai.requests import Bodies
from speculabel.backends.openai.transport import Failed, LoopThread, Transport, Unavailable
from speculabel.records import Item, Vote, normalise_logprobs
from speculabel.redact import redact
from speculabel.tasks import Task

log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable:"
METHODS = ("auto", "logprobs", "choice", "text")
PROMPTS = ("chat", "completion")
CHOICE_FORMATS = ("auto", "grammar", "structured_outputs", "guided_choice", "json_schema")
#: the choice format each server family understands (``owned_by`` in its model list)
_CHOICE_BY_OWNER = {"vllm": "structured_outputs", "me": "grammar", "llamacpp": "grammar"}


def parse_spec(spec: str) -> tuple[str, str]:
    """``openai:MODEL@BASE_URL`` -> (model, base_url without a trailing slash)."""
    if not spec.startswith("openai:"):
        raise BackendError(
            f"not an OpenAI endpoint spec: {redact(spec)!r} (expected openai:MODEL@URL)"
        )
    rest = spec[len("openai:") :]
    model, sep, url = rest.partition("@")
    if not sep or not model or not url:
        raise BackendError(
            f"bad model spec {redact(spec)!r}: expected openai:MODEL@BASE_URL, "
            "e.g. openai:qwen2.5-0.5b@http://127.0.0.1:8081/v1"
        )
    if not url.startswith(("http://", "https://")):
        raise BackendError(
            f"bad model spec {redact(spec)!r}: the base URL must start with http(s)://"
        )
    return model, url.rstrip("/")


@dataclass
class _Scored:
    probs: dict[str, float]
    method: str
    label: str | None = None  # set for choice/text votes (probs may then be empty)


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
        shown = redact(spec)
        if method not in METHODS:
            raise BackendError(f"{shown}: unknown method {method!r}; choose one of {METHODS}")
        if prompt not in PROMPTS:
            raise BackendError(f"{shown}: unknown prompt {prompt!r}; choose one of {PROMPTS}")
        if choice_format not in CHOICE_FORMATS:
            raise BackendError(
                f"{shown}: unknown choice_format {choice_format!r}; choose one of {CHOICE_FORMATS}"
            )
        if max_in_flight < 1:
            raise BackendError(f"{shown}: max_in_flight must be >= 1")
        if top_logprobs < 1:
            raise BackendError(f"{shown}: top_logprobs must be >= 1")
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise BackendError(
                    f"{shown}: the environment variable {api_key_env} (api_key_env) is not set"
                )
        self.transport = Transport(
            shown, self.base_url, api_key=api_key, api_key_env=api_key_env,
            max_in_flight=int(max_in_flight), timeout_s=float(timeout_s),
            max_retries=int(max_retries), retry_budget_s=float(retry_budget_s),
            backoff_s=float(backoff_s), backoff_max_s=float(backoff_max_s),
        )
        self.bodies = Bodies(self.model, prompt, int(top_logprobs), int(max_text_tokens),
                             dict(extra_body or {}))
        self.requested_method = method
        self.prompt = prompt
        self.top_logprobs = int(top_logprobs)
        # resolved lazily
        self.method: str | None = None if method == "auto" else method
        self.choice_format: str | None = None if choice_format == "auto" else choice_format
        self.server_models: list[dict[str, Any]] | None = None
        self._endpoint_logprobs: bool | None = None
        self._resolve_lock: asyncio.Lock | None = None

    # -------------------------------------------------------------- registry
    @classmethod
    def check_spec(cls, spec: str, options: dict[str, Any], task: Task | None = None) -> None:
        """A well-formed spec and known options (the server itself is asked by :meth:`check`)."""
        import inspect

        parse_spec(spec)
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "spec"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BackendError(
                f"{redact(spec)}: unknown option(s) {unknown}; known: {sorted(known)}"
            )

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> OpenAIBackend:
        """``openai:MODEL@BASE_URL`` plus the options of :class:`OpenAIBackend`."""
        cls.check_spec(spec, options)
        return cls(spec, **options)

    # -------------------------------------------------------------- identity
    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend({redact(self.spec)!r}, method={self.method or self.requested_method!r})"

    def fingerprint(self) -> str:
        """``openai:MODEL@URL`` plus the model root the server reports, prompt mode and method."""
        self.check()
        fp = f"openai:{self.model}@{redact(self.base_url)}"
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

        Runs once (a cascade calls it when it is built; otherwise the first ``score`` does).
        """
        if self.server_models is None:
            LoopThread.get().run(self._check())

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        if not items:
            return []
        self.check()
        return LoopThread.get().run(self._score_all(task, items))

    async def ascore(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        """``score`` for callers that run their own event loop."""
        if self.server_models is None:
            await asyncio.wrap_future(LoopThread.get().submit(self._check()))
        return await asyncio.wrap_future(LoopThread.get().submit(self._score_all(task, items)))

    def close(self) -> None:
        self.transport.close()

    async def _check(self) -> None:
        models = await self.transport.models()
        ids = [str(m["id"]) for m in models]
        if self.model not in ids:
            raise BackendError(
                f"{self.transport.name}: model {self.model!r} is not served at "
                f"{redact(self.base_url)}; it serves: {', '.join(ids) or '(nothing)'}"
            )
        self.server_models = models
        if self.choice_format is None:
            owner = next((str(m.get("owned_by", "")) for m in models if m["id"] == self.model), "")
            self.choice_format = _CHOICE_BY_OWNER.get(owner, "json_schema")

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
        votes = await asyncio.gather(
            *(self._vote(task, it, probe=self.method is None) for it in rest)
        )
        return [first, *votes] if first is not None else list(votes)

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
        except Unavailable as e:
            return Vote.abstain(self.spec, f"{UNAVAILABLE} {e}", latency_s=time.perf_counter() - t0,
                                method=method, retryable=True)
        except (Failed, Abstain) as e:
            return Vote.abstain(self.spec, self.transport.safe(str(e)),
                                latency_s=time.perf_counter() - t0, method=self.method or method)
        dt = time.perf_counter() - t0
        if scored.label is not None:
            return Vote(self.spec, scored.label, scored.probs, dt, scored.method, None,
                        item.truncated)
        return Vote.from_probs(self.spec, scored.probs, latency_s=dt, method=scored.method,
                               truncated=item.truncated)

    async def _probe(self, task: Task, item: Item) -> _Scored:
        """Resolve ``method="auto"`` with the first item: log-probabilities if the endpoint has
        them, else constrained choice (logged).  An unreachable endpoint leaves it unresolved."""
        try:
            data: dict[str, Any] | None = await self.transport.post(
                *self.bodies.logprobs(task, item.fields)
            )
        except Failed as e:
            if "logprob" not in str(e).lower():
                raise
            data = None
        if data is not None and first_top_logprobs(data) is not None:
            self.method = "logprobs"
            self._endpoint_logprobs = True
            return self._read_logprobs(task, data)
        self._endpoint_logprobs = False
        self.method = "choice"
        log.warning(
            "%s: the endpoint returns no log-probabilities; using constrained choice (%s)",
            self.transport.name,
            self.choice_format,
        )
        return await self._score_choice(task, item)

    async def _score_logprobs(self, task: Task, item: Item) -> _Scored:
        data = await self.transport.post(*self.bodies.logprobs(task, item.fields))
        try:
            return self._read_logprobs(task, data)
        except SharedFirstToken as e:
            if self.prompt != "completion":
                raise Abstain(str(e)) from e
            return await self._score_continuations(task, item)

    def _read_logprobs(self, task: Task, data: dict[str, Any]) -> _Scored:
        top = first_top_logprobs(data)
        if top is None:
            raise Failed("the endpoint returned no log-probabilities for this item")
        prefix = " " if self.prompt == "completion" else ""
        answers = {lab.name: prefix + lab.answer for lab in task.labels}
        return _Scored(label_logprobs(answers, top, self.top_logprobs), "logprobs")

    async def _score_continuations(self, task: Task, item: Item) -> _Scored:
        """Completion mode only: log P(answer | prompt) summed over its tokens, via ``echo``."""
        prompt_chars = len(task.completion_prompt(item.fields))
        lps: dict[str, float] = {}
        for lab in task.labels:
            data = await self.transport.post(*self.bodies.continuation(task, item.fields,
                                                                       lab.answer))
            lps[lab.name] = continuation_logprob(data, prompt_chars)
        return _Scored(normalise_logprobs(lps), "logprobs")

    async def _score_choice(self, task: Task, item: Item) -> _Scored:
        fmt = self.choice_format or "json_schema"
        data = await self.transport.post(
            *self.bodies.choice(task, item.fields, fmt, bool(self._endpoint_logprobs))
        )
        text = output_text(data)
        if fmt == "json_schema":
            try:
                value = json.loads(text)["label"]
            except (ValueError, KeyError, TypeError) as e:
                raise Abstain(
                    f"constrained answer is not the requested JSON {{'label': ...}}: {text!r}"
                    " (does the endpoint support response_format json_schema?)"
                ) from e
            text = str(value)
        by_answer = {lab.answer: lab.name for lab in task.labels}
        label = by_answer.get(text.strip())
        if label is None:
            raise Abstain(
                f"constrained answer {text!r} is not one of the labels "
                f"(does the endpoint honour choice_format={fmt!r}?)"
            )
        probs: dict[str, float] = {}
        lp = output_logprob_sum(data) if fmt != "json_schema" else None
        if lp is not None:
            probs = {label: min(1.0, math.exp(lp))}
        return _Scored(probs, "choice", label)

    async def _score_text(self, task: Task, item: Item) -> _Scored:
        """Free text, only when asked for: the whole answer must name one label."""
        data = await self.transport.post(*self.bodies.text(task, item.fields))
        text = output_text(data)
        label = parse_label_strict(task, text)
        if label is None:
            raise Abstain(f"free-text answer {text!r} is not exactly one label")
        return _Scored({}, "text", label)


def from_spec(spec: str, **options: Any) -> OpenAIBackend:
    """The registry's factory (kept as a function for callers that import it)."""
    return OpenAIBackend.from_spec(spec, **options)
