"""SAM2-family segmenters on transformers' ``Sam2Model``: SAM 2.1 Hiera tiny / small / base+ / large.

Why SAM2 needs more than SAM's adapter:

- **The encoding is three maps, not one.** SAM2's mask decoder adds two high-resolution feature maps
  (``feat_s0`` at 256 × 256, ``feat_s1`` at 128 × 128 for a 1024-px input, already projected by the
  decoder's ``conv_s0`` / ``conv_s1`` in ``get_image_features``) while upscaling; without them it
  cannot run. ``encode`` returns them with the 64 × 64 embedding in one ``Sam2Embeddings``, which
  ``select`` / ``expand`` index as a whole, so every caller that picks or repeats images keeps the
  three together.
- **The prompt.** ``Sam2Model.forward`` inserts a padding point (label −1) when given no points; we
  call the prompt encoder's mask embedding and the mask decoder directly instead, with ϕ(E_seg) as
  the one sparse token ``(N, 1, 1, D)`` and the RVLS2M region as the dense mask prompt
  ``(N, 1, 256, 256)`` (the prompt encoder's ``mask_input_size``); with RVLS2M off, the no-mask
  embedding. The object-score head is not used: "no mask" is a sequence without ``[SEG]``. The
  decoder's eval-mode switch to its best multimask output (``dynamic_multimask_via_stability``) is
  turned off: ϕ(E_seg) trains mask token 0, and inference reads the same token.
- **The frame.** ``Sam2ImageProcessor`` resizes the whole image to 1024 × 1024 (``size: {height,
  width}``, aspect not kept, no padding): ``SegmenterFrame(resize="square")``, which the dataset,
  the RVLS2M prompt mapping and ``Sim4SegModel.postprocess`` follow.

Like SAM's adapter, the image embedding gets ``no_memory_embedding`` added (what ``Sam2Model`` does
for a single image: no video memory). MedSAM2 (wanglab/MedSAM2) ships official-format ``.pt``
files, not a transformers checkpoint: ``sim4seg convert sam2`` (``checkpoint.convert_sam2_file``)
renames their keys to ``Sam2Model``'s and drops the video-memory modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sim4seg.data.transforms import SegmenterFrame
from sim4seg.model.backbones.base import SegmenterAdapter


@dataclass(frozen=True)
class Sam2Embeddings:
    """SAM2's encoding of B images: what its mask decoder needs, kept together."""

    image: torch.Tensor
    """(B, C, S/16, S/16) the image embedding (FPN level 2 + ``no_memory_embedding``)."""
    high_res: tuple[torch.Tensor, torch.Tensor]
    """``feat_s0`` (B, C/8, S/4, S/4) and ``feat_s1`` (B, C/4, S/8, S/8), projected by the decoder's convs."""

    @property
    def shape(self) -> torch.Size:
        """The image embedding's shape (for code that only asks how many images / how large)."""
        return self.image.shape


