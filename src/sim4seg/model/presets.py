"""Named presets of real checkpoints and loading from hub ids or local paths."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from sim4seg.errors import InputError
from sim4seg.model.compose import check_architecture, compose
from sim4seg.model.config import Sim4SegConfig
from sim4seg.model.lisa import load_lisa


@dataclass(frozen=True)
class Preset:
    lvlm: str
    """Hub id or local path of the LVLM (HF LLaVA format) or, with ``lisa=True``, of a LISA checkpoint."""
    sam: str | None
    """Hub id or local path of a SamModel (HF format); ``None`` when the LISA checkpoint holds SAM."""
    lisa: bool = False
    note: str = ""


PRESETS: dict[str, Preset] = {
    "lisa-7b": Preset("xinlai/LISA-7B-v1", None, lisa=True,
                      note="the paper's initialisation: LISA-7B (LLaVA + SAM ViT-H + ϕ), converted on load"),
    "llava-1.5-7b+sam-vit-h": Preset("llava-hf/llava-1.5-7b-hf", "facebook/sam-vit-huge",
                                     note="LLaVA-1.5-7B and SAM ViT-H; ϕ and [SEG] start untrained"),
    "llava-med+medsam": Preset("chaoyinshe/llava-med-v1.5-mistral-7b-hf", "flaviagiammarino/medsam-vit-base",
                               note="LLaVA-Med v1.5 and MedSAM, both in HF format (community conversions)"),
}


def from_pretrained(lvlm: str | os.PathLike, sam: str | os.PathLike, config: Sim4SegConfig | None = None, *,
                    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", trainable: bool = True):
    """An LVLM (HF LLaVA format) and a SamModel from hub ids or local paths → ``(model, processor)``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, SamModel

    config = config or Sim4SegConfig()
    try:
        processor = AutoProcessor.from_pretrained(lvlm)
        lvlm_model = AutoModelForImageTextToText.from_pretrained(lvlm, dtype=dtype)
        sam_model = SamModel.from_pretrained(sam, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot load ({type(e).__name__}): {e}", f"{lvlm} + {sam}") from None
    check_architecture(lvlm_model, sam_model, f"{lvlm} + {sam}")
    return compose(lvlm_model, sam_model, processor, config, trainable=trainable).to(device), processor


def from_preset(name: str, config: Sim4SegConfig | None = None, *, lvlm: str | None = None, sam: str | None = None,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", trainable: bool = True):
    """A named preset; ``lvlm`` / ``sam`` replace its hub ids with local paths."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[name]
    if p.lisa:
        return load_lisa(lvlm or p.lvlm, config, dtype=dtype, device=device, trainable=trainable)
    return from_pretrained(lvlm or p.lvlm, sam or p.sam, config, dtype=dtype, device=device, trainable=trainable)
