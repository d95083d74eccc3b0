"""Model backends behind one interface (:class:`Backend`), one module per model kind.

Heavy libraries (llama-cpp-python, httpx, torch) are imported inside the backend that needs them,
so importing speculabel stays cheap.
"""

from speculabel.backends.base import Backend, BackendError, FunctionBackend
from speculabel.backends.registry import available_kinds, load_backend

__all__ = ["Backend", "BackendError", "FunctionBackend", "available_kinds", "load_backend"]
