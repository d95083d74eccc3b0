"""Reading labels out of OpenAI-compatible answers: next-token log-probabilities, echoed
continuations, constrained choices and strict free text.  Pure functions of the JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from speculabel.backends.openai.transport import Failed
from speculabel.errors import SpeculabelError
from speculabel.records import normalise_logprobs
from speculabel.tasks import Task


class Abstain(SpeculabelError):
    """The endpoint answered, but no label can be read from the answer."""


class SharedFirstToken(Abstain):
    """Two labels start with the same token: one next-token distribution cannot tell them apart."""


def label_logprobs(
    answers: dict[str, str], top: dict[str, float], k: int | None = None
) -> dict[str, float]:
    """Renormalised label distribution from the top next-token log-probabilities.

    ``answers`` maps label name -> the text the model would say (with the leading space in
    completion mode).  A label is scored by the longest returned token that is a non-empty
    prefix of its answer.  If no label matches exactly, tokens are compared without leading
    whitespace (some tokenizers report the first token with a space).  Labels with no match get
    the smallest returned log-probability (an upper bound on their true value).
    """
    tokens = {t: lp for t, lp in top.items() if t and math.isfinite(lp)}
    if not tokens:
        raise Abstain("the endpoint returned no usable next-token log-probabilities")

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
        raise Abstain(f"none of the labels is among the top {k or len(tokens)} next tokens (top: {shown})")
    seen: dict[str, str] = {}
    for name, tok in match.items():
        if tok in seen:
            raise SharedFirstToken(
                f"labels {seen[tok]!r} and {name!r} share their first token {tok!r}; give them "
                "answer texts that start differently, or use prompt='completion'"
            )
        seen[tok] = name
    floor = min(tokens.values())
    lps = {name: (tokens[match[name]] if name in match else floor) for name in answers}
    return normalise_logprobs(lps)


def first_top_logprobs(data: dict[str, Any]) -> dict[str, float] | None:
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


def continuation_logprob(data: dict[str, Any], prompt_chars: int) -> float:
    """Sum of the echoed log-probabilities of the tokens after ``prompt_chars`` characters."""
    try:
        lp = data["choices"][0]["logprobs"]
        offsets, values = lp["text_offset"], lp["token_logprobs"]
    except (KeyError, IndexError, TypeError) as e:
        raise Failed("the endpoint did not echo prompt log-probabilities") from e
    # the last entry is the one generated token (max_tokens=1): drop it
    pairs = list(zip(offsets, values, strict=False))[:-1]
    total = [v for off, v in pairs if off >= prompt_chars and v is not None]
    if not total:
        raise Failed("the echoed log-probabilities do not cover the label")
    return float(sum(total))


def output_text(data: dict[str, Any]) -> str:
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError) as e:
        raise Failed(f"answer without choices: {json.dumps(data)[:200]}") from e
    msg = choice.get("message")
    if isinstance(msg, dict):
        return str(msg.get("content") or "")
    return str(choice.get("text") or "")


def output_logprob_sum(data: dict[str, Any]) -> float | None:
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


def gbnf_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
