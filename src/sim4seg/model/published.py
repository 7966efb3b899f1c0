"""Model configs written from the published values of real checkpoints — for the dry run, offline.

``sim4seg train --dry-run`` builds a preset on the meta device from its configs alone. The hub
is not always reachable (it is not on the development machine), so the presets' configs are
also written here from the values their checkpoints publish (sources: ``docs/gpu.md`` and the
fact sheet the project compiled; each value below is the checkpoint's own, not a guess):

``llava-1.5-7b``  llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 at 336 px (24 layers, 1024 wide), a
                  2-layer GELU projector, Llama-2-7B (32 layers, 4096 wide, 11008 MLP, 32 heads,
                  vocab 32064, 4096 positions); 576 image tokens.
``lisa-7b``       xinlai/LISA-7B-v1 as ``sim4seg.model.lisa`` converts it: CLIP ViT-L/14 at 224 px
                  (256 tokens), LLaMA-7B (4096 / 11008 / 32 layers / 32 heads, 2048 positions,
                  RMS ε 1e-6), vocab 32004 + ``<image>``; a linear projector (LLaVA's default:
                  LISA's config names no ``mm_projector_type``).
``llava-med``     LLaVA-Med v1.5 Mistral-7B as its HF conversion loads it: CLIP ViT-L/14 at 336 px (576
                  tokens, padded to square), a 2-layer GELU projector, Mistral-7B (4096 wide, 14336 MLP,
                  32 layers, 32 heads with 8 key/value heads, 32768 positions, RoPE θ 1e6). The HF copy's
                  vocabulary is unverified: Mistral's 32000 plus ``<image>`` is assumed (a 64-token
                  difference moves the count by 0.5M of 7.6B).
``medsam``        flaviagiammarino/medsam-vit-base: a SAM ViT-B (768 wide, 12 layers, 12 heads, global
                  attention at 2/5/8/11), 1024 px input.
``qwen2.5-vl-7b``  Qwen/Qwen2.5-VL-7B-Instruct: a 32-block ViT (1280 wide, 16 heads, 3420 MLP, windowed
                  attention of 112 px but full at blocks 7/15/23/31, patch 14, 2×2 merge to 3584), Qwen2
                  LLM (28 layers, 3584 wide, 18944 MLP, 28 heads / 4 KV heads, vocab 152064, 128000
                  positions, RoPE θ 1e6 with M-RoPE sections 16/24/24, RMS ε 1e-6); 8.29B parameters.
                  The vision values the checkpoint leaves to the class defaults were checked against
                  the installed ``Qwen2_5_VLVisionConfig``.
``qwen3-vl-8b``    Qwen/Qwen3-VL-8B-Instruct: a 27-block ViT (1152 wide, 16 heads, 4304 MLP, patch 16,
                  2304 learned positions, deepstack features of blocks 8/16/24), Qwen3 LLM (36 layers,
                  4096 wide, 12288 MLP, 32 heads / 8 KV heads of 128, vocab 151936, 262144 positions,
                  RoPE θ 5e6, interleaved M-RoPE 24/20/20). The ViT's output width (``out_hidden_size``)
                  is not in the fact sheet; it must be the LLM's 4096 for the merger to feed it (the
                  class default 3584 cannot load). Untied embeddings are assumed (not verified here).
``sam-vit-h``     facebook/sam-vit-huge: ViT-H (1280 wide, 32 layers, 16 heads, global attention
                  at 7/15/23/31), 1024 px input, 256-d prompt encoder and mask decoder.
``sam2.1-hiera-large``  facebook/sam2.1-hiera-large: Hiera-L (stages 144/288/576/1152 wide, 2/6/36/4
                  blocks, 2/4/8/16 heads, global attention at 23/33/43, windows 8/4/16/8), 256-d FPN,
                  prompt encoder and mask decoder, 1024 px input (transformers' ``convert_sam2_to_hf.py``).

A test checks them against the installed transformers classes (parameter counts, token grids).
"""

from __future__ import annotations

from collections.abc import Callable

LLAMA_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    hidden_act="silu",
)


