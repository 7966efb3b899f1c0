"""A tiny Sim4Seg built once per module, and helpers to make batches for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim4seg.data.dataset import Collator, ExampleEncoder


@pytest.fixture(scope="module")
def tiny():
    from sim4seg.model.builders import build_tiny

    model, processor = build_tiny(seed=0)
    return model, processor


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
