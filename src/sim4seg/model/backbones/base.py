"""The adapter interface: everything backbone-specific behind two small classes.

An ``LVLMAdapter`` knows one family of vision-language models (its transformers classes, chat
template and special tokens, where the image tokens are and their grid, image features, the
LLM's hidden states); a ``SegmenterAdapter`` one family of promptable segmenters (image
embedding, prompt encoder + mask decoder with ϕ(E_seg) as the sparse token and the RVLS2M
region as the dense mask prompt, its input size and prompt frame). ``Sim4SegModel``, the
checkpoint loader, the predictor and the shrunk builds call only these methods.

The data side (``sim4seg.data``) never imports the model: it reads the LVLM's processor and
the segmenter's ``SegmenterFrame`` (``sim4seg.data.transforms``), both saved with the checkpoint.
Adding a backbone is one module here (a subclass, registered in ``backbones/__init__.py``)
plus a preset (``sim4seg.model.presets``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from sim4seg.data.transforms import SegmenterFrame
from sim4seg.errors import InputError

_RESIZE_WORDS = {
    "longest": "SamImageProcessor: size.longest_edge, padded",
    "square": "Sam2ImageProcessor: size.height/width, stretched, no padding",
}


class LVLMAdapter(ABC):
    """One LVLM family. Stateless: every method takes the transformers model it works on."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    """``config.model_type`` values of the checkpoints this adapter loads."""
    dynamic_resolution: bool = False
    """True when the token grid differs per image (read from the processor's outputs, e.g. ``image_grid_thw``)."""

    def from_config(self, config, dtype: torch.dtype | None = None) -> nn.Module:
        """An (untrained) model of ``config``: transformers' image-text-to-text auto class."""
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_config(config, **({"dtype": dtype} if dtype else {}))

    def check(self, lvlm: nn.Module, source=None) -> None:
        """Refuse a model this adapter cannot drive (clear error naming the cause)."""
        inner = getattr(lvlm, "model", None)
        ok = hasattr(lvlm, "lm_head") and hasattr(inner, "get_image_features") and hasattr(inner, "language_model")
        if not ok or getattr(lvlm.config, "model_type", None) not in self.model_types:
            raise InputError(
                f"the LVLM is a {type(lvlm).__name__} ({getattr(lvlm.config, 'model_type', '?')}), not "
                f"a {self.name} model {self.model_types}",
                source,
            )

    def load_processor(self, path):
        """The LVLM's processor saved at ``path`` (a checkpoint's ``processor/`` or a model directory / hub id)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)

    @abstractmethod
    def check_processor(self, lvlm: nn.Module, processor, source=None) -> None:
        """Refuse a processor whose geometry (image size, patch, image token) contradicts the model's config."""

    def image_token_id(self, lvlm: nn.Module) -> int:
        return int(lvlm.config.image_token_id)

    def hidden_size(self, lvlm: nn.Module) -> int:
        return int(lvlm.config.text_config.hidden_size)

    def max_positions(self, lvlm: nn.Module) -> int:
        return int(lvlm.config.text_config.max_position_embeddings)

    @abstractmethod
    def token_grid(self, lvlm: nn.Module) -> list[int] | None:
        """The fixed image-token grid ``[h_p, w_p]``, or ``None`` when it differs per image."""

    @abstractmethod
    def image_tokens(self, lvlm: nn.Module, processor=None) -> int:
        """Image tokens in one prompt (dynamic resolution: the most one image can take under ``processor``)."""

    def token_grids(self, lvlm: nn.Module, **image_kwargs) -> torch.Tensor | None:
        """Each image's token grid ``(B, 2)`` from the processor's outputs (e.g. ``image_grid_thw``);
        ``None`` for a fixed grid."""
        return None

    @abstractmethod
    def image_features(self, lvlm: nn.Module, pixel_values: torch.Tensor, **image_kwargs) -> list[torch.Tensor]:
        """B images → B tensors ``(n_i, d_llm)``: the LLM's input embeddings at each image's tokens."""

    def encode_features(
        self, lvlm: nn.Module, pixel_values: torch.Tensor, **image_kwargs
    ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]] | None]:
        """``image_features`` and, for LVLMs that add vision features inside the LLM (Qwen3-VL's deepstack),
        per injected layer the B images' tensors ``(n_i, d_llm)``; ``None`` without them."""
        return self.image_features(lvlm, pixel_values, **image_kwargs), None

    def language_model(self, lvlm: nn.Module) -> nn.Module:
        return lvlm.model.language_model

    def position_ids(
        self, lvlm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, **image_kwargs
    ) -> torch.Tensor:
        """Positions of a (left- or right-padded) batch: ``(B, T)`` (a multimodal RoPE returns its own shape)."""
        return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)

    def hidden(
        self,
        lvlm: nn.Module,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        **kwargs,
    ):
        """The LLM on ``inputs_embeds`` (B, T, d) → its output (``last_hidden_state``, ``past_key_values``)."""
        return self.language_model(lvlm)(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )

    def parts(self, lvlm: nn.Module) -> dict[str, nn.Module]:
        """The modules ``TrainableConfig`` names: llm, lm_head, embed_tokens, vision_tower, mm_projector."""
        return {
            "llm": self.language_model(lvlm),
            "lm_head": lvlm.lm_head,
            "embed_tokens": lvlm.get_input_embeddings(),
            "vision_tower": lvlm.model.vision_tower,
            "mm_projector": lvlm.model.multi_modal_projector,
        }

    lora_scope: str = "language_model"
    """The module-path part LoRA is restricted to (the LLM, not the vision tower)."""