def clip_vit_l14(image_size: int):
    """OpenAI CLIP ViT-L/14's vision tower at ``image_size`` (224 or 336)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        projection_dim=768,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=image_size,
        patch_size=14,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def llava_1_5_7b():
    """``LlavaConfig`` of llava-hf/llava-1.5-7b-hf."""
    from transformers import LlamaConfig, LlavaConfig

    text = LlamaConfig(
        **LLAMA_7B,
        vocab_size=32064,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=32001,
    )
    return LlavaConfig(
        vision_config=clip_vit_l14(336),
        text_config=text,
        image_token_index=32000,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=576,
        tie_word_embeddings=False,
    )


def lisa_7b():
    """``LlavaConfig`` of xinlai/LISA-7B-v1 after ``sim4seg convert lisa`` (``<image>`` added: vocab 32005)."""
    from sim4seg.model.lisa import lisa_llava_config

    cfg = {
        **LLAMA_7B,
        "vocab_size": 32004,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "mm_vision_select_layer": -2,
    }
    return lisa_llava_config(cfg, clip_vit_l14(224), image_token_id=32004, vocab_size=32005, projector="linear")


def llava_med_7b():
    """``LlavaConfig`` of LLaVA-Med v1.5 Mistral-7B in HF format (vocabulary: see the module docstring)."""
    from transformers import LlavaConfig, MistralConfig

    text = MistralConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        hidden_act="silu",
        vocab_size=32001,
        max_position_embeddings=32768,
        rope_theta=1e6,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=clip_vit_l14(336),
        text_config=text,
        image_token_index=32000,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=576,
        tie_word_embeddings=False,
    )


def qwen2_5_vl_7b():
    """``Qwen2_5_VLConfig`` of Qwen/Qwen2.5-VL-7B-Instruct."""
    from transformers import Qwen2_5_VLConfig

    text = dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        hidden_act="silu",
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        tie_word_embeddings=False,
        bos_token_id=151643,
        eos_token_id=151645,
    )
    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        hidden_act="silu",
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        out_hidden_size=3584,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def qwen3_vl_8b():
    """``Qwen3VLConfig`` of Qwen/Qwen3-VL-8B-Instruct."""
    from transformers import Qwen3VLConfig

    text = dict(
        vocab_size=151936,
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        tie_word_embeddings=False,
    )
    vision = dict(
        depth=27,
        hidden_size=1152,
        intermediate_size=4304,
        num_heads=16,
        hidden_act="gelu_pytorch_tanh",
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=4096,
        num_position_embeddings=2304,
        deepstack_visual_indexes=[8, 16, 24],
    )
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def _sam(hidden: int, layers: int, heads: int, global_attn: list[int]):
    from transformers import SamConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        global_attn_indexes=global_attn,
        mlp_dim=4 * hidden,
        image_size=1024,
        patch_size=16,
        output_channels=256,
        window_size=14,
    )
    return SamConfig(vision_config=vision)


def sam_vit_h():
    """``SamConfig`` of facebook/sam-vit-huge."""
    return _sam(1280, 32, 16, [7, 15, 23, 31])


def medsam_vit_b():
    """``SamConfig`` of flaviagiammarino/medsam-vit-base (SAM ViT-B's)."""
    return _sam(768, 12, 12, [2, 5, 8, 11])


def sam2_1_hiera_large():
    """``Sam2Config`` of facebook/sam2.1-hiera-large (``backbones/sam2.py`` ``VARIANTS``)."""
    from sim4seg.model.backbones import sam2

    return sam2.config(sam2.VARIANTS["sam2.1-hiera-large"])


PUBLISHED: dict[str, tuple[Callable, Callable]] = {
    "lisa-7b": (lisa_7b, sam_vit_h),
    "llava-1.5-7b+sam-vit-h": (llava_1_5_7b, sam_vit_h),
    "llava-med+medsam": (llava_med_7b, medsam_vit_b),
    "llava-1.5-7b+sam2.1-hiera-large": (llava_1_5_7b, sam2_1_hiera_large),
    "qwen2.5-vl-7b+sam2": (qwen2_5_vl_7b, sam2_1_hiera_large),
    "qwen2.5-vl-7b+sam-vit-h": (qwen2_5_vl_7b, sam_vit_h),
    "qwen3-vl-8b+sam-vit-h": (qwen3_vl_8b, sam_vit_h),
}
"""Preset name → (LVLM config, SAM config) builders from published values."""
