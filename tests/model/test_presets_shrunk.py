"""Every preset's true geometry on a shrunk random model, end to end on a CPU (nothing downloaded).

Each preset's processors, image tokens and grid, chat template, special tokens, SAM input size,
preprocessing and prompt frame are the published values; the networks have a layer or two.
Dynamic-resolution presets (Qwen2.5-VL) have no fixed grid: each image gets its own, read from
the processor's ``image_grid_thw``; their GEOMETRY row holds the most tokens one image can take.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from sim4seg.data.dataset import Collator, ExampleEncoder, stack_images
from sim4seg.data.prompts import parse_diagnosis_line
from sim4seg.errors import InputError
from sim4seg.infer.tts import candidate_masks, select
from sim4seg.model import checkpoint
from sim4seg.model.presets import PRESETS
from sim4seg.model.shrink import build_shrunk

# published geometry: image tokens (dynamic: the most per image), token grid (dynamic: None), LVLM input side
# (dynamic: the pixel unit of a token, patch × merge), how the LVLM frame is made, prompt prefix
QWEN_IMAGE = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
QWEN_PREFIX = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + QWEN_IMAGE
GEOMETRY = {
    "lisa-7b": (256, [16, 16], 224, "crop", "A chat between a curious human"),
    "llava-1.5-7b+sam-vit-h": (576, [24, 24], 336, "crop", "USER: <image>"),
    "llava-1.5-7b+sam2.1-hiera-large": (576, [24, 24], 336, "crop", "USER: <image>"),
    "llava-med+medsam": (576, [24, 24], 336, "pad", "[INST] <image>"),
    "qwen2.5-vl-7b+sam2": (1280, None, 28, "resize", QWEN_PREFIX),
    "qwen2.5-vl-7b+sam-vit-h": (1280, None, 28, "resize", QWEN_PREFIX),
    "qwen3-vl-8b+sam-vit-h": (1280, None, 32, "resize", QWEN_IMAGE),  # no default system turn
}
# dynamic resolution: patch, min_pixels, shrunk M-RoPE sections (the published split of 8 rotary pairs)
QWEN = {
    "qwen2.5-vl-7b+sam2": (14, 3136, [2, 3, 3]),
    "qwen2.5-vl-7b+sam-vit-h": (14, 3136, [2, 3, 3]),
    "qwen3-vl-8b+sam-vit-h": (16, 65536, [4, 2, 2]),
}
QUERY = "Segment the polyp in this endoscopy image."


def is_sam2(name: str) -> bool:
    """SAM2 presets: the image stretched over the square input, no padding (SAM: longest side, padded)."""
    return PRESETS[name].sam_variant.startswith("sam2")


def cot_answer(tokenizer, n_tokens: int = 400) -> str:
    """A chain of thought of at least ``n_tokens`` tokens ending in ``[SEG]`` and a ``Diagnosis:`` line."""
    step = "The lesion has a smooth border and a uniform colour compared with the surrounding mucosa. "
    text = ""
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < n_tokens:
        text += step
    return text + "It is [SEG].\nDiagnosis: polyp."


class Force(LogitsProcessor):
    """Generation constrained to ``target`` (then EOS): everything else is -inf at each step."""

    def __init__(self, target: torch.Tensor):
        self.target, self.start = target, None

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        step = min(input_ids.shape[1] - self.start, len(self.target) - 1)
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.target[step]] = 0.0
        return forced


def test_every_preset_is_covered():
    assert set(GEOMETRY) == set(PRESETS)


@pytest.fixture(scope="module", params=sorted(PRESETS))
def shrunk(request):
    torch.set_num_threads(1)
    model, processor = build_shrunk(request.param, seed=0)
    return request.param, model, processor


def test_geometry_is_the_presets(shrunk):
    name, model, processor = shrunk
    n, grid, side, frame_kind, prefix = GEOMETRY[name]
    assert model.image_tokens == n and model.config.token_grid == grid
    assert model.max_length == n + model.config.text_budget
    assert (model.sam_size, model.prompt_size) == (1024, 256)
    v = model.lvlm.config.vision_config
    if frame_kind == "resize":  # Qwen-VL: 14 (Qwen3: 16) px patches, 2×2 merged, 2 frames a patch; min / max pixels
        patch, min_pixels, section = QWEN[name]
        assert (v.patch_size * v.spatial_merge_size, v.temporal_patch_size) == (side, 2)
        ip = processor.image_processor
        assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (patch, 2, 2)
        assert (ip.size.shortest_edge, ip.size.longest_edge) == (min_pixels, n * side * side)
        assert model.lvlm.config.text_config.rope_parameters["mrope_section"] == section
        tok = processor.tokenizer
        for t in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "[SEG]"):
            assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
        assert tok.eos_token == "<|im_end|>" and model.image_token_id == model.lvlm.config.image_token_id
        assert ExampleEncoder.for_model(model, processor).prompt(QUERY).endswith("<|im_start|>assistant\n")
    else:
        assert v.image_size == side
    enc = ExampleEncoder.for_model(model, processor)
    assert enc.prompt(QUERY).startswith(prefix)
    ip = processor.image_processor
    assert bool(getattr(ip, "do_pad", False)) == (frame_kind == "pad")
    medsam = name == "llava-med+medsam"
    assert model.sam_frame.do_normalize is not medsam and model.sam_frame.resample == (3 if medsam else 2)
    assert model.sam_frame.resize == ("square" if is_sam2(name) else "longest")
    assert type(model.sam).__name__ == ("Sam2Model" if is_sam2(name) else "SamModel")
    if name == "lisa-7b":  # LISA's added tokens are single tokens and frame the image
        tok = processor.tokenizer
        for t in ("<im_start>", "<im_end>", "[SEG]"):
            assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
        assert "<im_start><image><im_end>\n" + QUERY in enc.prompt(QUERY)


@pytest.mark.parametrize("size", [(2304, 2880), (2880, 1152), (333, 517)])
def test_encoding_non_square_images(shrunk, size):
    name, model, processor = shrunk
    n, _, side, frame_kind, _ = GEOMETRY[name]
    h, w = size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    enc = ExampleEncoder.for_model(model, processor)
    ex = enc.encode(image, QUERY, cot_answer(processor.tokenizer), np.zeros((h, w), bool), name="x.png")
    assert len(ex["input_ids"]) <= model.max_length  # a 400-token CoT fits the derived max_length
    tokens = int((ex["input_ids"] == model.image_token_id).sum())
    if frame_kind == "resize":  # its own grid: the aspect kept, the area within max_pixels
        t, gh, gw = ex["image_grid_thw"].tolist()
        patch = QWEN[name][0]
        assert t == 1 and tokens == gh * gw // 4 <= n and ex["pixel_values"].shape == (gh * gw, 3 * 2 * patch**2)
        assert (gh // 2) * (gw // 2) * side * side <= n * side * side
        assert (gw / gh) == pytest.approx(w / h, rel=0.05)
        if max(h, w) > 1500:  # downsized to the budget, not far under it
            assert tokens > 0.9 * n
    else:
        assert tokens == n
        assert ex["pixel_values"].shape == (3, side, side)
    sam = ex["sam_pixel_values"]
    assert sam.shape == (3, 1024, 1024)
    if is_sam2(name):  # stretched over the whole square: no padding, the last row / column is the image's
        rh = rw = 1024
        assert float(sam[:, -1].abs().amax()) > 0 and float(sam[:, :, -1].abs().amax()) > 0
    else:
        rh, rw = round(h * 1024 / max(h, w)), round(w * 1024 / max(h, w))
        assert float(sam[:, rh:].abs().sum() + sam[:, :, rw:].abs().sum()) == 0.0  # padded bottom-right
    inside = sam[:, :rh, :rw]
    if name == "llava-med+medsam":  # MedSAM's own preprocessing: [0, 1], no normalisation
        assert float(inside.min()) >= 0.0 and float(inside.max()) <= 1.0
    else:  # SAM's: ImageNet-normalised
        assert float(inside.min()) < -1.0
    box = ex["token_box"].tolist()
    short, long_ = min(h, w), max(h, w)
    if frame_kind == "resize":  # the grid covers the whole image
        want = [0, 0, w, h]
    elif frame_kind == "crop":  # the centred square of side min(h, w)
        off = (long_ - short) // 2
        want = [off, 0, off + short, h] if w > h else [0, off, w, off + short]
    else:  # padded to a square around the image
        off = (long_ - short) / 2
        want = [0, -off, w, h + off] if w > h else [-off, 0, w + off, h]
    assert box == pytest.approx(want, abs=1.5 * long_ / side)  # within the processor's integer rounding


def test_max_length_default_fits_the_image_tokens_and_an_explicit_one_wins(shrunk):
    name, model, processor = shrunk
    n = GEOMETRY[name][0]
    image = np.zeros((40, 60, 3), np.uint8)
    if GEOMETRY[name][3] == "resize":  # the most tokens: an image at the pixel budget
        side = GEOMETRY[name][2]
        image = np.zeros((32 * side, 40 * side, 3), np.uint8)
    ExampleEncoder.for_model(model, processor).encode(image, QUERY, "It is [SEG].")  # 512 was too short for 576
    enc = ExampleEncoder(processor, sam_size=model.sam_size, max_length=n, sam_frame=model.sam_frame)
    with pytest.raises(InputError, match=rf"the prompt is \d+ tokens \({n} of them the image's\), over max_length={n}"):
        enc.encode(image, QUERY, "It is [SEG].", name="x.png")


def _batch(model, processor, sizes, answers, seed=0):
    rng = np.random.default_rng(seed)
    enc = ExampleEncoder.for_model(model, processor)
    items = [
        enc.encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), QUERY, a, rng.random((h, w)) > 0.6)
        for (h, w), a in zip(sizes, answers)
    ]
    return Collator(processor.tokenizer.pad_token_id)(items)


def test_teacher_forced_forward_and_backward(shrunk):
    name, model, processor = shrunk
    sizes = [(230, 370), (300, 180)]
    batch = _batch(model, processor, sizes, ["It is [SEG].\nDiagnosis: polyp.", "No lesion.\nDiagnosis: normal."])
    model.train()
    model.zero_grad()
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.seg_counts.tolist() == [1, 0]
    assert tuple(out.masks[0].shape) == (1, *sizes[0]) and out.masks[1].shape[0] == 0
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    for part in ("phi.", "sam.mask_decoder.", "lora_"):
        assert any(part in n and g is not None and bool(g.abs().sum() > 0) for n, g in grads.items()), part
    model.eval()


def _prompt(model, processor, size=(280, 410), seed=1):
    enc = ExampleEncoder.for_model(model, processor)
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    encoding = model.encode_image(**stack_images([enc.image_inputs(image)]))
    ids = enc.prompt_ids(QUERY, _image_tokens(model, encoding))[None]
    return encoding, ids


def _image_tokens(model, encoding) -> int:
    """The image's tokens: its own grid's (dynamic resolution) or the model's fixed count."""
    return model.image_tokens if encoding.token_grids is None else int(encoding.token_grids[0].prod())