class SegmenterAdapter(ABC):
    """One promptable-segmenter family (SAM, SAM2).

    ``encode``'s result is opaque to callers: they pick and repeat images only through ``select`` /
    ``expand`` (SAM: one tensor; SAM2: the embedding and its high-resolution features)."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    frame_resize: str = "longest"
    """How the family's image processor fits an image into the square input (``SegmenterFrame.resize``)."""

    def default_frame(self, sam: nn.Module) -> SegmenterFrame:
        """The family's published preprocessing at this model's input size (when no processor config is given)."""
        return SegmenterFrame(size=self.image_size(sam), resize=self.frame_resize)

    def check_frame(self, sam: nn.Module, frame: SegmenterFrame, source=None) -> None:
        """Refuse a processor config that contradicts the model: another input size or the other family's resize
        (a SAM config on a SAM2 model would pad what SAM2 was trained to see stretched, and vice versa)."""
        if frame.size != self.image_size(sam):
            raise InputError(
                f"the segmenter's processor config resizes to {frame.size} px but its model takes "
                f"{self.image_size(sam)} px",
                source,
            )
        if frame.resize != self.frame_resize:
            raise InputError(
                f"the segmenter's processor config is {frame.resize!r}-resize preprocessing but a {self.name} "
                f"model needs {self.frame_resize!r} ({_RESIZE_WORDS[self.frame_resize]})",
                source,
            )

    @abstractmethod
    def config_from_pretrained(self, path):
        """The segmenter's transformers config from a directory or hub id."""

    @abstractmethod
    def from_config(self, config, dtype: torch.dtype | None = None) -> nn.Module:
        """An (untrained) segmenter of ``config``."""

    @abstractmethod
    def from_pretrained(self, path, dtype: torch.dtype | None = None) -> nn.Module:
        """The segmenter with its weights from a directory or hub id."""

    def check(self, sam: nn.Module, source=None) -> None:
        if getattr(sam.config, "model_type", None) not in self.model_types or not hasattr(sam, "mask_decoder"):
            raise InputError(
                f"the segmenter is a {type(sam).__name__} ({getattr(sam.config, 'model_type', '?')}), "
                f"not a {self.name} model {self.model_types}",
                source,
            )

    @abstractmethod
    def image_size(self, sam: nn.Module) -> int:
        """Side of the square input frame in pixels (SAM: 1024)."""

    @abstractmethod
    def prompt_size(self, sam: nn.Module) -> int:
        """Side of the dense mask-prompt frame (SAM: 256)."""

    @abstractmethod
    def prompt_dim(self, sam: nn.Module) -> int:
        """Width of a sparse prompt token (ϕ's output)."""

    @abstractmethod
    def encode(self, sam: nn.Module, pixel_values: torch.Tensor):
        """(B, 3, S, S) → the image embedding(s) the decoder needs; indexable by a (N,) long tensor via ``select``."""

    def select(self, embeddings, idx: torch.Tensor):
        """Images ``idx`` (N,) of an ``encode`` result."""
        return embeddings[idx]

    def expand(self, embeddings, n: int):
        """One image's embedding repeated ``n`` times."""
        return embeddings.expand(n, *embeddings.shape[1:])

    @abstractmethod
    def decode(
        self, sam: nn.Module, embeddings, sparse: torch.Tensor, mask_prompt: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """N embeddings, sparse (N, 1, tokens, D), mask_prompt (N, 1, P, P) or None →
        (low-res logits (N, 4h, 4w), predicted IoU (N,))."""

    @abstractmethod
    def parts(self, sam: nn.Module) -> dict[str, nn.Module]:
        """``sam_encoder``, ``prompt_encoder``, ``mask_decoder``."""
