"""Qwen2.5-VL and Qwen3-VL on their shrunk builds: dynamic grids, M-RoPE positions (and Qwen3-VL's
deepstack features) matching transformers' own, the processor without torchvision, and clear errors
for grids that do not fit their tokens or processors that do not fit the model."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from sim4seg.data.dataset import Collator, ExampleEncoder, stack_images
from sim4seg.errors import InputError
from sim4seg.infer.predictor import Predictor
from sim4seg.infer.tts import TTSConfig
from sim4seg.model import checkpoint
from sim4seg.model.backbones import qwen
from sim4seg.model.presets import set_max_pixels
from sim4seg.model.shrink import build_shrunk

PRESET = "qwen2.5-vl-7b+sam-vit-h"
PRESET3 = "qwen3-vl-8b+sam-vit-h"
QUERY = "Segment the polyp in this endoscopy image."


@functools.cache
def _build(name):
    torch.set_num_threads(1)
    model, processor = build_shrunk(name, seed=0)
    return model.eval(), processor


@pytest.fixture(scope="module")
def shrunk():
    """Qwen2.5-VL (the grids below are its 28-px ones)."""
    return _build(PRESET)


@pytest.fixture(scope="module", params=[PRESET, PRESET3])
def each(request):
    """Both generations: Qwen2.5-VL and Qwen3-VL (deepstack)."""
    return _build(request.param)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(model, processor, sizes):
    enc = ExampleEncoder.for_model(model, processor)
    return enc, model.encode_image(
        **stack_images([enc.image_inputs(_image(h, w, i)) for i, (h, w) in enumerate(sizes)])
    )


class Force(LogitsProcessor):
    def __init__(self, target):
        self.target, self.start = target, None

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.target[min(input_ids.shape[1] - self.start, len(self.target) - 1)]] = 0.0
        return forced


def test_images_of_different_aspect_get_their_own_grids(shrunk):
    model, processor = shrunk
    _, encoding = _encode(model, processor, [(230, 370), (300, 180)])
    # smart_resize to multiples of 28 px (230x370 → 224x364, 300x180 → 308x168), one token per 28x28
    assert encoding.token_grids.tolist() == [[8, 13], [11, 6]]
    assert encoding.lvlm_features.shape[:2] == (2, 8 * 13)
    assert float(encoding.lvlm_features[1, 66:].abs().sum()) == 0.0  # padded after the second image's 66
    assert encoding.token_boxes.tolist() == [[0, 0, 370, 230], [0, 0, 180, 300]]


def test_the_answer_follows_qwens_assistant_turn_without_a_space(shrunk):
    """``<|im_start|>assistant\n`` then the answer, as Qwen's own chat format (LLaVA's ``ASSISTANT:`` takes a space)."""
    model, processor = shrunk
    enc = ExampleEncoder.for_model(model, processor)
    item = enc.encode(_image(64, 96), "Segment the polyp.", "It is [SEG].\nDiagnosis: polyp.", None)
    text = processor.tokenizer.decode(item["input_ids"], skip_special_tokens=False)
    assert "<|im_start|>assistant\nIt is [SEG]." in text


def test_rvls2m_region_maps_each_grid_back_to_its_image(shrunk):
    """A single "hot" token per image (different grids in one call): the top cell lies over that token's pixels."""
    model, processor = shrunk
    _, encoding = _encode(model, processor, [(230, 370), (300, 180)])
    d = 8
    seg = torch.zeros(2, d)
    seg[:, 0] = 1.0
    image = torch.zeros(2, encoding.lvlm_features.shape[1], d)
    hot = [(5, 2), (1, 4)]  # (row, column) in each image's own grid
    for i, ((r, c), (_, w_p)) in enumerate(zip(hot, encoding.token_grids.tolist())):
        image[i, r * w_p + c, 0] = 10.0
    scores, region = model.region(
        image, seg, encoding.image_sizes, encoding.token_boxes, encoding.token_grids, tau="topk", k=1
    )
    for i, ((r, c), (h_p, w_p)) in enumerate(zip(hot, encoding.token_grids.tolist())):
        h, w = encoding.image_sizes[i].tolist()
        gy, gx = divmod(int(region[i].flatten().float().argmax()), 16)
        cell = (gx * w / 16, gy * h / 16, (gx + 1) * w / 16, (gy + 1) * h / 16)
        token = (c * w / w_p, r * h / h_p, (c + 1) * w / w_p, (r + 1) * h / h_p)
        assert cell[0] < token[2] and token[0] < cell[2] and cell[1] < token[3] and token[1] < cell[3], (i, cell, token)
    with pytest.raises(ValueError, match="token grid differs per image"):
        model.region(image, seg, encoding.image_sizes, encoding.token_boxes)


