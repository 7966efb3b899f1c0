"""The Qwen-VL family (transformers' ``Qwen2_5_VLForConditionalGeneration``): Qwen2.5-VL, dynamic resolution.

Qwen's image processor resizes each image with ``smart_resize``: both sides to multiples of
``patch · merge`` (14 · 2 = 28 px), the aspect kept as closely as that allows and the area
between ``min_pixels`` and ``max_pixels`` — a resize of the whole image, no crop, no pad, so the
token grid covers the whole original image (``token_box`` = the image; ``lvlm_token_box``'s
plain-resize case). The vision tower sees ``(t, h, w)`` patches (``image_grid_thw``; a still
image is one temporal patch of two identical frames, ``t = 1``) and merges 2×2 neighbours into
one LLM token, so an image's token grid is ``(t·h/2, w/2)`` and differs per image: the
processor expands ``<|image_pad|>`` to that many tokens and the LLM places them with 3-D
M-RoPE positions (temporal, row, column; ``get_rope_index``), which every forward,
``generate`` call and the shared prefill must be given.

Qwen3-VL (``Qwen3VLForConditionalGeneration``) works the same way with 16-px patches (32 px a
token) and interleaved M-RoPE, and its vision tower also returns "deepstack" features of three
inner layers, which the LLM adds at the image tokens after its first three layers:
``Qwen3VLAdapter.encode_features`` returns them, ``ImageEncoding.deepstack`` carries them and
``Sim4SegModel`` passes them to the LLM in the forward and in the prefill before ``generate``.

No torchvision: ``Qwen2_5_VLProcessor`` insists on a video processor, whose base class needs
torchvision, so ``QwenVLProcessor`` is the same processor for images alone (with the PIL image
processor); the adapter loads saved processors through it (``load_processor``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from sim4seg.errors import InputError
from sim4seg.model.backbones.base import LVLMAdapter

IMAGE_TOKEN = "<|image_pad|>"
"""The placeholder the processor expands to one token per merged 2×2 patch."""
VIDEO_TOKEN = "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
QWEN_TYPES = ("qwen2_5_vl",)
DEFAULT_SYSTEM = "You are a helpful assistant."
_TURNS = (
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen2.5-VL's ChatML conversation: a default system turn, the image framed by vision_start / vision_end
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\n"
    + DEFAULT_SYSTEM
    + "<|im_end|>\n{% endif %}"
    + _TURNS
)
# Qwen3-VL's: the same turns without a default system turn
QWEN3_TEMPLATE = "{% for m in messages %}" + _TURNS
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def processor_class(base: str = "Qwen2_5_VLProcessor"):
    """The image-only processor class of a Qwen-VL generation (``base``: transformers' processor class;
    built on first use, so importing this module stays cheap; one class per ``base``)."""
    return _processor_class(base)  # the default passed on explicitly: one cache entry however it is called


@functools.cache
def _processor_class(base: str):
    import transformers
    from transformers.processing_utils import ProcessorMixin

    parent = getattr(transformers, base)

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
        self.video_token = VIDEO_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        self.vision_start_token, self.vision_end_token = VISION_START, VISION_END
        self.vision_start_token_id = tokenizer.convert_tokens_to_ids(VISION_START)
        self.vision_end_token_id = tokenizer.convert_tokens_to_ids(VISION_END)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    doc = f"``{base}`` for images only: no video processor (whose base class needs torchvision)."
    name = "QwenVLProcessor" if base == "Qwen2_5_VLProcessor" else "Qwen3VLImageProcessor"
    return type(name, (parent,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


def max_image_tokens(max_pixels: int, patch: int, merge: int) -> int:
    """The most LLM tokens one image can take: ``smart_resize`` keeps the area ≤ ``max_pixels`` in
    ``(patch·merge)``-pixel units, one token each (Qwen2.5-VL's 12845056 → 16384)."""
    return int(max_pixels) // (patch * merge) ** 2


def _merge(lvlm) -> int:
    return int(lvlm.config.vision_config.spatial_merge_size)


def grid_thw(token_grids: torch.Tensor, merge: int) -> torch.Tensor:
    """Token grids ``(B, 2)`` of still images → ``image_grid_thw`` ``(B, 3)``: ``(1, h·merge, w·merge)``."""
    g = token_grids.long()
    return torch.stack([torch.ones_like(g[:, 0]), g[:, 0] * merge, g[:, 1] * merge], 1)


class QwenVLAdapter(LVLMAdapter):
    name = "Qwen-VL family"
    model_types = QWEN_TYPES
    dynamic_resolution = True
    processor_base = "Qwen2_5_VLProcessor"

    def check(self, lvlm, source=None) -> None:
        super().check(lvlm, source)
        if not hasattr(lvlm.model, "get_rope_index") or not hasattr(lvlm.model, "visual"):
            raise InputError(f"the LVLM ({type(lvlm).__name__}) has no M-RoPE index or vision tower", source)

    def load_processor(self, path):
        return processor_class(self.processor_base).from_pretrained(path)

    def check_processor(self, lvlm, processor, source=None) -> None:
        v = lvlm.config.vision_config
        ip = getattr(processor, "image_processor", None)
        problems = []
        if ip is None:
            raise InputError("the processor has no image processor", source)
        for name, want in (
            ("patch_size", v.patch_size),
            ("merge_size", v.spatial_merge_size),
            ("temporal_patch_size", v.temporal_patch_size),
        ):
            have = getattr(ip, name, None)
            if have is None or int(have) != int(want):
                problems.append(f"its image processor's {name} is {have} but the vision tower's is {want}")
        if _max_pixels(ip) is None:
            problems.append("its image processor sets no max_pixels (size.longest_edge)")
        tok = processor.tokenizer
        for what, token, want in (
            ("image token", getattr(processor, "image_token", None), lvlm.config.image_token_id),
            ("vision start", VISION_START, lvlm.config.vision_start_token_id),
            ("vision end", VISION_END, lvlm.config.vision_end_token_id),
        ):
            tok_id = tok.convert_tokens_to_ids(token) if token else None
            if tok_id != want:
                problems.append(f"its {what} {token!r} has id {tok_id}, the model's is {want}")
        if problems:
            raise InputError("the processor does not fit the LVLM: " + "; ".join(problems), source)

    def token_grid(self, lvlm) -> None:
        return None

    def image_tokens(self, lvlm, processor=None) -> int:
        if processor is None:
            raise ValueError("a dynamic-resolution LVLM's image tokens depend on its processor's max_pixels")
        v = lvlm.config.vision_config
        return max_image_tokens(_max_pixels(processor.image_processor), v.patch_size, v.spatial_merge_size)

    def token_grids(self, lvlm, image_grid_thw: torch.Tensor | None = None, **image_kwargs) -> torch.Tensor:
        if image_grid_thw is None:
            raise ValueError("a Qwen-VL image needs its image_grid_thw (the processor's patch grid)")
        thw = torch.as_tensor(image_grid_thw).long().reshape(-1, 3)
        m = _merge(lvlm)
        if bool(((thw[:, 1:] % m) != 0).any()) or bool((thw < 1).any()):
            raise ValueError(f"image_grid_thw {thw.tolist()}: h and w must be positive multiples of the merge {m}")
        return torch.stack([thw[:, 0] * thw[:, 1] // m, thw[:, 2] // m], 1)

    def image_features(
        self, lvlm, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None = None, **image_kwargs
    ) -> list[torch.Tensor]:
        return list(self._vision(lvlm, pixel_values, image_grid_thw).pooler_output)

    def _vision(self, lvlm, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None):
        """The vision tower's output for the processor's flattened patches, checked against their grids."""
        if image_grid_thw is None:
            raise ValueError("a Qwen-VL image needs its image_grid_thw (the processor's patch grid)")
        thw = image_grid_thw.to(pixel_values.device).long()
        patches = int(thw.prod(-1).sum())
        if pixel_values.ndim != 2 or pixel_values.shape[0] != patches:
            raise ValueError(
                f"pixel_values {tuple(pixel_values.shape)} do not hold the {patches} patches image_grid_thw "
                f"{thw.tolist()} describes (Qwen-VL takes the processor's flattened patches)"
            )
        return lvlm.model.get_image_features(pixel_values, thw)

    def position_ids(self, lvlm, input_ids, attention_mask, token_grids=None, **image_kwargs) -> torch.Tensor:
        """3-D M-RoPE positions ``(3, B, T)`` (temporal, row, column) from the image tokens and their grids."""
        if input_ids is None or token_grids is None:
            raise ValueError("Qwen-VL's M-RoPE positions need the input ids and each image's token grid")
        image = (input_ids == self.image_token_id(lvlm)).int()
        thw = grid_thw(token_grids.to(input_ids.device), _merge(lvlm))
        positions, _ = lvlm.model.get_rope_index(
            input_ids, mm_token_type_ids=image, image_grid_thw=thw, attention_mask=attention_mask
        )
        return positions

    def parts(self, lvlm) -> dict:
        return {
            "llm": self.language_model(lvlm),
            "lm_head": lvlm.lm_head,
            "embed_tokens": lvlm.get_input_embeddings(),
            "vision_tower": lvlm.model.visual,
            "mm_projector": lvlm.model.visual.merger,
        }


class Qwen3VLAdapter(QwenVLAdapter):
    """Qwen3-VL: Qwen2.5-VL's interface plus the deepstack features its LLM adds at the image tokens."""

    name = "Qwen3-VL"
    model_types = ("qwen3_vl",)
    processor_base = "Qwen3VLProcessor"

    def encode_features(self, lvlm, pixel_values, image_grid_thw=None, **image_kwargs):
        out = self._vision(lvlm, pixel_values, image_grid_thw)
        return list(out.pooler_output), [list(level) for level in out.deepstack_features]


def _max_pixels(image_processor) -> int | None:
    size = getattr(image_processor, "size", None)
    value = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
    return None if value is None else int(value)


# ---------------------------------------------------------------------------- published variants


@dataclass(frozen=True)
class QwenVariant:
    """A Qwen-VL checkpoint's published geometry and prompt format (what a shrunk build reproduces)."""

    name: str
    generation: str = "qwen2_5_vl"
    """``qwen2_5_vl`` or ``qwen3_vl`` (interleaved M-RoPE, deepstack features)."""
    patch: int = 14
    merge: int = 2
    temporal: int = 2
    min_pixels: int = 3136
    max_pixels: int = 1280 * 28 * 28
    """The checkpoint publishes 12845056 (16384 tokens per image); the presets cap it at 1280 tokens, the
    budget Qwen's own documentation suggests for memory (images above ~1 MP are downsized)."""
    published_max_pixels: int = 12845056
    image_mean: tuple = CLIP_MEAN
    image_std: tuple = CLIP_STD
    resample: int = 3
    chat_template: str = CHAT_TEMPLATE
    max_positions: int = 128000
    rope_theta: float = 1e6
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    deepstack: int = 0
    """Vision layers whose features the LLM adds at the image tokens (Qwen3-VL: 3, at blocks 8 / 16 / 24)."""
    rms_norm_eps: float = 1e-6
    heads: int = 28
    kv_heads: int = 4
    vision_window: int = 112
    tokens_per_second: int = 2
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    image_token: str = IMAGE_TOKEN
    eos_token: str = IM_END
    pad_token: str = END_OF_TEXT
    special_tokens: tuple[str, ...] = (END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, VIDEO_TOKEN)
    """Tokens of the checkpoint's tokenizer besides ``<|image_pad|>`` that the prompt format uses."""
    corpus: tuple[str, ...] = (DEFAULT_SYSTEM, "system\nuser\nassistant\n")
    """Text of the prompt format a shrunk tokenizer is trained on besides the queries and answers."""

    @property
    def image_tokens(self) -> int:
        return max_image_tokens(self.max_pixels, self.patch, self.merge)


VARIANTS = {
    "qwen2.5-vl-7b": QwenVariant("qwen2.5-vl-7b"),
    "qwen3-vl-8b": QwenVariant(
        "qwen3-vl-8b",
        generation="qwen3_vl",
        patch=16,
        min_pixels=65536,
        max_pixels=1280 * 32 * 32,
        published_max_pixels=16777216,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        chat_template=QWEN3_TEMPLATE,
        max_positions=262144,
        rope_theta=5e6,
        mrope_section=(24, 20, 20),
        heads=32,
        kv_heads=8,
        deepstack=3,
        corpus=("system\nuser\nassistant\n",),
    ),
}


def image_processor(variant: QwenVariant):
    """The variant's image processor (PIL backend: no torchvision needed)."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        min_pixels=variant.min_pixels,
        max_pixels=variant.max_pixels,
        patch_size=variant.patch,
        merge_size=variant.merge,
        temporal_patch_size=variant.temporal,
        resample=variant.resample,
        image_mean=list(variant.image_mean),
        image_std=list(variant.image_std),
    )


def shrunk(variant: QwenVariant, tokenizer, *, width: int = 64, layers: int = 1, vision_width: int = 32):
    """``(lvlm, processor)``: the variant's real geometry, prompt format and tokens; a small random LLM and ViT.

    The M-RoPE sections keep the published 16:24:24 split of the rotary half-dimension (width 64, 4 heads:
    head 16 → 2:3:3).
    """
    import transformers

    qwen3 = variant.generation == "qwen3_vl"
    processor = processor_class("Qwen3VLProcessor" if qwen3 else "Qwen2_5_VLProcessor")(
        image_processor=image_processor(variant), tokenizer=tokenizer, chat_template=variant.chat_template
    )
    heads = 4
    half = width // heads // 2
    unit = sum(variant.mrope_section)
    section = [half * s // unit for s in variant.mrope_section]
    section[0] += half - sum(section)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END)}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads * variant.kv_heads // variant.heads),  # grouped, as published (28 / 4)
        max_position_embeddings=variant.max_positions,
        rms_norm_eps=variant.rms_norm_eps,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": variant.rope_theta,
            "mrope_section": section,
            **({"mrope_interleaved": True} if qwen3 else {}),
        },
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = dict(
        depth=2,
        hidden_size=vision_width,
        intermediate_size=2 * vision_width,
        num_heads=2,
        patch_size=variant.patch,
        spatial_merge_size=variant.merge,
        temporal_patch_size=variant.temporal,
        window_size=variant.vision_window,
        fullatt_block_indexes=[1],
        out_hidden_size=width,
        tokens_per_second=variant.tokens_per_second,
    )
    if qwen3:  # no windowed attention; learned position embeddings; deepstack at every block of a 3-block ViT
        for key in ("window_size", "fullatt_block_indexes", "tokens_per_second"):
            vision.pop(key)
        vision.update(depth=variant.deepstack, deepstack_visual_indexes=list(range(variant.deepstack)))
        text.update(num_hidden_layers=max(layers, variant.deepstack), head_dim=width // heads)
    config_cls = transformers.Qwen3VLConfig if qwen3 else transformers.Qwen2_5_VLConfig
    config = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[IMAGE_TOKEN],
        video_token_id=ids[VIDEO_TOKEN],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=False,
    )
    model_cls = (
        transformers.Qwen3VLForConditionalGeneration if qwen3 else transformers.Qwen2_5_VLForConditionalGeneration
    )
    lvlm = model_cls(config)
    lvlm.generation_config.eos_token_id = tokenizer.eos_token_id
    lvlm.generation_config.pad_token_id = tokenizer.pad_token_id
    return lvlm, processor


def published_tokens(variant: QwenVariant) -> int:
    """Image tokens per image under the checkpoint's own ``max_pixels`` (16384 for Qwen2.5-VL)."""
    return max_image_tokens(variant.published_max_pixels, variant.patch, variant.merge)
