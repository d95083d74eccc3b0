"""speculabel: multi-model speculative classification.

Small worker models label each item; an acceptance rule decides whether their vote stands;
a large judge model labels the rest (arXiv 2503.18076, extended).

    from speculabel import Cascade, load_backend, load_task, make_policy
    task = load_task("sentiment")
    cascade = Cascade(task, [load_backend("vader"), load_backend("gemma3-270m")],
                      load_backend("qwen2.5-1.5b"), make_policy("majority"))
    records = cascade.classify(items)

Importing this package loads no model library: backends import theirs when they are built.
Every error it raises on purpose derives from :class:`SpeculabelError`.
"""

from typing import TYPE_CHECKING, Any

from speculabel.backends.base import Backend, BackendError, FunctionBackend
from speculabel.backends.registry import load_backend
from speculabel.cascade import Cascade, CascadeConfig, build_cascade, load_config
from speculabel.certify.api import Certificate, calibrate
from speculabel.errors import PendingError, SpeculabelError
from speculabel.match import match
from speculabel.policy import ConfidentMajority, Majority, Unanimous, WeightedVote, make_policy
from speculabel.records import Item, Record, Vote
from speculabel.tasks import Example, Label, Task, load_task

if TYPE_CHECKING:
    from speculabel.adaptive.finite import CertifiedLabels, classify_certified

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    """Load the certified file run on first use: it needs numpy, which ``import speculabel`` must not."""
    if name in ("CertifiedLabels", "classify_certified"):
        from speculabel.adaptive import finite

        return getattr(finite, name)
    raise AttributeError(f"module 'speculabel' has no attribute {name!r}")

__all__ = [
    "Backend",
    "BackendError",
    "Cascade",
    "CascadeConfig",
    "Certificate",
    "CertifiedLabels",
    "ConfidentMajority",
    "Example",
    "FunctionBackend",
    "Item",
    "Label",
    "Majority",
    "PendingError",
    "Record",
    "SpeculabelError",
    "Task",
    "Unanimous",
    "Vote",
    "WeightedVote",
    "build_cascade",
    "calibrate",
    "classify_certified",
    "load_backend",
    "load_config",
    "load_task",
    "make_policy",
    "match",
]
