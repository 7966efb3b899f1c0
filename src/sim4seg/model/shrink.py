"""Shrunk builds: a preset's true geometry on a small random model, written like a real checkpoint.

``build_shrunk("llava-1.5-7b+sam-vit-h")`` gives a model whose processors, image size, image
tokens and token grid, chat template, special tokens, SAM input size, preprocessing and prompt
frame are the preset's published values (``backbones/*.py`` ``VARIANTS``), but whose LLM, CLIP
and SAM encoder have a layer or two and a width of tens. Tokenizers cannot be downloaded: a
byte-level BPE is trained here and given the family's special tokens and chat template. Used
by ``sim4seg model build PRESET --shrink`` and the tests: the geometry of a 7B recipe is
exercised end to end on a CPU, with nothing downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sim4seg.errors import InputError
from sim4seg.model.backbones import LVLM_FAMILIES, SEGMENTER_FAMILIES, variant
from sim4seg.model.compose import compose
from sim4seg.model.config import Sim4SegConfig
from sim4seg.model.presets import PRESETS


def _tokenizer(v):
    """A locally trained tokenizer with the variant's special tokens and chat template."""
    from sim4seg.model.tiny import build_tiny_tokenizer, default_corpus

    header = v.chat_template.split("{%", 1)[0]
    texts = default_corpus() + [header, "USER: ASSISTANT: [INST] [/INST]", *getattr(v, "corpus", ())]
    tokens = {k: getattr(v, k) for k in ("image_token", "eos_token", "pad_token") if hasattr(v, k)}
    return build_tiny_tokenizer(texts, 600, extra_special=v.special_tokens, chat_template=v.chat_template, **tokens)


def build_backbones(
    preset: str, *, seed: int = 0, width: int = 64, layers: int = 1, sam_width: int = 32, sam_layers: int = 1
):
    """``(lvlm, processor, segmenter, sam_frame)`` of ``preset``'s shrunk backbones (no [SEG], no ϕ yet)."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    torch.manual_seed(seed)
    lm, lv = variant(LVLM_FAMILIES, p.lvlm_variant)
    lvlm, processor = lm.shrunk(lv, _tokenizer(lv), width=width, layers=layers)
    sm, sv = variant(SEGMENTER_FAMILIES, p.sam_variant)
    return lvlm, processor, sm.shrunk(sv, width=sam_width, layers=sam_layers), sv.frame


def build_shrunk(preset: str, config: Sim4SegConfig | None = None, *, seed: int = 0, trainable: bool = True, **sizes):
    """``(model, processor)``: ``preset``'s geometry on a small random Sim4Seg (fp32, CPU)."""
    lvlm, processor, segmenter, frame = build_backbones(preset, seed=seed, **sizes)
    return compose(
        lvlm, segmenter, processor, config or Sim4SegConfig(), sam_frame=frame, trainable=trainable
    ), processor


def write_shrunk(preset: str, out: str | os.PathLike, *, seed: int = 0, **sizes) -> dict[str, Path]:
    """Write the shrunk build of ``preset``: ``out/`` a Sim4Seg checkpoint (what ``predict``, ``evaluate`` and
    ``sweep`` load) and, unless the preset is LISA's, ``out/hub/lvlm`` + ``out/hub/sam``: the backbones as
    transformers model directories, what ``model.lvlm`` / ``model.sam`` of a training recipe take in place of
    hub ids. Returns those paths."""
    from sim4seg._atomic import write_json
    from sim4seg.model import checkpoint

    out = Path(out)
    lvlm, processor, segmenter, frame = build_backbones(preset, seed=seed, **sizes)
    paths = {"checkpoint": out}
    if not PRESETS[preset].lisa:
        paths["lvlm"], paths["sam"] = out / "hub" / "lvlm", out / "hub" / "sam"
        lvlm.save_pretrained(paths["lvlm"])
        processor.save_pretrained(paths["lvlm"])
        segmenter.save_pretrained(paths["sam"])
        write_json(paths["sam"] / checkpoint.SAM_PREPROCESSOR, frame.to_processor_config())
    model = compose(lvlm, segmenter, processor, Sim4SegConfig(), sam_frame=frame, trainable=True)
    checkpoint.save(model, processor, out)
    return paths
