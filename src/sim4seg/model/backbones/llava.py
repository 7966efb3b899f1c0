"""The LLaVA family (transformers' ``LlavaForConditionalGeneration``): LLaVA-1.5, LLaVA-Med v1.5, LISA.

A CLIP vision tower at a fixed square input, a projector, and a Llama / Mistral LLM; the
image placeholder ``<image>`` is expanded by the processor to one token per patch feature
(CLS dropped: ``vision_feature_select_strategy="default"``), so the token grid is fixed:
``image_size / patch`` on each side (LLaVA-1.5 / LLaVA-Med: 336 / 14 → 24 × 24 = 576 tokens;
LISA: 224 / 14 → 16 × 16 = 256). The variants differ in their chat template, their special
tokens and how the image reaches the square (centre crop, or LLaVA-Med's pad to square);
``VARIANTS`` holds the published values (``/work/shared/BACKBONES.md`` sources) that the
shrunk builds (``sim4seg.model.shrink``) write.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sim4seg.errors import InputError
from sim4seg.model.backbones.base import LVLMAdapter

IMAGE_TOKEN = "<image>"
"""The placeholder the processor expands to one token per image feature."""
LLAVA_TYPES = ("llava", "vipllava")
"""``model_type`` values of the LVLM configs this adapter loads (fixed-grid LLaVA models)."""
# LLaVA-1.5's conversation format: "USER: <image>\n{query} ASSISTANT: {answer}</s>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# LLaVA-Med v1.5's ``mistral_instruct`` conversation: "[INST] <image>\n{query} [/INST] {answer}</s>"
MISTRAL_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    " [/INST]{% else %} {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
)
IM_START, IM_END = "<im_start>", "<im_end>"
LISA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def lisa_chat_template(im_start_end: bool) -> str:
    """LISA's ``llava_v1`` conversation as a transformers chat template."""
    image = f"{IM_START}{IMAGE_TOKEN}{IM_END}" if im_start_end else IMAGE_TOKEN
    return (
        LISA_SYSTEM + "{% for m in messages %}{% if m['role'] == 'user' %} USER: "
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image + "\n{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% else %} ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
        "{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
    )


