"""M3DS records → model inputs: chat prompt, answer-only labels, both image frames, masks, mixing sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from sim4seg.data.dataset import Collator, ExampleEncoder, M3DSDataset, SubsetMixSampler, expected_share
from sim4seg.data.transforms import lvlm_token_box, sam_frame
from sim4seg.errors import InputError


@pytest.fixture(scope="module")
def tiny_model():
    from sim4seg.model.tiny import build_tiny

    return build_tiny(seed=1)


@pytest.mark.parametrize("fmt", ["plain", "diagnosis"])
def test_examples_hold_prompt_answer_labels_frames_and_mask(synth_m3ds, tiny_model, fmt):
    model, processor = tiny_model
    ds = M3DSDataset(synth_m3ds, "train", ExampleEncoder.for_model(model, processor), answer_format=fmt)
    item = ds[0]
    s = ds.samples[0]
    tok = processor.tokenizer
    answer_ids = item["labels"][item["labels"] != -100]
    assert tok.decode(answer_ids).strip() == s.answers.get(fmt) + tok.eos_token
    n_prompt = int((item["labels"] == -100).sum())
    assert (item["labels"][:n_prompt] == -100).all() and (item["labels"][n_prompt:] != -100).all()
    prompt = tok.decode(item["input_ids"][:n_prompt])
    assert s.query in prompt and prompt.rstrip().endswith("ASSISTANT:")
    assert int((item["input_ids"] == processor.image_token_id).sum()) == model.lvlm.config.image_seq_length
    assert item["seg_count"] == 1
    h, w = item["image_size"].tolist()
    assert item["mask"].shape == (h, w) and item["mask"].dtype == torch.bool
    assert item["pixel_values"].shape == (3, 64, 64) and item["sam_pixel_values"].shape == (
        3,
        model.sam_size,
        model.sam_size,
    )
    assert item["meta"]["id"] == s.id


def test_sam_frame_resizes_longest_side_and_pads_bottom_right():
    image = np.full((30, 60, 3), 200, np.uint8)
    frame = sam_frame(image, 64)
    assert frame.shape == (3, 64, 64)
    assert torch.allclose(frame[0, :32], torch.tensor((200 - 123.675) / 58.395))
    assert (frame[:, 32:] == 0).all()


def test_token_box_follows_the_processor_geometry(tiny_model):
    _, processor = tiny_model
    # shortest side → 64, centre crop 64: on a 40 x 80 image the grid covers x in [20, 60)
    assert lvlm_token_box(processor.image_processor, (40, 80)) == pytest.approx((20.0, 0.0, 60.0, 40.0))

    class Pad:
        do_pad = True

    assert lvlm_token_box(Pad(), (40, 80)) == pytest.approx((0.0, -20.0, 80.0, 60.0))


def test_collate_feeds_the_model(synth_m3ds, tiny_model):
    model, processor = tiny_model
    ds = M3DSDataset(synth_m3ds, "train", ExampleEncoder.for_model(model, processor))
    batch = Collator(processor.tokenizer.pad_token_id)([ds[i] for i in range(3)])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert len(batch["masks"]) == 3 and batch["image_sizes"].shape == (3, 2) and batch["token_boxes"].shape == (3, 4)
    out = model(**batch)
    assert torch.isfinite(out.loss) and [m.shape[1:] for m in out.masks] == [tuple(m.shape) for m in batch["masks"]]
    left = Collator(processor.tokenizer.pad_token_id, "left")([ds[0], ds[1]])
    assert (left["attention_mask"][:, -1] == 1).all()


def test_cache_returns_the_same_examples_within_its_budget(synth_m3ds, tiny_model, monkeypatch):
    model, processor = tiny_model
    enc = ExampleEncoder.for_model(model, processor)
    plain = M3DSDataset(synth_m3ds, "train", enc)
    first = plain[0]
    one = sum(v.nbytes for v in first.values() if isinstance(v, torch.Tensor))
    cached = M3DSDataset(synth_m3ds, "train", enc, cache_mb=1.5 * one / 2**20)  # room for one example
    a, b = cached[0], cached[1]
    monkeypatch.setattr("sim4seg.data.dataset.read_image", lambda *a, **k: pytest.fail("decoded a cached example"))
    again = cached[0]  # from memory, identical to a fresh encoding
    assert again is not a and again.keys() == first.keys()
    for k, v in first.items():
        assert torch.equal(again[k], v) if isinstance(v, torch.Tensor) else again[k] == v
    with pytest.raises(pytest.fail.Exception):
        cached[1]  # over the budget: not kept, decoded again
    assert b["meta"]["id"] != a["meta"]["id"]


def test_missing_cot_is_a_clear_error(synth_m3ds, tiny_model):
    model, processor = tiny_model
    ds = M3DSDataset(synth_m3ds, "train", ExampleEncoder.for_model(model, processor), answer_format="cot")
    with pytest.raises(InputError, match="no 'cot' answer"):
        ds[0]


def test_subset_mix_sampler_follows_the_rates():
    subsets = ["a"] * 10 + ["b"] * 90
    sampler = SubsetMixSampler(subsets, {"a": 1.0, "b": 1.0}, num_samples=4000, seed=0)
    drawn = Counter(subsets[i] for i in sampler)
    assert abs(drawn["a"] / 4000 - 0.5) < 0.04
    assert expected_share(subsets, {"a": 1.0, "b": 1.0}) == {"a": 0.5, "b": 0.5}
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    with pytest.raises(InputError, match="no samples"):
        SubsetMixSampler(subsets, {"c": 1.0})
