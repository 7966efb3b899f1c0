"""The interface every chat backend implements, and its errors."""

from __future__ import annotations

from typing import Protocol

from sim4seg.cot.images import ImageInput
from sim4seg.errors import Sim4SegError


class BackendError(Sim4SegError):
    """A request that failed for good (after retries, or a 4xx that retrying cannot fix)."""


class TransientError(BackendError):
    """A failure worth retrying: 429, 5xx, timeout, dropped connection, malformed reply."""


class PreflightError(Sim4SegError):
    """The backend cannot serve the run at all (unreachable, unknown model, auth): stop before it starts."""


class Backend(Protocol):
    """One chat turn with an image: ``generate(system, text, image) -> reply``.

    ``image`` holds an ``HxWx3`` uint8 RGB array and its cached data URL. Implementations are safe to call from
    several threads at once (they serialise internally where they must).
    """

    name: str
    """What results record as the model (a model id or path); never contains a secret."""

    def preflight(self) -> None:
        """Raise ``PreflightError`` if the backend cannot serve requests."""

    def generate(self, system: str, text: str, image: ImageInput, *, max_tokens: int, temperature: float) -> str:
        """The reply's text; raises ``BackendError`` when the request fails for good."""
