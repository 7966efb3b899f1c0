"""A tiny Sim4Seg built once per session (each test gets its own copy), and helpers to make batches for it."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from sim4seg.data.dataset import Collator, ExampleEncoder


@pytest.fixture(scope="session")
def _tiny_template():
    from sim4seg.model.tiny import build_tiny

    return build_tiny(seed=0)


@pytest.fixture
def tiny(_tiny_template):
    """``(model, processor)``: a fresh copy of the session's tiny model, free to be changed by the test."""
    model, processor = _tiny_template
    return copy.deepcopy(model), processor


def make_batch(model, processor, answers, sizes=None, padding_side="right", seed=0):
    """A collated batch of random images, one per answer (``None``: prompt only), with random masks."""
    rng = np.random.default_rng(seed)
    enc = ExampleEncoder.for_model(model, processor)
    sizes = sizes or [(48, 72)] * len(answers)
    items = []
    for (h, w), answer in zip(sizes, answers):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.random((h, w)) > 0.7 if answer is not None else None
        items.append(enc.encode(image, "Segment the polyp in this endoscopy image.", answer, mask))
    return Collator(processor.tokenizer.pad_token_id, padding_side)(items)


@pytest.fixture
def batch_of():
    return make_batch


# ------------------------------------------------------------------ official SAM key names


def _official_sam_name(hf: str) -> str:
    """HF SamModel key → the official segment_anything key (written out here, independently of keymaps)."""
    table = [
        ("vision_encoder.patch_embed.projection.", "image_encoder.patch_embed.proj."),
        ("vision_encoder.neck.conv1.", "image_encoder.neck.0."),
        ("vision_encoder.neck.layer_norm1.", "image_encoder.neck.1."),
        ("vision_encoder.neck.conv2.", "image_encoder.neck.2."),
        ("vision_encoder.neck.layer_norm2.", "image_encoder.neck.3."),
        ("vision_encoder.", "image_encoder."),
        (
            "prompt_encoder.shared_embedding.positional_embedding",
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        ),
        ("prompt_encoder.point_embed.", "prompt_encoder.point_embeddings."),
        ("mask_embed.conv1.", "mask_downscaling.0."),
        ("mask_embed.layer_norm1.", "mask_downscaling.1."),
        ("mask_embed.conv2.", "mask_downscaling.3."),
        ("mask_embed.layer_norm2.", "mask_downscaling.4."),
        ("mask_embed.conv3.", "mask_downscaling.6."),
        ("upscale_conv1.", "output_upscaling.0."),
        ("upscale_layer_norm.", "output_upscaling.1."),
        ("upscale_conv2.", "output_upscaling.3."),
        ("layer_norm_final_attn.", "norm_final_attn."),
    ]
    for a, b in table:
        if a in hf:
            hf = hf.replace(a, b)
            if b.startswith("image_encoder.") and a != "vision_encoder.":
                return hf
    hf = re.sub(r"^image_encoder\.layers\.", "image_encoder.blocks.", hf)
    hf = re.sub(r"\.layer_norm(\d)\.", r".norm\1.", hf)
    return hf


def _official_sam_state_dict(sam) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sam.state_dict().items():
        if k.startswith("shared_image_embedding."):
            continue  # tied to the prompt encoder's matrix; not in official files
        name = k
        m = re.match(
            r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.(proj_in|layers\.0|proj_out)\.(.*)$",
            k,
        )
        if m:
            name = f"mask_decoder.{m.group(1)}.layers.{ {'proj_in': 0, 'layers.0': 1, 'proj_out': 2}[m.group(2)] }.{m.group(3)}"
        else:
            name = _official_sam_name(k)
        out[name] = v.clone() + 0.5  # distinct values, to see they land in the right place
    return out


@pytest.fixture
def official_sam_state_dict():
    """``f(sam_model) -> state dict`` of a SamModel's weights under the official segment_anything names (+0.5)."""
    return _official_sam_state_dict
