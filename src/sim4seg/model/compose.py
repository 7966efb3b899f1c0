"""Composition and trainability: LVLM + SAM (+ ϕ) → ``Sim4SegModel``, and what of it trains.

Builders are functions; the model class receives built submodules. What trains is decided
here, at construction, by ``TrainableConfig`` (``apply_trainable``).
"""

from __future__ import annotations

from torch import nn

from sim4seg.data.prompts import SEG_TOKEN
from sim4seg.data.transforms import SegmenterFrame
from sim4seg.model.backbones import lvlm_adapter, segmenter_adapter
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


def check_architecture(lvlm, sam, source: str = "", processor=None) -> None:
    """Refuse an LVLM or segmenter no adapter supports, or one its adapter cannot drive, and (given) a processor
    that contradicts the LVLM (clear errors naming the cause)."""
    la = lvlm_adapter(lvlm, source or None)
    la.check(lvlm, source or None)
    segmenter_adapter(sam, source or None).check(sam, source or None)
    if processor is not None:
        la.check_processor(lvlm, processor, source or None)


def compose(
    lvlm,
    sam,
    processor,
    config: Sim4SegConfig,
    *,
    sam_frame: SegmenterFrame,
    trainable: bool = True,
    phi: nn.Module | None = None,
) -> Sim4SegModel:
    """Add [SEG], read the token grid, build the model and (if ``trainable``) set what trains.

    ``sam_frame``: the segmenter checkpoint's own preprocessing (its ``preprocessor_config.json``).
    """
    check_architecture(lvlm, sam, processor=processor)
    seg_id = add_seg_token(processor.tokenizer, lvlm, config.seg_token)
    la = lvlm_adapter(lvlm)
    if config.token_grid is None:
        config.token_grid = la.token_grid(lvlm)
    model = Sim4SegModel(
        lvlm,
        sam,
        config,
        seg_token_id=seg_id,
        phi=phi,
        sam_frame=sam_frame,
        image_tokens=la.image_tokens(lvlm, processor),
    )
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
        cfg = LoraConfig(
            r=t.lora_r,
            lora_alpha=t.lora_alpha,
            lora_dropout=t.lora_dropout,
            bias="none",
            target_modules=rf".*{model.lvlm_adapter.lora_scope}.*\.({targets})",
        )
        inject_adapter_in_model(cfg, model.lvlm)
    parts = {**model.lvlm_adapter.parts(model.lvlm), **model.seg_adapter.parts(model.sam), "projection": model.phi}
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