def test_generation_of_a_400_token_chain_of_thought(shrunk):
    """A random model cannot write a CoT; constrained to one, generation must carry it whole: 400+ tokens, the
    [SEG] state found at its position, a mask at the image's size, the diagnosis parsed, no truncation."""
    name, model, processor = shrunk
    tok = processor.tokenizer
    answer = cot_answer(tok)
    target = torch.tensor(tok(" " + answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    assert len(target) > 400
    encoding, ids = _prompt(model, processor)
    gen = model.generate(
        ids,
        torch.ones_like(ids),
        encoding,
        max_new_tokens=len(target) + 8,
        logits_processor=LogitsProcessorList([Force(target)]),
    )
    assert gen.sequences[0, : len(target)].tolist() == target.tolist()
    assert not bool(gen.truncated[0]) and gen.seg_hidden[0].shape == (1, model.lvlm_adapter.hidden_size(model.lvlm))
    assert gen.image_hidden.shape[1] == _image_tokens(model, encoding)
    text = tok.decode(gen.sequences[0], skip_special_tokens=False)
    assert parse_diagnosis_line(text.replace(tok.eos_token, "").replace(tok.pad_token, "")) == "polyp"
    assert text.count("[SEG]") == 1
    seg = model.segment_generation(gen, encoding)[0]
    assert tuple(seg.masks[0].shape) == (280, 410) and seg.region.shape == (1, 16, 16)


def test_test_time_scaling_m_by_n(shrunk):
    name, model, processor = shrunk
    tok = processor.tokenizer
    target = torch.tensor(
        tok(" It is [SEG].\nDiagnosis: polyp.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    )
    encoding, ids = _prompt(model, processor)
    m, n = 2, 3
    gen = model.generate(
        ids,
        torch.ones_like(ids),
        encoding,
        max_new_tokens=len(target) + 4,
        do_sample=True,
        num_return_sequences=m,
        share_prefill=True,
        logits_processor=LogitsProcessorList([Force(target)]),
    )
    assert [h.shape[0] for h in gen.seg_hidden] == [1] * m
    cands = candidate_masks(model, encoding, gen, n, seed=0)
    assert cands.masks.shape == (m * n, 280, 410) and sorted(set(cands.perturbation)) == list(range(n))
    mask, chosen = select("consensus", cands.masks, pred_iou=cands.pred_iou)
    assert mask.shape == (280, 410) and 0 <= chosen < m * n


def test_save_load_gives_identical_outputs(shrunk, tmp_path):
    name, model, processor = shrunk
    model.eval()
    batch = _batch(model, processor, [(200, 330)], ["It is [SEG].\nDiagnosis: polyp."], seed=3)
    with torch.no_grad():
        before = model(**batch)
    checkpoint.save(model, processor, tmp_path / "c")
    saved = json.loads((tmp_path / "c" / "sam" / "preprocessor_config.json").read_text())
    assert saved["do_normalize"] is (name != "llava-med+medsam")
    if is_sam2(name):  # Sam2ImageProcessor's keys: a square resize, no padding
        assert saved["size"] == {"height": 1024, "width": 1024} and "pad_size" not in saved
    else:
        assert saved["size"] == {"longest_edge": 1024} and saved["pad_size"] == {"height": 1024, "width": 1024}
    loaded, proc2 = checkpoint.load(tmp_path / "c")
    assert loaded.sam_frame == model.sam_frame and loaded.max_length == model.max_length
    batch2 = _batch(loaded, proc2, [(200, 330)], ["It is [SEG].\nDiagnosis: polyp."], seed=3)
    assert torch.equal(batch2["input_ids"], batch["input_ids"])
    assert torch.equal(batch2["sam_pixel_values"], batch["sam_pixel_values"])
    with torch.no_grad():
        after = loaded(**batch2)
    torch.testing.assert_close(after.logits, before.logits, atol=0, rtol=0)
    torch.testing.assert_close(after.masks[0], before.masks[0], atol=0, rtol=0)
