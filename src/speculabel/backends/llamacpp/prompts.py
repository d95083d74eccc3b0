"""Prompts for the llama.cpp backend: the text and tokens each label is scored on.

* The prompt is the task's chat messages rendered with the model's own chat template (chat
  models; the label is the assistant's answer) or the task's completion prompt (base models; the
  label follows the answer cue after a space).
* Each label's text is tokenized *together with* the prompt, so every label is scored under its
  natural tokenization.  If one label's text is a prefix of another's, every label gets an end
  marker (the template's end-of-turn token, or a newline for base models), so that the scores are
  probabilities of exclusive answers.
* Item text never acts as control tokens: ``<|im_end|>`` inside a tweet is defused.
* A text longer than the context is cut in the middle (head and tail kept) and flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from speculabel.backends.base import BackendError
from speculabel.backends.llamacpp.engine import Unanswerable, common_prefix
from speculabel.records import Item
from speculabel.tasks import Task

_ELLIPSIS = " … "


@dataclass
class Prepared:
    """The token sequences of one item, one per label, and whether its text was shortened."""

    sequences: dict[str, list[int]]
    truncated: bool


def _prefix_related(texts: list[str]) -> bool:
    return any(a != b and b.startswith(a) for a in texts for b in texts)


class Prompts:
    """Renders and tokenizes a task's prompts for one loaded model."""

    def __init__(self, llama_cpp: Any, llm: Any, spec: str, chat: bool | None, n_ctx: int) -> None:
        self._lc = llama_cpp
        self._llm = llm
        self.n_ctx = n_ctx
        self._n_vocab = int(llm.n_vocab())
        self._controls: list[str] | None = None
        self._prefixes: dict[str, list[int]] = {}  # task fingerprint -> static prefix tokens
        self._task_cache: dict[str, dict[str, str]] = {}  # task fingerprint -> continuations
        meta: dict[str, str] = dict(llm.metadata)
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
                eos_token=self.token_text(llm.token_eos()),
                bos_token=self.token_text(llm.token_bos()),
                add_generation_prompt=True,
            )
            self._end_of_turn = self._find_end_of_turn(str(template))

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def _find_end_of_turn(self, template: str) -> str:
        """The text a template puts right after an assistant answer (``<|im_end|>``, ...)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        marker = "SPECULABELANSWER"
        fmt = Jinja2ChatFormatter(
            template=template,
            eos_token=self.token_text(self._llm.token_eos()),
            bos_token=self.token_text(self._llm.token_bos()),
            add_generation_prompt=False,
        )
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": marker}]
        try:
            text = fmt(messages=msgs).prompt  # type: ignore[arg-type]
        except Exception:
            text = ""
        after = text.split(marker, 1)[1].strip() if marker in text else ""
        return after.split()[0] if after else self.token_text(self._llm.token_eos())

    def control_texts(self) -> list[str]:
        """The texts of the model's control and user-defined tokens (``<|im_end|>``, ...), longest
        first: tokenizing a chat prompt with ``special=True`` would read them as control tokens
        even inside an item's text."""
        if self._controls is None:
            lc = self._lc
            vocab = lc.llama_model_get_vocab(self._llm.model)
            flags = lc.LLAMA_TOKEN_ATTR_CONTROL | lc.LLAMA_TOKEN_ATTR_USER_DEFINED
            found = {self.token_text(t) for t in range(self._n_vocab)
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

    def plain_tokens(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def continuations(self, task: Task) -> dict[str, str]:
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
        return {k: self.tokenize(prompt + c) for k, c in self.continuations(task).items()}

    def prepare(self, task: Task, item: Item) -> Prepared:
        fields: dict[str, str] = {}
        for f in task.fields:
            value = item.fields.get(f)
            if value is None:
                raise Unanswerable(f"missing field {f!r}")
            if not str(value).strip():
                one = len(task.fields) == 1
                raise Unanswerable("empty text" if one else f"field {f!r} is empty")
            fields[f] = str(value)
        truncated = False
        margin = 8
        for _ in range(8):
            seqs = self.label_sequences(task, fields)
            need = max(len(s) for s in seqs.values())
            if need <= self.n_ctx:
                return Prepared(seqs, truncated)
            fields = self.shorten(fields, need - self.n_ctx + margin)
            truncated = True
            margin *= 2
        raise Unanswerable(f"cannot fit the item into n_ctx={self.n_ctx} tokens")

    def shorten(self, fields: dict[str, str], excess: int) -> dict[str, str]:
        """Cut ``excess`` tokens out of the fields, in proportion to their length, keeping each
        field's head and tail (the middle is the least informative part of a long text)."""
        toks = {f: self.plain_tokens(v) for f, v in fields.items()}
        total = sum(len(t) for t in toks.values())
        if total <= excess:
            raise Unanswerable(
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


    def task_prefix(self, task: Task) -> list[int]:
        """The tokens every prompt of ``task`` begins with, whatever the item's text: the common
        token prefix of prompts rendered for unlike probe texts, one token shorter so that no text
        can merge with its last token."""
        key = task.fingerprint()
        prefix = self._prefixes.get(key)
        if prefix is None:
            probes = ("A", "7", "!", "\n", " x", "é")
            seqs = [self.tokenize(self.render(task, dict.fromkeys(task.fields, p))) for p in probes]
            n = min(common_prefix(seqs[0], s) for s in seqs[1:])
            prefix = seqs[0][: max(0, n - 1)]
            self._prefixes[key] = prefix
        return prefix