class Sam2Adapter(SegmenterAdapter):
    name = "SAM2"
    model_types = ("sam2", "sam2_video")
    """``sam2_video``: a ``Sam2VideoModel`` checkpoint (one hub repo serves both classes) holds every ``Sam2Model``
    weight under the same name; ``Sam2Model`` loads it and leaves the video-memory modules aside."""
    frame_resize = "square"

    def config_from_pretrained(self, path):
        from transformers import Sam2Config

        return Sam2Config.from_pretrained(path)

    def from_config(self, config, dtype: torch.dtype | None = None):
        from transformers import Sam2Model

        return Sam2Model._from_config(config, **({"dtype": dtype} if dtype else {}))

    def from_pretrained(self, path, dtype: torch.dtype | None = None):
        from transformers import Sam2Model

        return Sam2Model.from_pretrained(path, **({"dtype": dtype} if dtype else {}))

    def image_size(self, sam) -> int:
        side = int(sam.config.prompt_encoder_config.image_size)
        backbone = [int(v) for v in sam.config.vision_config.backbone_config.image_size]
        if backbone != [side, side]:
            raise ValueError(
                f"mismatched SAM2 input sizes: the image encoder takes {backbone} px, the prompt encoder {side} px"
            )
        return side

    def prompt_size(self, sam) -> int:
        return int(sam.prompt_encoder.mask_input_size[0])

    def prompt_dim(self, sam) -> int:
        dims = {
            "prompt encoder": int(sam.config.prompt_encoder_config.hidden_size),
            "mask decoder": int(sam.config.mask_decoder_config.hidden_size),
            "vision encoder FPN": int(sam.config.vision_config.fpn_hidden_size),
        }
        if len(set(dims.values())) != 1:
            raise ValueError(
                f"mismatched SAM2 dimensions: {dims}; the prompt encoder, mask decoder and image "
                "embedding must share one width"
            )
        return dims["prompt encoder"]

    def encode(self, sam, pixel_values: torch.Tensor) -> Sam2Embeddings:
        """(B, 3, S, S) → the embedding and the two high-resolution maps (``Sam2Model.get_image_embeddings``'s
        computation, with gradients: the decoder's ``conv_s0`` / ``conv_s1`` run here and may be trained)."""
        b = pixel_values.shape[0]
        maps = list(sam.get_image_features(pixel_values, return_dict=True).fpn_hidden_states)  # (h·w, B, C) each
        maps[-1] = maps[-1] + sam.no_memory_embedding
        sizes = sam.config.vision_config.backbone_feature_sizes
        s0, s1, image = (m.permute(1, 2, 0).reshape(b, -1, *hw) for m, hw in zip(maps, sizes))
        return Sam2Embeddings(image, (s0, s1))

    def select(self, embeddings: Sam2Embeddings, idx: torch.Tensor) -> Sam2Embeddings:
        return Sam2Embeddings(embeddings.image[idx], tuple(f[idx] for f in embeddings.high_res))

    def expand(self, embeddings: Sam2Embeddings, n: int) -> Sam2Embeddings:
        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.expand(n, *t.shape[1:])

        return Sam2Embeddings(rep(embeddings.image), tuple(rep(f) for f in embeddings.high_res))

    def decode(self, sam, embeddings: Sam2Embeddings, sparse: torch.Tensor, mask_prompt: torch.Tensor | None):
        image = embeddings.image
        n, _, h, w = image.shape
        pe = sam.prompt_encoder
        if mask_prompt is None:
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)
        else:
            if tuple(mask_prompt.shape[-2:]) != tuple(pe.mask_input_size):
                raise ValueError(
                    f"mask prompt {tuple(mask_prompt.shape[-2:])} is not SAM2's {tuple(pe.mask_input_size)} frame"
                )
            dense = pe.mask_embed(mask_prompt.to(image.dtype))
        pos = sam.get_image_wide_positional_embeddings().to(image.dtype).expand(n, -1, -1, -1)
        # Sam2MaskDecoder's default swaps in its best multimask output in eval mode when token 0 looks unstable;
        # Sim4Seg trains token 0 only, so evaluation must read token 0 too (the same mask in both modes).
        sam.mask_decoder.dynamic_multimask_via_stability = False
        low, iou = sam.mask_decoder(
            image_embeddings=image,
            image_positional_embeddings=pos,
            sparse_prompt_embeddings=sparse.to(image.dtype),
            dense_prompt_embeddings=dense,
            multimask_output=False,
            high_resolution_features=list(embeddings.high_res),
        )[:2]
        return low[:, 0, 0], iou[:, 0, 0]

    def parts(self, sam) -> dict:
        """The image encoder (Hiera + FPN neck), prompt encoder and mask decoder (whose ``conv_s0`` / ``conv_s1``
        project the high-resolution maps). ``no_memory_embedding`` (one vector, the video-memory stand-in) is
        in none of them and stays as loaded."""
        return {
            "sam_encoder": sam.vision_encoder,
            "prompt_encoder": sam.prompt_encoder,
            "mask_decoder": sam.mask_decoder,
        }


# ---------------------------------------------------------------------------- published variants

SAM2_FRAME = SegmenterFrame(resize="square")
"""``Sam2ImageProcessor``'s defaults: 1024 × 1024 stretch, ImageNet mean / std, bilinear, rescale 1/255."""


