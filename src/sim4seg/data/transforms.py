"""Image geometry shared by the dataset, the predictor and RVLS2M: the two frames an image is seen in.

- **SAM's frame**: the longest side resized to ``sam_size`` (SAM's rounding), normalised,
  zero-padded bottom-right to ``sam_size × sam_size`` (``sam_resized_size``, ``sam_frame``).
- **The LVLM's frame**: whatever its processor does (resize, centre-crop or pad);
  ``lvlm_token_box`` says where the token grid lies in the original image, ``(x0, y0, x1, y1)``
  in original-image pixels, so RVLS2M can map its cells back through original coordinates.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

SAM_MEAN = (123.675, 116.28, 103.53)
"""SAM's pixel mean on the 0–255 scale (segment_anything; ``SamImageProcessor``'s ImageNet mean × 255)."""
SAM_STD = (58.395, 57.12, 57.375)
"""SAM's pixel standard deviation on the 0–255 scale."""


def sam_resized_size(image_size: Sequence[int], sam_size: int = 1024) -> tuple[int, int]:
    """(H', W') of an image in SAM's frame: longest side → ``sam_size`` (SAM's rounding)."""
    h, w = (int(v) for v in image_size)
    scale = sam_size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def sam_frame(image: np.ndarray, sam_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, S, S) float32: longest side → S (bilinear), SAM-normalised, zero-padded bottom-right."""
    h, w = image.shape[:2]
    rh, rw = sam_resized_size((h, w), sam_size)
    resized = np.asarray(Image.fromarray(image).resize((rw, rh), Image.BILINEAR), dtype=np.float32)
    norm = (resized - np.array(SAM_MEAN, np.float32)) / np.array(SAM_STD, np.float32)
    out = torch.zeros(3, sam_size, sam_size)
    out[:, :rh, :rw] = torch.from_numpy(norm).permute(2, 0, 1)
    return out


def lvlm_token_box(image_processor, image_size: Sequence[int]) -> tuple[float, float, float, float]:
    """Where the LVLM's token grid lies in the original image, (x0, y0, x1, y1), from the processor's geometry.

    Padding to a square (``do_pad``) reaches outside the image; resize-shortest-side + centre crop
    covers the central part; a plain resize covers the whole image.
    """
    h, w = (float(v) for v in image_size)
    if getattr(image_processor, "do_pad", False):
        side = max(h, w)
        return (-(side - w) / 2, -(side - h) / 2, w + (side - w) / 2, h + (side - h) / 2)
    size = getattr(image_processor, "size", None) or {}
    crop = getattr(image_processor, "crop_size", None) or {}
    if getattr(image_processor, "do_center_crop", False) and "shortest_edge" in size and crop:
        short = float(size["shortest_edge"])
        rh, rw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        ch, cw = float(crop["height"]), float(crop["width"])
        top, left = max(rh - ch, 0) // 2, max(rw - cw, 0) // 2
        sy, sx = h / rh, w / rw
        return (left * sx, top * sy, (left + min(cw, rw)) * sx, (top + min(ch, rh)) * sy)
    return (0.0, 0.0, w, h)
