"""In-process llama.cpp: exact label scoring by log-probability.

Small models asked for a free-text answer say the same label for everything, so each label is
scored instead: the log-probability of the label's full token sequence after the prompt
(multi-token labels exactly), renormalised over the label set.

How one item is scored:

* The prompt is the task's chat messages rendered with the model's own chat template (chat
  models; the label is the assistant's answer) or the task's completion prompt (base models; the
  label follows the answer cue after a space).
* Each label's text is tokenized *together with* the prompt, so every label is scored under its
  natural tokenization.  The label sequences share a common token prefix (the prompt); only the
  rest differs, and that part is scored.  If one label's text is a prefix of another's, every
  label gets an end marker (the template's end-of-turn token, or a newline for base models), so
  that the scores are probabilities of exclusive answers.
* The KV cache holds the task's *static prefix* (instructions and examples: the tokens every
  prompt of the task begins with), evaluated once on its own.  Each item rolls the cache back to
  that prefix and evaluates only its own tokens.  Reuse is decided on token ids, never on text, so
  it is exact by construction: no prefix cut can fall inside a BPE merge.  Labels that share
  leading tokens share their evaluation the same way.
* Every item is evaluated from the same point in the same batches whatever came before it: llama.cpp's
  numerics depend slightly on how tokens are batched (a few 1e-3 in probability on small quantized
  models), and reusing "whatever the last item left" made an item's vote depend on its neighbour.
  Votes are therefore a function of (model, task, item) alone, so reruns and resumed runs agree.
* Logits are read for the positions that predict label tokens only
  (``llama_get_logits_ith``); the log-softmax is computed here with numpy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.backends.base import Backend, BackendError
from speculabel.records import Item, Vote, normalise_logprobs
from speculabel.task import Task

_ELLIPSIS = " … "
#: part of every vote's cache key: bump it when a change to the scoring alters the numbers
#: (v2: items evaluated from the task prefix, whatever came before them)
SCORING_VERSION = "+v2"
_OPTIONS = (
    "n_threads", "n_ctx", "prefix_cache", "contextual_calibration", "verbose", "chat", "n_batch",
)


class _Unanswerable(Exception):
    """This item cannot be scored (the reason becomes the abstention's message)."""


@dataclass
class _Row:
    """Logits at one position and their log-sum-exp: ``logits[t] - lse`` is log p(t)."""

    logits: np.ndarray
    lse: float

    def logprob(self, token: int) -> float:
        return float(self.logits[token]) - self.lse


@dataclass
class _Prepared:
    """The token sequences of one item, one per label, and whether its text was shortened."""

    sequences: dict[str, list[int]]
    truncated: bool


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


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
        self.prefix_cache = prefix_cache
        self.calibration = dict(contextual_calibration) if contextual_calibration else None
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
        self._lc = llama_cpp
        self._ctx = self._llm.ctx
        # llama.cpp may round n_ctx up; one decode call takes at most the context's n_batch
        self.n_ctx = int(self._llm.n_ctx())
        self._n_batch = int(llama_cpp.llama_n_batch(self._ctx))
        self._n_vocab = int(self._llm.n_vocab())
        self._batch: Any = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self._kv: list[int] = []  # tokens whose keys/values are in the cache, positions 0..
        # the task prefix evaluated on its own at positions 0.. (None: the cache holds no such)
        self._canon: list[int] | None = None
        self._prefixes: dict[str, list[int]] = {}  # task fingerprint -> static prefix tokens
        self._controls: list[str] | None = None
        #: tokens run through the model so far (prefix reuse shows here, whatever the CPU load)
        self.tokens_evaluated = 0
        self._fingerprint: str | None = None
        self._closed = False

        meta: dict[str, str] = dict(self._llm.metadata)
        template = meta.get("tokenizer.chat_template")
        self.is_chat = bool(template) if chat is None else chat
        if self.is_chat and not template:
            raise BackendError(f"{spec}: chat=True but the GGUF file has no chat template")
        self._formatter: Any = None
        self._end_of_turn = "\n"
        if self.is_chat:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=str(template),
                eos_token=self._token_text(self._llm.token_eos()),
                bos_token=self._token_text(self._llm.token_bos()),
                add_generation_prompt=True,
            )
            self._end_of_turn = self._find_end_of_turn(str(template))
        self._task_cache: dict[str, dict[str, str]] = {}  # task fingerprint -> label continuations
        #: per-item scoring time of the last ``score`` call, seconds (benchmarks read it)
        self.last_latencies: list[float] = []

    # ------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        """The model file's sha256 (from a sidecar cache) and the scoring scheme's version (how
        tokens are batched changes the numbers), plus the calibration when one is set, since
        calibrated votes differ from raw ones."""
        if self._fingerprint is None:
            from speculabel.models import file_sha256

            fp = file_sha256(self.model_path) + SCORING_VERSION
            if self.calibration:
                blob = json.dumps(self.calibration, sort_keys=True).encode()
                fp += "+cc:" + hashlib.sha256(blob).hexdigest()[:12]
            self._fingerprint = fp
        return self._fingerprint

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._lc.llama_batch_free(self._batch)
        finally:
            self._llm.close()

    def __del__(self) -> None:
        # at interpreter shutdown the library may already be gone
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------ prompts and tokens

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def _find_end_of_turn(self, template: str) -> str:
        """The text a template puts right after an assistant answer (``<|im_end|>``, ...)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        marker = "SPECULABELANSWER"
        fmt = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self._llm.token_eos()),
            bos_token=self._token_text(self._llm.token_bos()),
            add_generation_prompt=False,
        )
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": marker}]
        try:
            text = fmt(messages=msgs).prompt  # type: ignore[arg-type]
        except Exception:
            text = ""
        after = text.split(marker, 1)[1].strip() if marker in text else ""
        return after.split()[0] if after else self._token_text(self._llm.token_eos())

    def control_texts(self) -> list[str]:
        """The texts of the model's control and user-defined tokens (``<|im_end|>``, ...), longest
        first: tokenizing a chat prompt with ``special=True`` would read them as control tokens
        even inside an item's text."""
        if self._controls is None:
            lc = self._lc
            vocab = lc.llama_model_get_vocab(self._llm.model)
            flags = lc.LLAMA_TOKEN_ATTR_CONTROL | lc.LLAMA_TOKEN_ATTR_USER_DEFINED
            found = {self._token_text(t) for t in range(self._n_vocab)
                     if lc.llama_vocab_get_attr(vocab, t) & flags}
            self._controls = sorted((t for t in found if len(t) >= 2), key=len, reverse=True)
        return self._controls

    def defuse(self, text: str) -> str:
        """``text`` with every control-token string broken by a word joiner (U+2060) after its
        first character, so an item can never close the user turn or forge a reply; text
        without such strings is returned unchanged."""
        for ct in self.control_texts():
            if ct in text:
                text = text.replace(ct, ct[0] + "\u2060" + ct[1:])
        return text

    def render(self, task: Task, fields: dict[str, str]) -> str:
        """The prompt text for one item (before any label)."""
        if self.is_chat:
            msgs = task.chat_messages({k: self.defuse(v) for k, v in fields.items()})
            return str(self._formatter(messages=msgs).prompt)
        return task.completion_prompt(fields)

    def tokenize(self, text: str) -> list[int]:
        """Chat prompts carry the template's own special tokens (BOS included when the template
        writes it, as llama-cpp-python does); base prompts get the model's BOS."""
        if self.is_chat:
            return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def _plain_tokens(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _continuations(self, task: Task) -> dict[str, str]:
        """What the model says for each label; with an end marker when one answer is a prefix of
        another (else the shorter label's score would include the longer one's)."""
        key = task.fingerprint()
        conts = self._task_cache.get(key)
        if conts is None:
            lead = "" if self.is_chat else " "
            conts = {lab.name: lead + lab.answer for lab in task.labels}
            if _prefix_related(list(conts.values())):
                end = self._end_of_turn if self.is_chat else "\n"
                conts = {k: v + end for k, v in conts.items()}
            self._task_cache[key] = conts
        return conts

    def label_sequences(self, task: Task, fields: dict[str, str]) -> dict[str, list[int]]:
        """The full token sequence (prompt + answer) for each label, as the model reads it."""
        prompt = self.render(task, fields)
        return {k: self.tokenize(prompt + c) for k, c in self._continuations(task).items()}

    def _prepare(self, task: Task, item: Item) -> _Prepared:
        fields: dict[str, str] = {}
        for f in task.fields:
            value = item.fields.get(f)
            if value is None:
                raise _Unanswerable(f"missing field {f!r}")
            if not str(value).strip():
                one = len(task.fields) == 1
                raise _Unanswerable("empty text" if one else f"field {f!r} is empty")
            fields[f] = str(value)
        truncated = False
        margin = 8
        for _ in range(8):
            seqs = self.label_sequences(task, fields)
            need = max(len(s) for s in seqs.values())
            if need <= self.n_ctx:
                return _Prepared(seqs, truncated)
            fields = self._shorten(fields, need - self.n_ctx + margin)
            truncated = True
            margin *= 2
        raise _Unanswerable(f"cannot fit the item into n_ctx={self.n_ctx} tokens")

    def _shorten(self, fields: dict[str, str], excess: int) -> dict[str, str]:
        """Cut ``excess`` tokens out of the fields, in proportion to their length, keeping each
        field's head and tail (the middle is the least informative part of a long text)."""
        toks = {f: self._plain_tokens(v) for f, v in fields.items()}
        total = sum(len(t) for t in toks.values())
        if total <= excess:
            raise _Unanswerable(
                f"the prompt without the item's text needs more than n_ctx={self.n_ctx} tokens"
            )
        out = {}
        for f, t in toks.items():
            cut = -(-excess * len(t) // total)  # ceil
            keep = max(0, len(t) - cut)
            if keep >= len(t):
                out[f] = fields[f]
                continue
            n_head, n_tail = (keep + 1) // 2, keep // 2
            head, tail = t[:n_head], (t[len(t) - n_tail :] if n_tail else [])
            out[f] = (
                self._llm.detokenize(head).decode("utf-8", errors="ignore")
                + _ELLIPSIS
                + self._llm.detokenize(tail).decode("utf-8", errors="ignore")
            )
        return out

    # ------------------------------------------------------------ evaluation

    def _clear(self) -> None:
        self._lc.llama_memory_clear(self._lc.llama_get_memory(self._ctx), True)
        self._kv = []
        self._canon = None

    def task_prefix(self, task: Task) -> list[int]:
        """The tokens every prompt of ``task`` begins with, whatever the item's text: the common
        token prefix of prompts rendered for unlike probe texts, one token shorter so that no text
        can merge with its last token."""
        key = task.fingerprint()
        prefix = self._prefixes.get(key)
        if prefix is None:
            probes = ("A", "7", "!", "\n", " x", "é")
            seqs = [self.tokenize(self.render(task, dict.fromkeys(task.fields, p))) for p in probes]
            n = min(_lcp(seqs[0], s) for s in seqs[1:])
            prefix = seqs[0][: max(0, n - 1)]
            self._prefixes[key] = prefix
        return prefix

    def _anchor(self, target: list[int], prefix: list[int]) -> int:
        """Prepare the cache for a new item and return the position its evaluation starts from:
        the end of the task prefix (evaluated alone: once, or for every item without
        ``prefix_cache``, so that both modes give the same votes), or 0 when the item's tokens do
        not begin with it (then the item is evaluated whole, from an empty cache)."""
        if len(prefix) < 2 or target[: len(prefix)] != prefix:
            self._clear()
            return 0
        if not self.prefix_cache or self._canon != prefix or self._kv[: len(prefix)] != prefix:
            self._clear()
            self._ensure(prefix, len(prefix) - 1)
            self._canon = list(prefix)
        return len(prefix)

    def _ensure(self, target: list[int], want_from: int, cap: int | None = None) -> list[_Row]:
        """Make the cache hold exactly ``target``; return the rows (next-token distributions) at
        positions ``want_from .. len(target)-1``.  Reuses the longest common token prefix, but
        never more than ``cap`` tokens."""
        keep = min(_lcp(self._kv, target), want_from)
        if cap is not None:
            keep = min(keep, cap)
        if keep < len(self._kv):
            if self._canon is not None and keep < len(self._canon):
                self._canon = None
            mem = self._lc.llama_get_memory(self._ctx)
            ok = keep > 0 and self._lc.llama_memory_seq_rm(mem, 0, keep, -1)
            # a cache that cannot roll back (recurrent, pruned sliding window): start over
            if not ok or self._lc.llama_memory_seq_pos_min(mem, 0) > 0:
                self._clear()
                keep = 0
            else:
                del self._kv[keep:]
        rows: list[_Row] = []
        b = self._batch
        pos = keep
        while pos < len(target):
            chunk = target[pos : pos + self._n_batch]
            b.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = pos + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = pos + i >= want_from
            rc = self._lc.llama_decode(self._ctx, b)
            if rc != 0:
                self._clear()
                raise RuntimeError(f"llama_decode returned {rc}")
            self._kv.extend(chunk)
            self.tokens_evaluated += len(chunk)
            for i in range(len(chunk)):
                if pos + i >= want_from:
                    ptr = self._lc.llama_get_logits_ith(self._ctx, i)
                    logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()
                    m = float(logits.max())
                    lse = m + float(np.log(np.exp(logits.astype(np.float64) - m).sum()))
                    rows.append(_Row(logits, lse))
            pos += len(chunk)
        return rows

    def _score_sequences(
        self, sequences: dict[str, list[int]], prefix: list[int] | None = None
    ) -> dict[str, float]:
        """Sum of token log-probs of each sequence after the part all of them share.  The first
        evaluation starts at the task prefix (see :meth:`_anchor`), the others reuse it."""
        seqs = list(sequences.values())
        shared = min(_lcp(seqs[0], s) for s in seqs[1:]) if len(seqs) > 1 else len(seqs[0]) - 1
        shared = min(shared, min(len(s) for s in seqs) - 1)
        if shared < 1:
            raise _Unanswerable("the labels' token sequences share no prompt")
        rests = {k: s[shared:] for k, s in sequences.items()}
        rows: dict[tuple[int, ...], _Row] = {}
        cap: int | None = None
        # visit labels in token order so that neighbours share their leading tokens
        for visit, name in enumerate(sorted(rests, key=lambda k: rests[k])):
            rest = rests[name]
            missing = next((i for i in range(len(rest)) if tuple(rest[:i]) not in rows), None)
            if missing is None:
                continue
            target = sequences[name][:-1]
            if visit == 0:
                cap = self._anchor(target, prefix or [])
            new = self._ensure(target, shared - 1 + missing, cap)
            cap = None
            for k, row in enumerate(new):
                rows[tuple(rest[: missing + k])] = row
        return {
            name: sum(rows[tuple(rest[:i])].logprob(tok) for i, tok in enumerate(rest))
            for name, rest in rests.items()
        }

    def label_logprobs(self, task: Task, item: Item) -> tuple[dict[str, float], bool]:
        """Raw (uncalibrated, unnormalised) log-probability of each label's answer, and whether
        the item was truncated.  Raises ``ValueError`` for an item that cannot be scored."""
        try:
            prep = self._prepare(task, item)
        except _Unanswerable as e:
            raise ValueError(str(e)) from None
        return self._score_sequences(prep.sequences, self.task_prefix(task)), prep.truncated

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
        votes: list[Vote] = []
        self.last_latencies = []
        for item in items:
            t0 = time.perf_counter()
            try:
                prep = self._prepare(task, item)
                raw = self._score_sequences(prep.sequences, self.task_prefix(task))
            except _Unanswerable as e:
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


def _prefix_related(texts: list[str]) -> bool:
    return any(a != b and b.startswith(a) for a in texts for b in texts)


def from_spec(spec: str, **options: Any) -> LlamaCppBackend:
    """A catalogue name (installed with ``speculabel models pull``) or ``gguf:PATH``.

    Options: ``n_threads`` (default: all usable cores), ``n_ctx`` (2048), ``n_batch`` (512),
    ``prefix_cache`` (True), ``contextual_calibration`` ({label: log-prob} subtracted before
    renormalising), ``verbose`` (False), ``chat`` (default: the catalogue's kind, or whether the
    file has a chat template).
    """
    from speculabel.models import CATALOGUE, ModelError, resolve_model

    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise BackendError(
            f"{spec}: unknown option(s) {unknown}; llama.cpp accepts {', '.join(_OPTIONS)}"
        )
    try:
        path = resolve_model(spec)
    except ModelError as e:
        raise BackendError(str(e)) from e
    if options.get("chat") is None and spec in CATALOGUE:
        options["chat"] = CATALOGUE[spec].is_chat
    return LlamaCppBackend(spec, path, **options)
