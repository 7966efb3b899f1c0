"""Chat backends behind one interface (``base.Backend``)."""

from sim4seg.cot.backends.base import Backend, BackendError, PreflightError, TransientError

__all__ = ["Backend", "BackendError", "PreflightError", "TransientError"]