def test_forward_matches_transformers_own_qwen_forward(each):
    """Our inputs-embeds path with our M-RoPE positions gives Qwen's own logits (its get_rope_index, its
    image-feature scatter, Qwen3-VL's deepstack), for a right-padded batch of two different grids."""
    model, processor = each
    enc = ExampleEncoder.for_model(model, processor)
    items = [enc.encode(_image(h, w, i), QUERY, "It is [SEG].") for i, (h, w) in enumerate([(230, 370), (300, 180)])]
    batch = Collator(processor.tokenizer.pad_token_id)(items)
    with torch.no_grad():
        ours = model(**batch).logits
        ids = batch["input_ids"]
        theirs = model.lvlm(
            input_ids=ids,
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            image_grid_thw=batch["image_grid_thw"],
            mm_token_type_ids=(ids == model.image_token_id).int(),
        ).logits
    keep = batch["attention_mask"].bool()
    torch.testing.assert_close(ours[keep], theirs[keep], atol=1e-5, rtol=1e-5)
    encoding = model.encode_image(**stack_images(items))
    pos = model.position_ids(ids, batch["attention_mask"], encoding)
    assert pos.shape == (3, 2, ids.shape[1])
    img = ids[0] == model.image_token_id
    h_p, w_p = encoding.token_grids[0].tolist()
    assert pos[1, 0, img].unique().numel() == h_p and pos[2, 0, img].unique().numel() == w_p  # rows, columns
    if model.lvlm.config.model_type == "qwen3_vl":  # the deepstack features are in, and they matter
        assert encoding.deepstack.shape[:3] == (2, 3, h_p * w_p)
        encoding.deepstack = None
        with torch.no_grad():
            without = model(**{**batch, "encoding": encoding}).logits
        assert not torch.allclose(without[keep], theirs[keep], atol=1e-3)
    else:
        assert encoding.deepstack is None


@pytest.mark.parametrize("share_prefill", [False, True])
def test_generation_states_equal_the_teacher_forced_ones(each, share_prefill):
    """The [SEG] state generate() finds (M-RoPE positions extended step by step, with or without the shared
    prefill; Qwen3-VL's deepstack added in the prefill) is the one a teacher-forced forward computes."""
    model, processor = each
    tok = processor.tokenizer
    target = torch.tensor(tok(" It is [SEG].\nDiagnosis: polyp.", add_special_tokens=False)["input_ids"])
    target = torch.cat([target, torch.tensor([tok.eos_token_id])])
    enc, encoding = _encode(model, processor, [(280, 410)])
    ids = enc.prompt_ids(QUERY, int(encoding.token_grids[0].prod()))[None]
    m = 2 if share_prefill else 1
    gen = model.generate(
        ids,
        torch.ones_like(ids),
        encoding,
        max_new_tokens=len(target) + 2,
        num_return_sequences=m,
        share_prefill=share_prefill,
        do_sample=share_prefill,
        logits_processor=LogitsProcessorList([Force(target)]),
    )
    full = torch.cat([ids, target[None]], 1)
    with torch.no_grad():
        hidden = model._hidden(model.embed(full, encoding), torch.ones_like(full), full, encoding)
    seg_at = ids.shape[1] + int((target == model.seg_token_id).nonzero()[0]) - 1
    for j in range(m):
        torch.testing.assert_close(gen.seg_hidden[j][0], hidden[0, seg_at], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gen.image_hidden[0], model.image_hidden(hidden, full)[0], atol=1e-4, rtol=1e-4)


def test_predictor_single_and_batched_agree_on_images_of_different_grids(each):
    model, processor = each
    images = [_image(230, 370, 0), _image(300, 180, 1)]
    p = Predictor(model, processor, TTSConfig(max_new_tokens=6))
    _, batched = p.predict_batch(images, [QUERY, QUERY])
    for image, b in zip(images, batched):
        p.set_image(image)
        single = p.predict(QUERY)
        assert single.answer == b.answer and single.mask.shape == b.mask.shape == image.shape[:2]
        assert np.array_equal(single.mask, b.mask)


