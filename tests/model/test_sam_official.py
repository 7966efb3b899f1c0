"""The official-SAM conversion checked against the real ``segment_anything`` module definitions.

test_checkpoint.py checks ``keymaps.SAM_KEY_MAP`` against official names written out by hand; here the
official architecture itself (``segment-anything`` 1.0, a dev dependency) produces the names, shapes and
numbers. A tiny official SAM with random weights is saved as a ``.pth``, converted with
``checkpoint.convert_sam_file`` and loaded as a ``transformers.SamModel``; both must compute the same image
embeddings, masks and IoU scores. Same-shaped tensors put in each other's place (two LayerNorms, two point
embeddings, two MLP layers) pass any name/shape check, and only a numerical comparison catches them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import partial
from types import ModuleType

import pytest
import torch

from sim4seg.model import checkpoint, keymaps

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _is_sa(name: str) -> bool:
    return name == "segment_anything" or name.startswith("segment_anything.")


@pytest.fixture(scope="module")
def sam_modeling() -> ModuleType:
    """``segment_anything.modeling``, imported without running ``segment_anything/__init__.py``.

    That ``__init__`` imports the predictor, hence torchvision, which does not work here; the modeling
    modules need only torch and numpy. A bare parent package (created from its spec, never executed) lets
    the submodule import normally; ``sys.modules`` is restored afterwards so nothing else sees the stub.
    """
    spec = importlib.util.find_spec("segment_anything")
    assert spec is not None and spec.submodule_search_locations, "segment-anything is not installed (dev extra)"
    saved = {k: v for k, v in sys.modules.items() if _is_sa(k)}
    for k in saved:
        del sys.modules[k]
    try:
        sys.modules["segment_anything"] = importlib.util.module_from_spec(spec)  # bare: __path__ set, not executed
        modeling = importlib.import_module("segment_anything.modeling")
    finally:
        for k in [k for k in sys.modules if _is_sa(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
    return modeling


def official_sam(
    m: ModuleType,
    *,
    embed_dim: int,
    depth: int,
    num_heads: int,
    global_attn_indexes: tuple[int, ...],
    img_size: int = 1024,
    patch_size: int = 16,
    window_size: int = 14,
    prompt_dim: int = 256,
    decoder_mlp_dim: int = 2048,
    decoder_heads: int = 8,
    iou_head_hidden_dim: int = 256,
):
    """An official ``Sam`` composed as ``segment_anything.build_sam._build_sam`` does, at any size."""
    grid = img_size // patch_size
    return m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=num_heads,
            patch_size=patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_attn_indexes,
            window_size=window_size,
            out_chans=prompt_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(
                depth=2, embedding_dim=prompt_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_heads
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
    )


def hf_sam_config(
    *,
    embed_dim: int,
    depth: int,
    num_heads: int,
    global_attn_indexes: tuple[int, ...],
    img_size: int = 1024,
    patch_size: int = 16,
    window_size: int = 14,
    prompt_dim: int = 256,
    decoder_mlp_dim: int = 2048,
    decoder_heads: int = 8,
    iou_head_hidden_dim: int = 256,
):
    """The ``SamConfig`` of :func:`official_sam` with the same arguments.

    The decoder's ``layer_norm_eps`` is 1e-5: the official ``TwoWayAttentionBlock`` norms are plain
    ``nn.LayerNorm`` (eps 1e-5), while ``SamMaskDecoderConfig`` defaults to 1e-6.
    """
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=embed_dim,
        output_channels=prompt_dim,
        num_hidden_layers=depth,
        num_attention_heads=num_heads,
        image_size=img_size,
        patch_size=patch_size,
        mlp_dim=4 * embed_dim,
        global_attn_indexes=list(global_attn_indexes),
        window_size=window_size,
        num_pos_feats=prompt_dim // 2,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=prompt_dim, image_size=img_size, patch_size=patch_size, mask_input_channels=16
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=prompt_dim,
        num_hidden_layers=2,
        num_attention_heads=decoder_heads,
        mlp_dim=decoder_mlp_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=iou_head_hidden_dim,
        layer_norm_eps=1e-5,
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


TINY = dict(
    embed_dim=32,
    depth=2,
    num_heads=2,
    global_attn_indexes=(1,),
    img_size=64,
    patch_size=8,
    window_size=4,
    prompt_dim=32,
    decoder_mlp_dim=64,
    decoder_heads=2,
    iou_head_hidden_dim=32,
)


@pytest.fixture(scope="module")
def converted_pair(sam_modeling, tmp_path_factory):
    """``(official tiny Sam, the SamModel converted from its .pth)``, both in eval mode."""
    from transformers import SamModel

    torch.manual_seed(0)
    official = official_sam(sam_modeling, **TINY).eval()
    with torch.no_grad():  # off the init values: LayerNorms not 1/0, rel-pos and abs-pos not zero
        for t in official.state_dict().values():
            t.add_(0.1 * torch.randn_like(t))
    tmp = tmp_path_factory.mktemp("sam_official")
    torch.save(official.state_dict(), tmp / "sam_tiny.pth")
    SamModel(hf_sam_config(**TINY)).config.save_pretrained(tmp / "base")
    out = checkpoint.convert_sam_file(tmp / "sam_tiny.pth", tmp / "hf", base=tmp / "base")
    return official, SamModel.from_pretrained(out).eval()


def test_image_embeddings_match_official(converted_pair):
    official, hf = converted_pair
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = official.image_encoder(x)
        got = hf.get_image_embeddings(x)
    assert ref.shape == (2, 32, 8, 8)
    torch.testing.assert_close(got, ref, **TOL)


def _official_decode(official, emb, multimask: bool, points=None, boxes=None, masks=None):
    sparse, dense = official.prompt_encoder(points=points, boxes=boxes, masks=masks)
    return official.mask_decoder(
        image_embeddings=emb,
        image_pe=official.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("prompt", ["points", "boxes", "mask"])
def test_mask_decoder_matches_official(converted_pair, prompt, multimask):
    """Low-res masks and IoU scores for the same image embedding and prompt.

    Official calls take one image's prompts as a batch (``P x N x 2`` points, ``P x 4`` boxes,
    ``P x 1 x 4h x 4w`` masks); HF adds an image axis in front (``1 x P x N x 2``, ``1 x P x 4``) and
    returns ``1 x P x C x h x w`` masks. Points mix labels 1 and 0 (``point_embed.1`` / ``.0``) and get
    the padding point (``not_a_point_embed``); boxes use ``point_embed.2`` / ``.3``; a mask prompt goes
    through ``mask_embed`` instead of ``no_mask_embed``.
    """
    official, hf = converted_pair
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(1, 32, 8, 8, generator=g)
    with torch.no_grad():
        if prompt == "points":
            coords = torch.rand(2, 3, 2, generator=g) * 64
            labels = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.int)
            ref = _official_decode(official, emb, multimask, points=(coords, labels))
            got = hf(
                image_embeddings=emb, input_points=coords[None], input_labels=labels[None], multimask_output=multimask
            )
        elif prompt == "boxes":
            xy = torch.rand(2, 2, 2, generator=g) * 64
            boxes = torch.cat([xy.min(1).values, xy.max(1).values], dim=1)
            ref = _official_decode(official, emb, multimask, boxes=boxes)
            got = hf(image_embeddings=emb, input_boxes=boxes[None], multimask_output=multimask)
        else:
            mask = torch.randn(1, 1, 32, 32, generator=g) * 4
            ref = _official_decode(official, emb, multimask, masks=mask)
            got = hf(image_embeddings=emb, input_masks=mask, multimask_output=multimask)
    ref_masks, ref_iou = ref
    n_out = 3 if multimask else 1
    assert ref_masks.shape[1:] == (n_out, 32, 32) and ref_iou.shape[1:] == (n_out,)
    torch.testing.assert_close(got.pred_masks[0], ref_masks, **TOL)
    torch.testing.assert_close(got.iou_scores[0], ref_iou, **TOL)


def test_no_mask_prompt_differs_from_mask_prompt(converted_pair):
    """The mask case above is not vacuous: the dense prompt changes the result."""
    official, _ = converted_pair
    emb = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    mask = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(4)) * 4
    with torch.no_grad():
        without, _ = _official_decode(official, emb, False)
        with_mask, _ = _official_decode(official, emb, False, masks=mask)
    assert (without - with_mask).abs().max() > 1e-2


FULL_SIZE = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_official_keys_convert(sam_modeling, name):
    """Every key and shape of the real ViT-B/L/H SAM (MedSAM is ViT-B) lands on a SamModel key of that shape."""
    from transformers import SamModel

    arch = FULL_SIZE[name]
    with torch.device("meta"):
        official = official_sam(sam_modeling, **arch).state_dict()
        target = SamModel(hf_sam_config(**arch)).state_dict()
    last, first_global = arch["depth"] - 1, arch["global_attn_indexes"][0]
    head_dim = arch["embed_dim"] // arch["num_heads"]
    assert official[f"image_encoder.blocks.{last}.attn.rel_pos_h"].shape == (2 * 64 - 1, head_dim)
    assert official[f"image_encoder.blocks.{first_global - 1}.attn.rel_pos_w"].shape == (2 * 14 - 1, head_dim)
    assert official["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape == (2, 128)
    converted, unexpected = keymaps.convert_sam(official)
    assert keymaps.check_against(converted, target, unexpected) == []
    assert len(converted) == len(target)
