"""A sample's image, read once and encoded once for every request that sends it.

Images are read with ``sim4seg.data.io.read_image`` (so 16-bit, EXIF-rotated and DICOM
files arrive as displayed), shrunk so that the longer side is at most ``max_side``
(LVLM processors work at 336–896 px; sending 4000-px photos only costs bandwidth),
and encoded as a base64 data URL: JPEG when the source file is a JPEG (re-encoding a
JPEG losslessly as PNG only makes it larger), PNG otherwise.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sim4seg.data.io import read_image

FORMATS = ("auto", "png", "jpeg")
JPEG_QUALITY = 95


@dataclass
class ImageInput:
    """An ``HxWx3`` uint8 RGB image and its cached data URL."""

    array: np.ndarray
    fmt: str = "png"
    """``png`` or ``jpeg``: how ``data_url`` encodes it."""
    _url: str | None = field(default=None, repr=False)

    def pil(self) -> Image.Image:
        return Image.fromarray(self.array, mode="RGB")

    def data_url(self) -> str:
        if self._url is None:
            buf = io.BytesIO()
            if self.fmt == "jpeg":
                self.pil().save(buf, format="JPEG", quality=JPEG_QUALITY)
            else:
                self.pil().save(buf, format="PNG", compress_level=1)
            mime = "image/jpeg" if self.fmt == "jpeg" else "image/png"
            self._url = f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        return self._url


def shrink(array: np.ndarray, max_side: int) -> np.ndarray:
    """Resize ``HxWx3`` so that ``max(H, W) <= max_side`` (aspect kept); ``max_side <= 0``: unchanged."""
    h, w = array.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return array
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))


def load_image(path: str | os.PathLike, *, max_side: int = 1024, fmt: str = "auto") -> ImageInput:
    """Read ``path`` (any format ``read_image`` takes); raises ``ImageReadError`` naming the file."""
    if fmt not in FORMATS:
        raise ValueError(f"image format must be one of {FORMATS}, got {fmt!r}")
    array = shrink(read_image(path), max_side)
    if fmt == "auto":
        fmt = "jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "png"
    return ImageInput(np.ascontiguousarray(array), fmt)
