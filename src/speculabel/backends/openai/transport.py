"""HTTP plumbing of the OpenAI-compatible backend: one event loop, bounded requests, retries.

* Requests run on one private asyncio loop in a background thread (so ``score`` works whether
  or not the caller's thread runs an event loop).
* At most ``max_in_flight`` requests per base URL are in flight, shared by every backend that
  uses that URL; the smallest limit of the backends open on it applies, also when a backend
  with a smaller one is made after requests have started.
* Every request has a timeout.  Connection errors, timeouts, 429 and 502/503/504 are retried by
  tenacity with jittered exponential backoff (429 honours ``Retry-After``), capped in attempts
  and in total time (no sleep may end past the budget).  When they are spent the request raises
  :class:`Unavailable`; a request that the server answers with an error every time raises
  :class:`Failed` (the request is the problem, not the endpoint).  After one request finds the
  endpoint down, the following ones are tried once (no retries) until one succeeds, so a dead
  server costs seconds, not minutes.
* Secrets never reach a message: error bodies and URLs are redacted.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from speculabel.backends.base import BackendError
from speculabel.errors import SpeculabelError
from speculabel.redact import redact

if TYPE_CHECKING:
    import httpx
    from tenacity import RetryCallState

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUS = frozenset({429, 502, 503, 504})


class Unavailable(SpeculabelError):
    """The endpoint could not be reached or stayed overloaded for every attempt."""


class Failed(SpeculabelError):
    """The endpoint answered, but this request failed (bad request, server error)."""


class _Retry(Exception):
    """One attempt failed in a way worth another (carries what the next wait must respect).
    Private to :meth:`Transport.post`: it never leaves it (it becomes :class:`Unavailable` or
    :class:`Failed`)."""

    def __init__(self, message: str, *, retry_after: float | None = None, answered: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.answered = answered  # the server answered (an HTTP 5xx), as opposed to silence


# ------------------------------------------------------------------------ the private loop
class LoopThread:
    """One asyncio loop in a daemon thread, shared by every HTTP backend of the process."""

    _lock = threading.Lock()
    _instance: LoopThread | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="speculabel-http", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> LoopThread:
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


# ------------------------------------------------------------------------ in-flight limits
class Limiter:
    """A semaphore whose capacity is the smallest limit of the backends that use it now.

    Each backend registers its ``max_in_flight`` when it is made and withdraws it when it is
    closed, so a later backend's smaller limit applies at once (also to requests already
    queued), and closing it lets the others go back to theirs.
    """

    DEFAULT = 4

    def __init__(self) -> None:
        self.limits: list[int] = []
        self.in_flight = 0
        self._cond: asyncio.Condition | None = None  # made on the loop that uses it

    @property
    def limit(self) -> int:
        return min(self.limits, default=self.DEFAULT)

    def register(self, limit: int) -> None:
        with _LIMITERS_LOCK:
            self.limits.append(limit)

    def withdraw(self, limit: int) -> None:
        with _LIMITERS_LOCK:
            if limit in self.limits:
                self.limits.remove(limit)
        if self._cond is not None:  # wake waiters: the capacity may have grown
            cond = self._cond

            async def wake() -> None:
                async with cond:
                    cond.notify_all()

            LoopThread.get().submit(wake())

    async def __aenter__(self) -> None:
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        assert self._cond is not None
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()


_LIMITERS: dict[str, Limiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter(base_url: str) -> Limiter:
    """The one limiter of ``base_url``, shared by every backend that uses it."""
    with _LIMITERS_LOCK:
        lim = _LIMITERS.get(base_url)
        if lim is None:
            lim = _LIMITERS[base_url] = Limiter()
        return lim


# ------------------------------------------------------------------------ transport
class Transport:
    """One endpoint (base URL, key, timeouts, retry policy) and its HTTP client."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None,
        api_key_env: str | None,
        max_in_flight: int,
        timeout_s: float,
        max_retries: int,
        retry_budget_s: float,
        backoff_s: float,
        backoff_max_s: float,
    ) -> None:
        self.name = name  # the spec, redacted: what messages call this endpoint
        self.base_url = base_url
        self._api_key = api_key
        self.api_key_env = api_key_env
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.max_retries = max(0, max_retries)
        self.retry_budget_s = retry_budget_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.limiter = limiter(base_url)
        self.limiter.register(max_in_flight)
        self._registered = True
        self.down = False
        self.requests = 0
        self._client: httpx.AsyncClient | None = None

    def safe(self, text: str) -> str:
        """``text`` fit for a message or a record: no key, no credentials."""
        return redact(text, [self._api_key] if self._api_key else [])

    def snippet(self, text: str, n: int = 200) -> str:
        text = " ".join(self.safe(text).split())
        return text if len(text) <= n else text[:n] + "..."

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            headers = {"Content-Type": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=max(10, 2 * self.max_in_flight)),
                headers=headers,
                follow_redirects=True,
            )
        return self._client

    def close(self) -> None:
        if self._registered:
            self._registered = False
            self.limiter.withdraw(self.max_in_flight)
        client, self._client = self._client, None
        if client is not None:
            try:
                LoopThread.get().submit(client.aclose()).result(timeout=5)
            except Exception as e:  # closing must never mask the real outcome
                log.debug("closing the HTTP client failed: %s", e)

    # .................................................................... GET /models
    async def models(self) -> list[dict[str, Any]]:
        """The served models; :class:`BackendError` saying what is wrong when there are none."""
        import httpx

        url = f"{self.base_url}/models"
        shown = self.safe(url)
        wait = max(self.timeout_s, 10.0)  # listing models is cheap; a busy server may queue it
        try:
            resp = await self.client().get(url, timeout=wait)
        except httpx.TimeoutException as e:
            raise BackendError(f"{self.name}: {shown} did not answer within {wait:g} s") from e
        except httpx.TransportError as e:
            raise BackendError(
                f"{self.name}: cannot reach {self.safe(self.base_url)} ({type(e).__name__}: "
                f"{self.safe(str(e))}). Is the server running, and is this its OpenAI base URL "
                "(usually ending in /v1)?"
            ) from e
        if resp.status_code in (401, 403):
            hint = (
                f"check the key in ${self.api_key_env}"
                if self.api_key_env
                else "set api_key_env to the name of the environment variable holding the key"
            )
            raise BackendError(
                f"{self.name}: {shown} refused the request (HTTP {resp.status_code}): {hint}"
            )
        if resp.status_code == 404:
            raise BackendError(
                f"{self.name}: {shown} does not exist (HTTP 404): is "
                f"{self.safe(self.base_url)} the server's OpenAI-compatible base URL? It usually "
                "ends in /v1."
            )
        if resp.status_code != 200:
            raise BackendError(
                f"{self.name}: {shown} answered HTTP {resp.status_code}: {self.snippet(resp.text)}"
            )
        try:
            data = resp.json()
            return [m for m in data["data"] if isinstance(m, dict) and "id" in m]
        except (ValueError, KeyError, TypeError) as e:
            raise BackendError(
                f"{self.name}: {shown} is not an OpenAI-compatible model list: "
                f"{self.snippet(resp.text)}"
            ) from e

    # .................................................................... POST with retries
    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; raises :class:`Unavailable` (endpoint down) or :class:`Failed`."""
        from tenacity import (
            AsyncRetrying,
            retry_if_exception_type,
            stop_after_attempt,
            stop_before_delay,
        )

        url = f"{self.base_url}{path}"
        attempts = 1 if self.down else self.max_retries + 1
        outcomes: list[_Retry] = []
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts) | stop_before_delay(self.retry_budget_s),
            wait=self._wait,
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await self._post_once(url, body)
                    except _Retry as e:
                        outcomes.append(e)
                        raise
        except _Retry as e:
            last = str(e)
        tried = len(outcomes)
        if tried < attempts:
            last += f"; retry budget of {self.retry_budget_s:g} s spent"
        if all(o.answered for o in outcomes):  # it answered every time: this request fails
            raise Failed(f"{last} ({tried} attempt(s))")
        self.down = True
        raise Unavailable(f"{last} ({tried} attempt(s))")

    def _wait(self, state: RetryCallState) -> float:
        """Jittered exponential backoff, never shorter than the server's ``Retry-After``."""
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (state.attempt_number - 1))
        delay = random.uniform(delay / 2, delay)  # jitter: spread retries of many requests
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = exc.retry_after if isinstance(exc, _Retry) else None
        return max(delay, retry_after) if retry_after is not None else delay

    async def _post_once(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        shown = self.safe(url)
        try:
            async with self.limiter:
                self.requests += 1
                resp = await self.client().post(url, json=body)
        except httpx.TimeoutException:
            raise _Retry(f"no answer from {shown} within {self.timeout_s:g} s") from None
        except httpx.TransportError as e:
            raise _Retry(f"cannot reach {shown} ({type(e).__name__}: {self.safe(str(e))})") from None
        if resp.status_code == 200:
            self.down = False
            try:
                out: dict[str, Any] = resp.json()
            except ValueError as e:
                raise Failed(f"{shown} answered with invalid JSON: {self.snippet(resp.text)}") from e
            return out
        if resp.status_code == 429:
            raise _Retry(f"rate limited by {shown} (HTTP 429)",
                         retry_after=retry_after_s(resp.headers.get("retry-after")))
        text = f"{shown} answered HTTP {resp.status_code}: {self.snippet(resp.text)}"
        if resp.status_code in RETRY_STATUS:
            raise _Retry(text)
        if resp.status_code >= 500:
            raise _Retry(text, answered=True)
        raise Failed(f"HTTP {resp.status_code} from {shown}: {self.snippet(resp.text)}")


def retry_after_s(value: str | None) -> float | None:
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
