"""The one error base of the package.

Every error speculabel raises on purpose derives from :class:`SpeculabelError`, so a caller can
catch them all in one ``except`` and the CLI can turn any of them into one line and exit status 2.
Subclasses keep their historical built-in bases too (``ValueError``, ``RuntimeError``), so code
that caught those still works.
"""

from __future__ import annotations

from typing import Any


class SpeculabelError(Exception):
    """Base of every error the package raises on purpose (bad input, settings, models, files)."""


class PendingError(SpeculabelError):
    """Items were left undecided (the judge was unavailable after its retries); ``ids`` names them."""

    def __init__(self, ids: list[str], message: str | None = None,
                 records: list[Any] | None = None) -> None:
        self.ids = list(ids)
        self.records = list(records or [])  # every record of the call, the pending ones too
        shown = ", ".join(repr(i) for i in self.ids[:10])
        more = f" and {len(self.ids) - 10} more" if len(self.ids) > 10 else ""
        super().__init__(message or f"{len(self.ids)} items left undecided because the judge was "
                                    f"unavailable: {shown}{more}; classify them again later")
