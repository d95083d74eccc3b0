"""Secrets never reach a message, a log line or a results file.

Server error bodies can echo a request (its ``Authorization`` header included), and users put
keys into URLs.  :func:`redact` masks what looks like a credential; a backend that knows its key
passes it as ``secrets`` so that the exact value is masked wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_PATTERNS = (
    # scheme://user:password@host  or  scheme://token@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@"), r"\1" + MASK + "@"),
    # Authorization: Bearer xyz / Basic xyz (in headers echoed back, or in JSON)
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}"), r"\1\2" + MASK),
    # api_key=..., "api-key": "...", token=..., password=..., secret=...
    (
        re.compile(
            r"(?i)((?:api[_-]?key|access[_-]?token|auth[_-]?token|token|password|secret)"
            r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"
        ),
        r"\1" + MASK,
    ),
    # common key shapes: OpenAI-style sk-..., hf_..., long hex/base64 runs after "key"
    (re.compile(r"\b(sk|pk|rk|hf)[-_][A-Za-z0-9_-]{12,}"), r"\1-" + MASK),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials masked: the given ``secrets`` verbatim, and anything that looks
    like a key in a URL, a header or a ``key=value`` pair."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text
