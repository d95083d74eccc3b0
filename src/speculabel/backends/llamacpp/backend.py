"""In-process llama.cpp: exact label scoring by log-probability.

Small models asked for a free-text answer say the same label for everything, so each label is
scored instead: the log-probability of the label's full token sequence after the prompt
(multi-token labels exactly), renormalised over the label set.  The prompt and its tokens come
from :mod:`~speculabel.backends.llamacpp.prompts`, the evaluation from
:mod:`~speculabel.backends.llamacpp.engine`; this module loads the model and turns
log-probabilities into votes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speculabel.backends.base import Backend, BackendError
from speculabel.backends.llamacpp.engine import KVEngine, Unanswerable
from speculabel.backends.llamacpp.prompts import Prepared, Prompts
from speculabel.records import Item, Vote, normalise_logprobs
from speculabel.tasks import Task

#: part of every vote's cache key: bump it when a change to the scoring alters the numbers
#: (v2: items evaluated from the task prefix, whatever came before them)
SCORING_VERSION = "+v2"
OPTIONS = (
    "n_threads", "n_ctx", "prefix_cache", "contextual_calibration", "verbose", "chat", "n_batch",
    "label_pruning",
)
#: a task of MANY_LABELS labels or more is scored with label pruning at this tolerance (total
#: variation of the label distribution) unless ``label_pruning`` says otherwise: on Banking77
#: (77 labels) the exact scores evaluate every label's tokens, most of them for labels the
#: model gives almost no probability
LABEL_PRUNING = 1e-2


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _quiet_llama_log(llama_cpp: Any) -> None:
    """llama.cpp writes some lines to stderr even with ``verbose=False``: silence its logger."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_LOG_CALLBACK, None)


_LOG_CALLBACK: Any = None  # kept alive: llama.cpp holds a pointer to it


