"""Named presets of real checkpoints (one per useful LVLM + segmenter pairing) and loading from hub ids or paths.

Each preset names its checkpoints and the published variants of its backbones
(``backbones/llava.py``, ``backbones/sam.py``, ``backbones/sam2.py`` ``VARIANTS``), which fix its geometry:
image tokens, token grid, SAM input size and prompt frame (``sim4seg model build PRESET --shrink``
writes a small random model with exactly that geometry).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from sim4seg.errors import InputError
from sim4seg.model.backbones import lvlm_adapter, segmenter_adapter
from sim4seg.model.compose import check_architecture, compose
from sim4seg.model.config import Sim4SegConfig
from sim4seg.model.lisa import load_lisa


@dataclass(frozen=True)
class Preset:
    lvlm: str
    """Hub id or local path of the LVLM (HF format) or, with ``lisa=True``, of a LISA checkpoint."""
    sam: str | None
    """Hub id or local path of the segmenter (HF format); ``None`` when the LISA checkpoint holds SAM."""
    lvlm_variant: str
    """Key of the LVLM's published geometry in its backbone module's ``VARIANTS``."""
    sam_variant: str
    """Key of the segmenter's published geometry (``backbones/sam.py`` / ``sam2.py`` ``VARIANTS``)."""
    lisa: bool = False
    note: str = ""
    max_pixels: int | None = None
    """A dynamic-resolution LVLM's pixel budget per image, replacing its processor's (fewer image tokens)."""


PRESETS: dict[str, Preset] = {
    "lisa-7b": Preset(
        "xinlai/LISA-7B-v1",
        None,
        "lisa",
        "sam-vit-h",
        lisa=True,
        note="the paper's initialisation: LISA-7B (LLaVA + SAM ViT-H + ϕ), converted on load",
    ),
    "llava-1.5-7b+sam-vit-h": Preset(
        "llava-hf/llava-1.5-7b-hf",
        "facebook/sam-vit-huge",
        "llava-1.5",
        "sam-vit-h",
        note="LLaVA-1.5-7B and SAM ViT-H; ϕ and [SEG] start untrained",
    ),
    "llava-1.5-7b+sam2.1-hiera-large": Preset(
        "llava-hf/llava-1.5-7b-hf",
        "facebook/sam2.1-hiera-large",
        "llava-1.5",
        "sam2.1-hiera-large",
        note="LLaVA-1.5-7B and SAM 2.1 Hiera-L (Sam2Model: square 1024-px frame, high-resolution features)",
    ),
    "llava-med+medsam": Preset(
        "chaoyinshe/llava-med-v1.5-mistral-7b-hf",
        "flaviagiammarino/medsam-vit-base",
        "llava-med",
        "medsam",
        note="LLaVA-Med v1.5 and MedSAM, both in HF format (community conversions)",
    ),
    "qwen2.5-vl-7b+sam2": Preset(
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "facebook/sam2.1-hiera-large",
        "qwen2.5-vl-7b",
        "sam2.1-hiera-large",
        note="Qwen2.5-VL-7B (dynamic resolution, at most 1280 image tokens) and SAM 2.1 Hiera-L (square 1024-px "
        "frame, high-resolution features); ϕ and [SEG] start untrained",
        max_pixels=1280 * 28 * 28,
    ),
    "qwen2.5-vl-7b+sam-vit-h": Preset(
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "facebook/sam-vit-huge",
        "qwen2.5-vl-7b",
        "sam-vit-h",
        note="Qwen2.5-VL-7B (dynamic resolution, at most 1280 image tokens) and SAM ViT-H; ϕ and [SEG] start untrained",
        max_pixels=1280 * 28 * 28,
    ),
    "qwen3-vl-8b+sam-vit-h": Preset(
        "Qwen/Qwen3-VL-8B-Instruct",
        "facebook/sam-vit-huge",
        "qwen3-vl-8b",
        "sam-vit-h",
        note="Qwen3-VL-8B (dynamic resolution, at most 1280 image tokens, deepstack) and SAM ViT-H; ϕ and [SEG] "
        "start untrained",
        max_pixels=1280 * 32 * 32,
    ),
}


def sam_frame_of(sam: str | os.PathLike):
    """The segmenter's own preprocessing from its ``preprocessor_config.json`` (hub id or local path)."""
    from transformers.image_processing_utils import ImageProcessingMixin

    from sim4seg.data.transforms import SegmenterFrame

    try:
        d, _ = ImageProcessingMixin.get_image_processor_dict(str(sam))
    except (OSError, ValueError) as e:
        raise InputError(
            f"the segmenter's processor config (preprocessor_config.json) cannot be read: {e}", sam
        ) from None
    return SegmenterFrame.from_processor_config(d, sam)


def from_pretrained(
    lvlm: str | os.PathLike,
    sam: str | os.PathLike,
    config: Sim4SegConfig | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trainable: bool = True,
    max_pixels: int | None = None,
):
    """An LVLM and a segmenter (HF formats) from hub ids or local paths → ``(model, processor)``.

    ``max_pixels``: a dynamic-resolution LVLM's pixel budget per image, set on its image processor."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = config or Sim4SegConfig()
    try:
        lvlm_cfg, sam_kind = AutoConfig.from_pretrained(lvlm), AutoConfig.from_pretrained(sam)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot read the configs ({type(e).__name__}): {e}", f"{lvlm} + {sam}") from None
    la = lvlm_adapter(lvlm_cfg, lvlm)
    sa = segmenter_adapter(sam_kind, sam)
    frame = sam_frame_of(sam)
    processor = load_lvlm_processor(la, lvlm, max_pixels)
    try:
        lvlm_model = AutoModelForImageTextToText.from_pretrained(lvlm, dtype=dtype)
        sam_model = sa.from_pretrained(sam, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot load ({type(e).__name__}): {e}", f"{lvlm} + {sam}") from None
    check_architecture(lvlm_model, sam_model, f"{lvlm} + {sam}", processor=processor)
    sa.check_frame(sam_model, frame, sam)
    model = compose(lvlm_model, sam_model, processor, config, trainable=trainable, sam_frame=frame)
    return model.to(device), processor


def from_preset(
    name: str,
    config: Sim4SegConfig | None = None,
    *,
    lvlm: str | None = None,
    sam: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trainable: bool = True,
):
    """A named preset; ``lvlm`` / ``sam`` replace its hub ids with local paths."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[name]
    if p.lisa:
        return load_lisa(lvlm or p.lvlm, config, dtype=dtype, device=device, trainable=trainable)
    return from_pretrained(
        lvlm or p.lvlm, sam or p.sam, config, dtype=dtype, device=device, trainable=trainable, max_pixels=p.max_pixels
    )


def load_lvlm_processor(adapter, path, max_pixels: int | None = None):
    """The LVLM's processor at ``path`` through its adapter, with a preset's pixel budget when the LVLM is of
    dynamic resolution (a fixed-grid processor is left as published); InputError naming ``path``."""
    try:
        processor = adapter.load_processor(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"cannot load the LVLM's processor ({type(e).__name__}: {e})", path) from None
    if max_pixels is not None and adapter.dynamic_resolution:
        set_max_pixels(processor, max_pixels)
    return processor


def set_max_pixels(processor, max_pixels: int) -> None:
    """Cap a dynamic-resolution image processor's pixels per image (its ``size.longest_edge``)."""
    ip = processor.image_processor
    size = dict(ip.size) if isinstance(ip.size, dict) else {k: v for k, v in vars(ip.size).items() if v is not None}
    size["longest_edge"] = int(max_pixels)
    ip.size = type(ip.size)(**size)
