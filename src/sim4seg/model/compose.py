"""Composition and trainability: LVLM + SAM (+ ϕ) → ``Sim4SegModel``, and what of it trains.

Builders are functions; the model class receives built submodules. What trains is decided
here, at construction, by ``TrainableConfig`` (``apply_trainable``).
"""

from __future__ import annotations

from torch import nn

from sim4seg.data.prompts import SEG_TOKEN
from sim4seg.errors import InputError
from sim4seg.model import llava
from sim4seg.model.config import Sim4SegConfig, TrainableConfig
from sim4seg.model.sim4seg import Sim4SegModel


def add_seg_token(tokenizer, lvlm, seg_token: str = SEG_TOKEN) -> int:
    """Add ``[SEG]`` to the tokenizer (if new) and grow the LVLM's embeddings; return its id."""
    if seg_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([seg_token], special_tokens=False)
    seg_id = tokenizer.convert_tokens_to_ids(seg_token)
    if lvlm.get_input_embeddings().num_embeddings < len(tokenizer):
        lvlm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return seg_id


def check_architecture(lvlm, sam, source: str = "") -> None:
    """Refuse anything that is not a LLaVA-family LVLM and a SAM (clear error naming the cause)."""
    ok = all(hasattr(lvlm, a) for a in ("model", "lm_head")) and hasattr(getattr(lvlm, "model", None), "get_image_features") \
        and hasattr(getattr(lvlm, "model", None), "language_model") and hasattr(lvlm.config, "image_token_id")
    if not ok:
        raise InputError(f"the LVLM is a {type(lvlm).__name__} ({getattr(lvlm.config, 'model_type', '?')}), not a "
                         "LLaVA-family image-text-to-text model (vision tower + projector + language model)", source or None)
    if getattr(sam.config, "model_type", None) != "sam" or not hasattr(sam, "mask_decoder"):
        raise InputError(f"the segmenter is a {type(sam).__name__}, not a SamModel", source or None)


def compose(lvlm, sam, processor, config: Sim4SegConfig, *, trainable: bool = True,
            phi: nn.Module | None = None) -> Sim4SegModel:
    """Add [SEG], read the token grid, build the model and (if ``trainable``) set what trains."""
    check_architecture(lvlm, sam)
    seg_id = add_seg_token(processor.tokenizer, lvlm, config.seg_token)
    if config.token_grid is None:
        config.token_grid = llava.token_grid(lvlm)
    model = Sim4SegModel(lvlm, sam, config, seg_token_id=seg_id, phi=phi)
    if trainable:
        apply_trainable(model, config.trainable)
    return model


def has_lora(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def apply_trainable(model: Sim4SegModel, t: TrainableConfig) -> Sim4SegModel:
    """Freeze everything, inject LoRA (once) on the LLM's target projections, unfreeze what ``t`` names."""
    model.requires_grad_(False)
    if t.lora and not has_lora(model):
        from peft import LoraConfig, inject_adapter_in_model

        targets = "|".join(t.lora_targets)
        cfg = LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, bias="none",
                         target_modules=rf".*language_model.*\.({targets})")
        inject_adapter_in_model(cfg, model.lvlm)
    lvlm = model.lvlm
    parts = {
        "llm": lvlm.model.language_model, "lm_head": lvlm.lm_head, "embed_tokens": lvlm.get_input_embeddings(),
        "mask_decoder": model.sam.mask_decoder, "projection": model.phi, "vision_tower": lvlm.model.vision_tower,
        "mm_projector": lvlm.model.multi_modal_projector, "sam_encoder": model.sam.vision_encoder,
        "prompt_encoder": model.sam.prompt_encoder,
    }
    for name, module in parts.items():
        if getattr(t, name):
            module.requires_grad_(True)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(t.lora)
    return model


def trainable_summary(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": train}