class LlamaCppBackend(Backend):
    """A GGUF model run in-process by llama-cpp-python, voting with exact label log-probs."""

    def __init__(
        self,
        spec: str,
        model_path: Path | str,
        *,
        chat: bool | None = None,
        n_threads: int | None = None,
        n_ctx: int = 2048,
        n_batch: int = 512,
        prefix_cache: bool = True,
        contextual_calibration: dict[str, float] | None = None,
        verbose: bool = False,
        label_pruning: float | None = None,
    ) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise BackendError(
                "llama-cpp-python is not installed: run scripts/install-llama.sh "
                "(or pip install 'speculabel[llama]')"
            ) from e
        self.spec = spec
        self.model_path = Path(model_path)
        self.calibration = dict(contextual_calibration) if contextual_calibration else None
        if label_pruning is not None and not 0.0 <= float(label_pruning) < 1.0:
            raise BackendError(f"{spec}: label_pruning must be in [0, 1), got {label_pruning!r}")
        #: None: LABEL_PRUNING on many-label tasks, exact scores otherwise; 0: always exact
        self.label_pruning = None if label_pruning is None else float(label_pruning)
        if not verbose:
            _quiet_llama_log(llama_cpp)
        threads = n_threads or _default_threads()
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_batch=min(n_batch, n_ctx),
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=False,
                # keep the whole sliding-window cache, so rolling back to a shared prefix is exact
                swa_full=True,
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as e:
            raise BackendError(f"{spec}: cannot load {self.model_path}: {e}") from e
        # llama.cpp may round n_ctx up
        self.n_ctx = int(self._llm.n_ctx())
        self._engine = KVEngine(llama_cpp, self._llm, prefix_cache=prefix_cache)
        self._fingerprint: str | None = None
        self._closed = False
        try:
            self._prompts = Prompts(llama_cpp, self._llm, spec, chat, self.n_ctx)
        except BaseException:
            self.close()
            raise
        self.is_chat = self._prompts.is_chat
        #: per-item scoring time of the last ``score`` call, seconds (benchmarks read it)
        self.last_latencies: list[float] = []

    # ------------------------------------------------------------ registry

    @classmethod
    def check_spec(cls, spec: str, options: dict[str, Any], task: Task | None = None) -> None:
        """Known options, and a model file that exists (installed, or the ``gguf:`` path)."""
        from speculabel.models import ModelError, resolve_model

        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise BackendError(
                f"{spec}: unknown option(s) {unknown}; llama.cpp accepts {', '.join(OPTIONS)}"
            )
        try:
            resolve_model(spec)
        except ModelError as e:
            raise BackendError(str(e)) from e

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> LlamaCppBackend:
        """A catalogue name (installed with ``speculabel models pull``) or ``gguf:PATH``.

        Options: ``n_threads`` (default: all usable cores), ``n_ctx`` (2048), ``n_batch`` (512),
        ``prefix_cache`` (True), ``contextual_calibration`` ({label: log-prob} subtracted before
        renormalising), ``verbose`` (False), ``chat`` (default: the catalogue's kind, or whether
        the file has a chat template), ``label_pruning`` (tolerance in total variation; default
        :data:`LABEL_PRUNING` on tasks of ``MANY_LABELS`` labels or more, exact otherwise; 0:
        always exact).
        """
        from speculabel.models import CATALOGUE, resolve_model

        cls.check_spec(spec, options)
        if options.get("chat") is None and spec in CATALOGUE:
            options["chat"] = CATALOGUE[spec].is_chat
        return cls(spec, resolve_model(spec), **options)

    # ------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        """The model file's sha256 (from a sidecar cache) and the scoring scheme's version (how
        tokens are batched changes the numbers), plus the calibration when one is set, since
        calibrated votes differ from raw ones."""
        if self._fingerprint is None:
            from speculabel.models import file_sha256

            fp = file_sha256(self.model_path) + SCORING_VERSION
            if self.label_pruning is not None:  # votes on many-label tasks change with it
                fp += f"+prune:{self.label_pruning:g}"
            if self.calibration:
                blob = json.dumps(self.calibration, sort_keys=True).encode()
                fp += "+cc:" + hashlib.sha256(blob).hexdigest()[:12]
            self._fingerprint = fp
        return self._fingerprint

    def vote_fingerprint(self, task: Task) -> str:
        """:meth:`fingerprint`, plus ``+prune:TOL`` where the default label pruning applies to
        ``task`` (an explicit ``label_pruning`` is in the fingerprint already), so pruned and
        exact votes on one many-label task are never mixed in a vote store."""
        fp, tol = self.fingerprint(), self.pruning(task)
        return fp + f"+prune:{tol:g}" if self.label_pruning is None and tol > 0 else fp

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._engine.free()
        finally:
            self._llm.close()

    def __del__(self) -> None:
        # at interpreter shutdown the library may already be gone
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------ prompts (delegated)

    @property
    def tokens_evaluated(self) -> int:
        """Tokens run through the model so far (prefix reuse shows here, whatever the load)."""
        return self._engine.tokens_evaluated

    def render(self, task: Task, fields: dict[str, str]) -> str:
        return self._prompts.render(task, fields)

    def tokenize(self, text: str) -> list[int]:
        return self._prompts.tokenize(text)

    def defuse(self, text: str) -> str:
        return self._prompts.defuse(text)

    def control_texts(self) -> list[str]:
        return self._prompts.control_texts()

    def label_sequences(self, task: Task, fields: dict[str, str]) -> dict[str, list[int]]:
        return self._prompts.label_sequences(task, fields)

    def task_prefix(self, task: Task) -> list[int]:
        return self._prompts.task_prefix(task)

    def _prepare(self, task: Task, item: Item) -> Prepared:
        return self._prompts.prepare(task, item)

    # ------------------------------------------------------------ scoring

    def label_logprobs(self, task: Task, item: Item) -> tuple[dict[str, float], bool]:
        """Raw (uncalibrated, unnormalised) log-probability of each label's answer, and whether
        the item was truncated.  Raises ``ValueError`` for an item that cannot be scored."""
        try:
            prep = self._prepare(task, item)
        except Unanswerable as e:
            raise ValueError(str(e)) from None
        return (self._engine.score_sequences(prep.sequences, self.task_prefix(task),
                                             self.pruning(task)), prep.truncated)

    def pruning(self, task: Task) -> float:
        """The label-pruning tolerance for this task (0: exact scores).  Never with contextual
        calibration: subtracting offsets voids the first-token bound pruning relies on."""
        from speculabel.tasks.task import MANY_LABELS

        if self.calibration is not None:
            return 0.0
        if self.label_pruning is not None:
            return self.label_pruning
        return LABEL_PRUNING if len(task.label_names) >= MANY_LABELS else 0.0

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        if self._closed:
            raise BackendError(f"{self.spec}: backend is closed")
        if self.calibration is not None:
            unknown = set(task.label_names) ^ set(self.calibration)
            if unknown:
                raise BackendError(
                    f"{self.spec}: contextual calibration labels {sorted(self.calibration)} "
                    f"do not match the task's labels {task.label_names}"
                )
        from speculabel.interrupt import check

        votes: list[Vote] = []
        self.last_latencies = []
        for item in items:
            check()  # a Ctrl-C or SIGTERM stops between two items, not after the batch
            t0 = time.perf_counter()
            try:
                prep = self._prepare(task, item)
                raw = self._engine.score_sequences(prep.sequences, self.task_prefix(task),
                                                   self.pruning(task))
            except Unanswerable as e:
                vote = Vote.abstain(self.spec, str(e), latency_s=time.perf_counter() - t0,
                                    method="logprobs")
            except RuntimeError as e:  # a failed decode for this item only
                vote = Vote.abstain(self.spec, f"llama.cpp: {e}",
                                    latency_s=time.perf_counter() - t0, method="logprobs")
            else:
                if self.calibration is not None:
                    raw = {k: v - self.calibration[k] for k, v in raw.items()}
                probs = normalise_logprobs(raw)
                vote = Vote.from_probs(
                    self.spec,
                    {lab: probs[lab] for lab in task.label_names},
                    latency_s=time.perf_counter() - t0,
                    method="logprobs",
                    truncated=prep.truncated,
                )
            self.last_latencies.append(vote.latency_s)
            votes.append(vote)
        return votes


def from_spec(spec: str, **options: Any) -> LlamaCppBackend:
    """The registry's factory (kept as a function for callers that import it)."""
    return LlamaCppBackend.from_spec(spec, **options)
