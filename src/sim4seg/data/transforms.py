"""Image geometry shared by the dataset, the predictor and RVLS2M: the two frames an image is seen in.

- **The segmenter's frame** (``SegmenterFrame``): SAM resizes the longest side to ``sam_size``
  (SAM's rounding), normalises and zero-pads bottom-right to ``sam_size × sam_size``
  (``sam_resized_size``, ``sam_frame``); SAM2 resizes the whole image to the square, aspect not
  kept, no padding (``resize="square"``). Masks map back through ``SegmenterFrame.resized_size``.
- **The LVLM's frame**: whatever its processor does (resize, centre-crop or pad);
  ``lvlm_token_box`` says where the token grid lies in the original image, ``(x0, y0, x1, y1)``
  in original-image pixels, so RVLS2M can map its cells back through original coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

SAM_MEAN = (123.675, 116.28, 103.53)
"""SAM's pixel mean on the 0–255 scale (segment_anything; ``SamImageProcessor``'s ImageNet mean × 255)."""
SAM_STD = (58.395, 57.12, 57.375)
"""SAM's pixel standard deviation on the 0–255 scale."""
RESIZE_MODES = ("longest", "square")
"""``SegmenterFrame.resize``: SAM's longest-side resize + padding, SAM2's stretch to the square."""
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
"""PIL's resampling filters by the number a ``preprocessor_config.json`` stores."""


@dataclass(frozen=True)
class SegmenterFrame:
    """How a segmenter checkpoint wants its image: its own ``preprocessor_config.json``, read, not assumed.

    SAM: ImageNet mean/std, bilinear; MedSAM (flaviagiammarino/medsam-vit-base): ``do_normalize: false``
    (inputs in [0, 1]) and bicubic. ``resize="longest"`` (``SamImageProcessor``): longest side → ``size``,
    zero-padded bottom-right to ``size × size``. ``resize="square"`` (``Sam2ImageProcessor``, whose
    ``size`` is ``{height, width}`` and which has no padding): the image stretched to ``size × size``.
    """

    size: int = 1024
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resample: int = 2
    resize: str = "longest"
    """``"longest"`` (SAM: keep the aspect, pad bottom-right) or ``"square"`` (SAM2: stretch, no padding)."""

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")

    def resized_size(self, image_size: Sequence[int]) -> tuple[int, int]:
        """(H', W'): where an (H, W) image lies in this frame, from its top-left corner (the rest is padding)."""
        if self.resize == "square":
            return self.size, self.size
        return sam_resized_size(image_size, self.size)

    @classmethod
    def from_processor_config(cls, d: dict, path=None) -> SegmenterFrame:
        """A ``SamImageProcessor`` / ``Sam2ImageProcessor`` config dict → the frame; InputError naming ``path``."""
        from sim4seg.errors import InputError

        try:
            size = d.get("size") or {}
            side = size.get("longest_edge") if isinstance(size, dict) else size
            pad = d.get("pad_size") or {}
            resize = "longest"
            if str(d.get("image_processor_type", "")).startswith("Sam2"):  # SAM2's processors always stretch
                resize = "square"
            if side is None and isinstance(size, dict) and "height" in size:  # SAM2: a fixed square resize
                side, resize = size["height"], "square"
                if int(size.get("width", side)) != int(side):
                    raise ValueError(f"size {size} is not square; the segmenter takes a square input")
            if resize == "square" and d.get("do_pad"):
                raise ValueError(f"size {size} (a SAM2 stretch to the square) with do_pad: true is inconsistent")
            if side is None:
                raise ValueError("size.longest_edge (SAM) or size.height/width (SAM2) is missing")
            if pad and (int(pad.get("height", side)) != int(side) or int(pad.get("width", side)) != int(side)):
                raise ValueError(f"pad_size {pad} differs from the longest edge {side}")
            resample = int(d.get("resample", 2))
            if resample not in RESAMPLE:
                raise ValueError(f"resample {resample} is not a PIL filter {sorted(RESAMPLE)}")
            frame = cls(
                size=int(side),
                do_rescale=bool(d.get("do_rescale", True)),
                rescale_factor=float(d.get("rescale_factor", 1 / 255)),
                do_normalize=bool(d.get("do_normalize", True)),
                image_mean=tuple(float(v) for v in d.get("image_mean", cls.image_mean)),
                image_std=tuple(float(v) for v in d.get("image_std", cls.image_std)),
                resample=resample,
                resize=resize,
            )
            if len(frame.image_mean) != 3 or len(frame.image_std) != 3 or min(frame.image_std) <= 0:
                raise ValueError("image_mean and image_std must be 3 numbers, std > 0")
            return frame
        except (TypeError, ValueError, AttributeError) as e:
            raise InputError(f"segmenter preprocessing: {e}", path) from None

    def to_processor_config(self, processor_class: str | None = None) -> dict:
        """The ``preprocessor_config.json`` content: ``SamImageProcessor``'s keys, or ``Sam2ImageProcessor``'s
        for the square frame (``size: {height, width}``, no padding), so transformers reads it the same way."""
        common = {
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "resample": self.resample,
            "do_convert_rgb": True,
        }
        if self.resize == "square":
            return {
                "image_processor_type": processor_class or "Sam2ImageProcessor",
                "do_resize": True,
                "size": {"height": self.size, "width": self.size},
                **common,
                "mask_size": {"height": self.size // 4, "width": self.size // 4},  # the prompt frame
            }
        return {
            "image_processor_type": processor_class or "SamImageProcessor",
            "do_resize": True,
            "size": {"longest_edge": self.size},
            "do_pad": True,
            "pad_size": {"height": self.size, "width": self.size},
            **common,
            "mask_size": {"longest_edge": 256},
            "mask_pad_size": {"height": 256, "width": 256},
        }

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 → (3, S, S) float32 in this checkpoint's input scale."""
        rh, rw = self.resized_size(image.shape[:2])
        filt = Image.Resampling[RESAMPLE[self.resample].upper()]
        x = np.asarray(Image.fromarray(image).resize((rw, rh), filt), dtype=np.float32)
        if self.do_rescale:
            x = x * np.float32(self.rescale_factor)
        if self.do_normalize:
            x = (x - np.array(self.image_mean, np.float32)) / np.array(self.image_std, np.float32)
        out = torch.zeros(3, self.size, self.size)
        out[:, :rh, :rw] = torch.from_numpy(x).permute(2, 0, 1)
        return out


def sam_resized_size(image_size: Sequence[int], sam_size: int = 1024) -> tuple[int, int]:
    """(H', W') of an image in SAM's frame: longest side → ``sam_size`` (SAM's rounding)."""
    h, w = (int(v) for v in image_size)
    scale = sam_size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def sam_frame(image: np.ndarray, sam_size: int, frame: SegmenterFrame | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, S, S) float32: longest side → S, normalised, zero-padded bottom-right.

    ``frame``: the checkpoint's own preprocessing (``SegmenterFrame``); without it SAM's published one.
    """
    if frame is not None:
        return frame(image)
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