def test_mismatched_grid_and_tokens_are_refused_with_the_cause(shrunk):
    model, processor = shrunk
    enc, encoding = _encode(model, processor, [(230, 370)])
    ids = enc.prompt_ids(QUERY, 8 * 13 - 4)[None]  # four image tokens short of its 8x13 grid
    with pytest.raises(ValueError, match=r"token grid 8x13 = 104 tokens, but its prompt holds 100 image tokens"):
        model.embed(ids, encoding)
    x = enc.image_inputs(_image(230, 370))
    with pytest.raises(ValueError, match=r"do not hold the 448 patches image_grid_thw \[\[1, 16, 28\]\]"):
        model.encode_image(
            x["pixel_values"],
            x["sam_pixel_values"][None],
            x["image_size"][None],
            x["token_box"][None],
            torch.tensor([[1, 16, 28]]),
        )
    with pytest.raises(ValueError, match="needs its image_grid_thw"):
        model.encode_image(x["pixel_values"], x["sam_pixel_values"][None], x["image_size"][None], x["token_box"][None])


def test_a_processor_whose_grid_contradicts_its_prompt_is_an_input_error(shrunk):
    """The encoder checks the processor's own output: a grid for another image than the expanded prompt's."""
    model, processor = shrunk

    class OtherGrid:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, **kw):
            out = self.inner(**kw)
            out["image_grid_thw"] = torch.tensor([[1, 20, 20]])
            return out

    enc = ExampleEncoder.for_model(model, OtherGrid(processor))
    with pytest.raises(
        InputError, match=r"x\.png.*image_grid_thw \[\[1, 20, 20\]\] \(merge 2\) does not match the 104"
    ):
        enc.encode(_image(230, 370), QUERY, "It is [SEG].", name="x.png")


def test_saved_processor_loads_without_torchvision_and_bad_ones_are_named(shrunk, tmp_path):
    model, processor = shrunk
    checkpoint.save(model, processor, tmp_path / "c")
    loaded, proc = checkpoint.load(tmp_path / "c")
    assert isinstance(proc, qwen.processor_class()) and proc.image_processor.size == processor.image_processor.size
    assert loaded.image_tokens == 1280 and loaded.max_length == 1920
    cfg_path = tmp_path / "c" / "processor" / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["image_processor"]["patch_size"] = 16
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"processor does not fit the LVLM: its image processor's patch_size is 16"):
        checkpoint.load(tmp_path / "c")
    import shutil

    shutil.rmtree(tmp_path / "c" / "processor")
    with pytest.raises(InputError, match=r"processor/ not found"):
        checkpoint.load(tmp_path / "c")


def test_max_pixels_sets_the_image_budget(shrunk):
    model, processor = shrunk
    v = qwen.VARIANTS["qwen2.5-vl-7b"]
    assert qwen.published_tokens(v) == 16384 and v.image_tokens == 1280  # 12845056 px published; 1003520 here
    proc = qwen.processor_class()(
        image_processor=qwen.image_processor(v), tokenizer=processor.tokenizer, chat_template=v.chat_template
    )
    set_max_pixels(proc, 256 * 28 * 28)
    assert model.lvlm_adapter.image_tokens(model.lvlm, proc) == 256
    out = proc.image_processor(images=_image(2304, 2880), return_tensors="pt")
    assert int(out["image_grid_thw"].prod()) // 4 <= 256


def test_a_presets_pixel_budget_reaches_only_a_dynamic_resolution_processor(shrunk, tmp_path):
    from sim4seg.model.backbones import llava
    from sim4seg.model.presets import load_lvlm_processor

    model, processor = shrunk
    processor.save_pretrained(tmp_path / "qwen")
    capped = load_lvlm_processor(model.lvlm_adapter, tmp_path / "qwen", 256 * 28 * 28)
    assert model.lvlm_adapter.image_tokens(model.lvlm, capped) == 256
    clip = llava.image_processor(llava.VARIANTS["llava-1.5"])
    clip.save_pretrained(tmp_path / "llava")  # an LLaVA checkpoint's processor, e.g. given as model.lvlm
    fixed = load_lvlm_processor(llava.LlavaAdapter(), tmp_path / "llava", 256 * 28 * 28)
    assert dict(fixed.size) == dict(clip.size)  # left as published: no longest_edge on a CLIP processor


