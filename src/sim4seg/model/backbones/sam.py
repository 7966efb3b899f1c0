"""SAM-family segmenters on transformers' ``SamModel``: SAM ViT-B / L / H and MedSAM.

``SamModel.forward`` has no argument for an extra sparse token, so ``decode`` calls the prompt
encoder's mask embedding and the mask decoder directly: ϕ(E_seg) is the sparse prompt
``(N, 1, 1, D)`` and the RVLS2M region the dense mask prompt ``(N, 1, 256, 256)``. All SAM sizes
share the 1024-px input, 16-px patches, a 64 × 64 embedding and the 256 × 256 prompt frame; they
differ in the image encoder. MedSAM is a SAM ViT-B with its own preprocessing (inputs in
[0, 1], bicubic), which its ``preprocessor_config.json`` states and ``SegmenterFrame`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sim4seg.data.transforms import SegmenterFrame
from sim4seg.model.backbones.base import SegmenterAdapter


class SamAdapter(SegmenterAdapter):
    name = "SAM"
    model_types = ("sam",)

    def config_from_pretrained(self, path):
        from transformers import SamConfig

        return SamConfig.from_pretrained(path)

    def from_config(self, config, dtype: torch.dtype | None = None):
        from transformers import SamModel

        return SamModel._from_config(config, **({"dtype": dtype} if dtype else {}))

    def from_pretrained(self, path, dtype: torch.dtype | None = None):
        from transformers import SamModel

        return SamModel.from_pretrained(path, **({"dtype": dtype} if dtype else {}))

    def image_size(self, sam) -> int:
        return int(sam.config.vision_config.image_size)

    def prompt_size(self, sam) -> int:
        return 4 * int(sam.config.prompt_encoder_config.image_embedding_size)

    def prompt_dim(self, sam) -> int:
        dims = {
            "prompt encoder": int(sam.config.prompt_encoder_config.hidden_size),
            "mask decoder": int(sam.config.mask_decoder_config.hidden_size),
            "vision encoder output": int(sam.config.vision_config.output_channels),
        }
        if len(set(dims.values())) != 1:
            raise ValueError(
                f"mismatched SAM dimensions: {dims}; the prompt encoder, mask decoder and image "
                "embedding must share one width"
            )
        return dims["prompt encoder"]

    def encode(self, sam, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, C, S/16, S/16)."""
        return sam.vision_encoder(pixel_values).last_hidden_state

    def decode(self, sam, embeddings: torch.Tensor, sparse: torch.Tensor, mask_prompt: torch.Tensor | None):
        n, _, h, w = embeddings.shape
        pe = sam.prompt_encoder
        if mask_prompt is None:
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)
        else:
            dense = pe.mask_embed(mask_prompt.to(embeddings.dtype))
        pos = sam.get_image_wide_positional_embeddings().to(embeddings.dtype).expand(n, -1, -1, -1)
        low, iou = sam.mask_decoder(
            image_embeddings=embeddings,
            image_positional_embeddings=pos,
            sparse_prompt_embeddings=sparse.to(embeddings.dtype),
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )[:2]
        return low[:, 0, 0], iou[:, 0, 0]

    def parts(self, sam) -> dict:
        return {
            "sam_encoder": sam.vision_encoder,
            "prompt_encoder": sam.prompt_encoder,
            "mask_decoder": sam.mask_decoder,
        }


# ---------------------------------------------------------------------------- published variants


@dataclass(frozen=True)
class SamVariant:
    """A SAM checkpoint's published image encoder and preprocessing."""

    name: str
    hidden: int
    layers: int
    heads: int
    global_attn: tuple[int, ...]
    frame: SegmenterFrame = SegmenterFrame()


MEDSAM_FRAME = SegmenterFrame(do_normalize=False, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0), resample=3)
"""flaviagiammarino/medsam-vit-base's preprocessor_config.json: inputs in [0, 1], bicubic."""

VARIANTS = {
    "sam-vit-b": SamVariant("sam-vit-b", 768, 12, 12, (2, 5, 8, 11)),
    "sam-vit-l": SamVariant("sam-vit-l", 1024, 24, 16, (5, 11, 17, 23)),
    "sam-vit-h": SamVariant("sam-vit-h", 1280, 32, 16, (7, 15, 23, 31)),
    "medsam": SamVariant("medsam", 768, 12, 12, (2, 5, 8, 11), MEDSAM_FRAME),
}


def shrunk(variant: SamVariant, *, width: int = 32, layers: int = 1):
    """A SamModel with the real 1024-px input, 16-px patches, 64 × 64 embedding and 256-px prompt frame,
    but ``layers`` windowed encoder blocks (no global-attention block: over 4096 tokens it costs seconds
    on a CPU and changes no geometry) and ``width`` channels everywhere."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    d = width
    vision = SamVisionConfig(
        hidden_size=d,
        output_channels=d,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=1024,
        patch_size=16,
        mlp_dim=2 * d,
        global_attn_indexes=[],
        window_size=14,
        num_pos_feats=d // 2,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=d, image_size=1024, patch_size=16, image_embedding_size=64, mask_input_channels=16
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=d, num_hidden_layers=2, num_attention_heads=2, mlp_dim=2 * d, iou_head_hidden_dim=d
    )
    return SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))