@dataclass(frozen=True)
class Sam2Variant:
    """A SAM 2.1 checkpoint's published Hiera image encoder (transformers' ``convert_sam2_to_hf.py``).

    Stage widths and heads double at each of the four stages from ``hidden`` / ``heads``.
    """

    name: str
    hidden: int
    heads: int
    blocks: tuple[int, int, int, int]
    global_blocks: tuple[int, ...]
    windows: tuple[int, int, int, int] = (8, 4, 14, 7)
    pos_embed_background: tuple[int, int] = (7, 7)
    frame: SegmenterFrame = SAM2_FRAME

    @property
    def widths(self) -> list[int]:
        return [self.hidden * 2**i for i in range(4)]

    @property
    def stage_heads(self) -> list[int]:
        return [self.heads * 2**i for i in range(4)]


VARIANTS = {
    "sam2.1-hiera-tiny": Sam2Variant("sam2.1-hiera-tiny", 96, 1, (1, 2, 7, 2), (5, 7, 9)),
    "sam2.1-hiera-small": Sam2Variant("sam2.1-hiera-small", 96, 1, (1, 2, 11, 2), (7, 10, 13)),
    "sam2.1-hiera-base-plus": Sam2Variant(
        "sam2.1-hiera-base-plus", 112, 2, (2, 3, 16, 3), (12, 16, 20), pos_embed_background=(14, 14)
    ),
    "sam2.1-hiera-large": Sam2Variant("sam2.1-hiera-large", 144, 2, (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8)),
}


def config(
    variant: Sam2Variant,
    *,
    widths=None,
    heads=None,
    blocks=None,
    global_blocks=None,
    width: int = 256,
    image_size: int = 1024,
):
    """``Sam2Config`` of ``variant`` (full size by default): ``image_size``-px input (SAM 2.1: 1024; MedSAM2:
    512), 4-px patch stride, FPN over the last three stages (feature maps S/4, S/8, S/16: 256², 128², 64² at
    1024 px), ``width``-wide FPN, prompt encoder and mask decoder."""
    if image_size % 32:
        raise ValueError(f"SAM2's input side must be a multiple of 32 (four stride-2 stages), got {image_size}")
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    widths = list(widths or variant.widths)
    backbone = Sam2HieraDetConfig(
        hidden_size=widths[0],
        num_attention_heads=(heads or variant.stage_heads)[0],
        image_size=[image_size, image_size],
        patch_kernel_size=[7, 7],
        patch_stride=[4, 4],
        patch_padding=[3, 3],
        query_stride=[2, 2],
        window_positional_embedding_background_size=list(variant.pos_embed_background),
        num_query_pool_stages=3,
        blocks_per_stage=list(blocks or variant.blocks),
        embed_dim_per_stage=widths,
        num_attention_heads_per_stage=list(heads or variant.stage_heads),
        window_size_per_stage=list(variant.windows),
        global_attention_blocks=list(variant.global_blocks if global_blocks is None else global_blocks),
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=widths[::-1],
        backbone_feature_sizes=[[image_size // s] * 2 for s in (4, 8, 16)],
        fpn_hidden_size=width,
        fpn_top_down_levels=[2, 3],
        num_feature_levels=3,
    )
    prompt = Sam2PromptEncoderConfig(hidden_size=width, image_size=image_size, patch_size=16, mask_input_channels=16)
    if width == 256:
        decoder = Sam2MaskDecoderConfig()
    else:
        decoder = Sam2MaskDecoderConfig(
            hidden_size=width, num_attention_heads=2, mlp_dim=2 * width, iou_head_hidden_dim=width
        )
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def shrunk(variant: Sam2Variant, *, width: int = 32, layers: int = 1, image_size: int = 1024):
    """A Sam2Model with the real 1024-px input (or ``image_size``), 4-px patch stride, the four Hiera stages with the variant's
    windows, the 256² / 128² / 64² feature maps and the 256-px prompt frame, but ``layers`` windowed blocks per
    stage (no global attention: it changes no geometry), stage widths ``width/4 … 2·width`` and a ``width``-wide
    FPN, prompt encoder and mask decoder (``width`` a multiple of 8: the decoder's convs take 1/8 and 1/4)."""
    from transformers import Sam2Model

    if width % 8 or width < 16:
        raise ValueError(f"SAM2 width must be a multiple of 8 and at least 16, got {width}")
    widths = [width // 4, width // 2, width, 2 * width]
    cfg = config(
        variant,
        widths=widths,
        heads=[1, 1, 2, 2],
        blocks=[layers] * 4,
        global_blocks=[],
        width=width,
        image_size=image_size,
    )
    return Sam2Model(cfg)