def token_grid(lvlm) -> list[int]:
    """The vision tower's patch grid ``[h_p, w_p]`` (square CLIP input: ``image_size / patch_size`` each)."""
    v = lvlm.config.vision_config
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    return [size // v.patch_size, size // v.patch_size]


def _processor_side(image_processor) -> int | None:
    """The square side an image processor outputs (crop size after a centre crop, else the resize size)."""
    crop = getattr(image_processor, "crop_size", None) or {}
    size = getattr(image_processor, "size", None) or {}
    if getattr(image_processor, "do_center_crop", False) and crop:
        return int(crop.get("height", 0)) or None
    return int(size.get("height") or size.get("shortest_edge") or 0) or None


class LlavaAdapter(LVLMAdapter):
    name = "LLaVA-family"
    model_types = LLAVA_TYPES

    def check(self, lvlm, source=None) -> None:
        super().check(lvlm, source)
        if not hasattr(lvlm.config, "image_token_id"):
            raise InputError(f"the LVLM config ({lvlm.config.model_type}) has no image_token_id", source)

    def check_processor(self, lvlm, processor, source=None) -> None:
        v = lvlm.config.vision_config
        problems = []
        side = _processor_side(getattr(processor, "image_processor", None))
        if side is None:
            problems.append("its image processor sets no output size")
        elif side != token_grid(lvlm)[0] * v.patch_size:
            problems.append(f"its image processor outputs {side}x{side} px but the vision tower takes {v.image_size}")
        patch = getattr(processor, "patch_size", None)
        if patch is not None and int(patch) != int(v.patch_size):
            problems.append(f"patch_size is {patch} but the vision tower's is {v.patch_size}")
        token = getattr(processor, "image_token", None)
        tok_id = processor.tokenizer.convert_tokens_to_ids(token) if token else None
        if tok_id != self.image_token_id(lvlm):
            problems.append(
                f"its image token {token!r} has id {tok_id}, the model's image_token_id is {self.image_token_id(lvlm)}"
            )
        if problems:
            raise InputError("the processor does not fit the LVLM: " + "; ".join(problems), source)

    def token_grid(self, lvlm) -> list[int]:
        return token_grid(lvlm)

    def image_tokens(self, lvlm, processor=None) -> int:
        h, w = token_grid(lvlm)
        return h * w

    def image_features(self, lvlm, pixel_values: torch.Tensor, **image_kwargs) -> list[torch.Tensor]:
        feats = lvlm.model.get_image_features(pixel_values=pixel_values).pooler_output
        return list(feats)


# ---------------------------------------------------------------------------- published variants


@dataclass(frozen=True)
class LlavaVariant:
    """A checkpoint family's published geometry and prompt format (what a shrunk build reproduces)."""

    name: str
    image_size: int
    patch: int
    chat_template: str
    text_model: str = "llama"
    """``llama`` or ``mistral``."""
    pad_to_square: bool = False
    """LLaVA-Med's ``image_aspect_ratio: pad`` (else resize shortest side + centre crop)."""
    resample: int = 3
    image_mean: tuple = CLIP_MEAN
    image_std: tuple = CLIP_STD
    vision_feature_layer: int = -2
    projector_act: str = "gelu"
    max_positions: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    kv_heads_ratio: int = 1
    """attention heads per key/value head (Mistral-7B: 32 / 8 = 4)."""
    special_tokens: tuple[str, ...] = ()
    """Tokens the checkpoint's tokenizer adds besides ``<image>`` (LISA: ``<im_start>``, ``<im_end>``, ``[SEG]``)."""

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2


VARIANTS = {
    "llava-1.5": LlavaVariant("llava-1.5", 336, 14, CHAT_TEMPLATE),
    "llava-med": LlavaVariant(
        "llava-med",
        336,
        14,
        MISTRAL_TEMPLATE,
        text_model="mistral",
        pad_to_square=True,
        max_positions=32768,
        rope_theta=1e6,
        kv_heads_ratio=4,
    ),
    "lisa": LlavaVariant(
        "lisa",
        224,
        14,
        lisa_chat_template(True),
        projector_act="linear",
        max_positions=2048,
        rms_norm_eps=1e-6,
        special_tokens=(IM_START, IM_END, "[SEG]"),
    ),
}


def image_processor(variant: LlavaVariant):
    """The variant's CLIP image processor (PIL backend: no torchvision needed)."""
    from transformers import LlavaImageProcessorPil

    side = variant.image_size
    return LlavaImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        do_center_crop=True,
        do_pad=variant.pad_to_square,
        resample=variant.resample,
        image_mean=list(variant.image_mean),
        image_std=list(variant.image_std),
    )


def shrunk(variant: LlavaVariant, tokenizer, *, width: int = 64, layers: int = 1, vision_width: int = 32):
    """``(lvlm, processor)``: the variant's real geometry, prompt format and tokens; a small random LLM and CLIP."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        MistralConfig,
    )

    processor = LlavaProcessor(
        image_processor=image_processor(variant),
        tokenizer=tokenizer,
        patch_size=variant.patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=variant.chat_template,
    )
    vision = CLIPVisionConfig(
        hidden_size=vision_width,
        intermediate_size=2 * vision_width,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=variant.image_size,
        patch_size=variant.patch,
        projection_dim=vision_width,
    )
    heads = 4
    text_cls = MistralConfig if variant.text_model == "mistral" else LlamaConfig
    text = text_cls(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // variant.kv_heads_ratio,
        max_position_embeddings=variant.max_positions,
        rms_norm_eps=variant.rms_norm_eps,
        rope_theta=variant.rope_theta,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=variant.image_tokens,
        vision_feature_layer=variant.vision_feature_layer,
        vision_feature_select_strategy="default",
        projector_hidden_act=variant.projector_act,
        tie_word_embeddings=False,
    )
    lvlm = LlavaForConditionalGeneration(config)
    lvlm.generation_config.eos_token_id = tokenizer.eos_token_id
    lvlm.generation_config.pad_token_id = tokenizer.pad_token_id
    return lvlm, processor