def test_shrunk_build_trains_from_its_backbones_and_predicts_from_the_cli(synth_m3ds, tmp_path, capsys):
    """``model build --shrink`` → a 1-step training run from its hub-format backbones (the processor loaded
    without torchvision) → ``predict`` on the trained checkpoint."""
    from pathlib import Path

    from sim4seg.apps.cli import main
    from sim4seg.data.io import write_image

    built = tmp_path / "ckpt"
    assert main(["model", "build", PRESET, "--shrink", "--out", str(built)]) == 0
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    overrides = [
        f"model.preset={PRESET}",
        f"model.lvlm={built / 'hub' / 'lvlm'}",
        f"model.sam={built / 'hub' / 'sam'}",
        "model.max_length=null",
        f"data.manifest={synth_m3ds}",
        f"train.output_dir={out}",
        "optim.batch_size=2",
        "train.max_steps=1",
        "train.progress=false",
        "data.val_split=null",
    ]
    assert main(["train", "--config", str(repo / "configs" / "tiny-cpu.yaml"), "--set", *overrides]) == 0
    assert "trained 1 step(s)" in capsys.readouterr().out
    model, _ = checkpoint.load(out / "final")
    assert model.image_tokens == 1280 and model.max_length == 1280 + 640 and model.config.token_grid is None
    image = tmp_path / "x.png"
    write_image(image, _image(230, 370))
    args = ["predict", "--checkpoint", str(out / "final"), "--out", str(tmp_path / "p"), "--image", str(image)]
    assert main([*args, "--query", QUERY, "--max-new-tokens", "4"]) == 0
    rec = json.loads(next((tmp_path / "p").glob("*.json")).read_text())
    assert "answer" in rec and rec["mask_area"] >= 0
    capsys.readouterr()
    assert main(["model", "info", str(out / "final")]) == 0
    assert "vision qwen2_5_vl_vision, dynamic resolution (2x2 merge), patch 14" in capsys.readouterr().out


HUB_PREPROCESSORS = {  # the hub checkpoints' preprocessor_config.json (BACKBONES.md §7, §8)
    PRESET: (
        {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "image_processor_type": "Qwen2VLImageProcessor"},
        (qwen.CLIP_MEAN, qwen.CLIP_STD),
        "qwen2.5-vl-7b",
    ),
    PRESET3: (
        {
            "size": {"shortest_edge": 65536, "longest_edge": 16777216},
            "patch_size": 16,
            "image_processor_type": "Qwen2VLImageProcessorFast",
        },
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        "qwen3-vl-8b",
    ),
}


def test_the_hubs_processor_layout_loads_without_torchvision_and_takes_the_presets_budget(each, tmp_path):
    """The hub checkpoints' files: preprocessor_config.json naming a torchvision image processor, a video
    preprocessor config, chat_template.json — loaded with the PIL image processor, no video side."""
    model, processor = each
    name = PRESET if model.lvlm.config.model_type == "qwen2_5_vl" else PRESET3
    pre, (mean, std), variant = HUB_PREPROCESSORS[name]
    v = qwen.VARIANTS[variant]
    processor.tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    common = {"temporal_patch_size": 2, "merge_size": 2, "image_mean": list(mean), "image_std": list(std)}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**pre, **common}))
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps({"video_processor_type": "X"}))
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": v.chat_template}))
    proc = model.lvlm_adapter.load_processor(tmp_path)
    assert type(proc.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert model.lvlm_adapter.image_tokens(model.lvlm, proc) == 16384  # the published budget
    model.lvlm_adapter.check_processor(model.lvlm, proc)
    set_max_pixels(proc, v.max_pixels)  # what the preset does on load
    assert model.lvlm_adapter.image_tokens(model.lvlm, proc) == 1280
    enc = ExampleEncoder(proc, sam_size=model.sam_size, max_length=4000, sam_frame=model.sam_frame)
    assert enc.prompt(QUERY) == ExampleEncoder.for_model(model, processor).prompt(QUERY)
    x, y = enc.image_inputs(_image(230, 370)), ExampleEncoder.for_model(model, processor).image_inputs(_image(230, 370))
    assert torch.equal(x["image_grid_thw"], y["image_grid_thw"]) and torch.equal(x["pixel_values"], y["pixel_values"])
