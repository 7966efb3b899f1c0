"""Backbone adapters: the CLI's shrunk build loaded by every command's loader, and bad checkpoints refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sim4seg.data.transforms import SAM_MEAN, SAM_STD, SegmenterFrame, sam_frame
from sim4seg.errors import InputError
from sim4seg.model import checkpoint
from sim4seg.model.backbones import lvlm_adapter, segmenter_adapter
from sim4seg.model.backbones.sam import MEDSAM_FRAME

REPO = Path(__file__).resolve().parents[2]
PRESET = "llava-1.5-7b+sam-vit-h"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``sim4seg model build PRESET --shrink --out DIR`` run once."""
    from sim4seg.apps.cli import main

    out = tmp_path_factory.mktemp("shrunk") / "ckpt"
    torch.set_num_threads(1)
    assert main(["model", "build", PRESET, "--shrink", "--out", str(out)]) == 0
    return out


def test_segmenter_frames_follow_their_processor_config():
    image = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    sam = SegmenterFrame.from_processor_config(SegmenterFrame().to_processor_config())
    x = sam(image)
    # SAM's published preprocessing equals segment_anything's 0-255 mean / std
    ref = sam_frame(image, 1024)
    torch.testing.assert_close(x, ref, atol=1e-4, rtol=1e-4)
    assert tuple(SAM_MEAN) == pytest.approx([v * 255 for v in sam.image_mean])
    assert tuple(SAM_STD) == pytest.approx([v * 255 for v in sam.image_std])
    # MedSAM's own file: inputs in [0, 1], bicubic — not SAM's normalisation
    med = SegmenterFrame.from_processor_config(
        {
            "do_normalize": False,
            "image_mean": [0, 0, 0],
            "image_std": [1, 1, 1],
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"longest_edge": 1024},
            "pad_size": {"height": 1024, "width": 1024},
        }
    )
    assert med == MEDSAM_FRAME
    from PIL import Image

    want = np.asarray(Image.fromarray(image).resize((1024, 614), Image.BICUBIC), np.float32) / 255
    torch.testing.assert_close(med(image)[:, :614], torch.from_numpy(want).permute(2, 0, 1))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"size": {}}, r"size.longest_edge \(SAM\) or size.height/width \(SAM2\) is missing"),
        ({"size": {"longest_edge": 1024}, "pad_size": {"height": 512, "width": 512}}, "pad_size .* differs"),
        ({"size": {"longest_edge": 1024}, "resample": 9}, "resample 9 is not a PIL filter"),
        (
            {"size": {"longest_edge": 1024}, "image_std": [0, 1, 1]},
            "image_mean and image_std must be 3 numbers, std > 0",
        ),
    ],
)
def test_bad_segmenter_processor_configs(bad, match):
    with pytest.raises(InputError, match=f"x.json: segmenter preprocessing: {match}"):
        SegmenterFrame.from_processor_config(bad, "x.json")


def test_unknown_backbones_list_the_supported_ones():
    with pytest.raises(InputError, match=r"unsupported LVLM 'gpt2'; supported: LLaVA-family \(llava, vipllava\)"):
        lvlm_adapter("gpt2")
    with pytest.raises(
        InputError, match=r"unsupported segmenter 'detr'; supported: SAM \(sam\); SAM2 \(sam2, sam2_video\)$"
    ):
        segmenter_adapter("detr")


def test_shrunk_build_loads_as_a_checkpoint_and_its_backbones_as_a_preset(built):
    model, processor = checkpoint.load(built)
    assert model.image_tokens == 576 and model.config.token_grid == [24, 24] and model.sam_size == 1024
    from sim4seg.model.presets import from_preset

    again, proc2 = from_preset(PRESET, lvlm=str(built / "hub" / "lvlm"), sam=str(built / "hub" / "sam"))
    assert again.image_tokens == 576 and again.sam_frame == model.sam_frame
    assert proc2.tokenizer.chat_template == processor.tokenizer.chat_template
    sd, sd2 = model.state_dict(), again.state_dict()  # the same backbone weights, reached both ways
    for k in (
        "lvlm.model.vision_tower.embeddings.patch_embedding.weight",
        "sam.vision_encoder.patch_embed.projection.weight",
    ):
        assert torch.equal(sd[k], sd2[k]), k


def test_predict_command_on_the_shrunk_build(built, tmp_path, capsys):
    from sim4seg.apps.cli import main
    from sim4seg.data.io import write_image

    image = tmp_path / "x.png"
    write_image(image, np.random.default_rng(0).integers(0, 256, (230, 370, 3), dtype=np.uint8))
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(built),
                "--out",
                str(tmp_path / "out"),
                "--image",
                str(image),
                "--query",
                "Segment the polyp in this endoscopy image.",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    rec = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert "answer" in rec


def _copy(built, tmp_path) -> Path:
    dst = tmp_path / "c"
    shutil.copytree(built, dst, ignore=shutil.ignore_patterns("hub"))
    return dst


def test_missing_or_inconsistent_processor_configs_are_refused(built, tmp_path):
    c = _copy(built, tmp_path)
    (c / "sam" / "preprocessor_config.json").unlink()
    with pytest.raises(InputError, match=r"sam: the segmenter's processor config is missing \(preprocessor_config"):
        checkpoint.load(c)
    json.dump(SegmenterFrame(size=512).to_processor_config(), (c / "sam" / "preprocessor_config.json").open("w"))
    with pytest.raises(
        InputError,
        match="preprocessor_config.json: the segmenter's processor config resizes to 512 px "
        "but its model takes 1024 px",
    ):
        checkpoint.load(c)
    json.dump(SegmenterFrame().to_processor_config(), (c / "sam" / "preprocessor_config.json").open("w"))
    pc = c / "processor" / "processor_config.json"  # transformers 5 keeps the image processor here
    cfg = json.loads(pc.read_text())
    cfg["image_processor"]["crop_size"] = {"height": 224, "width": 224}
    pc.write_text(json.dumps(cfg))
    with pytest.raises(
        InputError,
        match="processor: the processor does not fit the LVLM: its image processor outputs "
        "224x224 px but the vision tower takes 336",
    ):
        checkpoint.load(c)
    shutil.rmtree(c / "processor")
    with pytest.raises(InputError, match=r"the LVLM's processor is missing \(processor/ not found\)"):
        checkpoint.load(c)


def test_train_command_from_the_shrunk_backbones(built, synth_m3ds, tmp_path, capsys):
    """A training recipe takes the shrunk backbones where a real run names hub ids (model.lvlm / model.sam)."""
    from sim4seg.apps.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(REPO / "configs" / "tiny-cpu.yaml"),
                "--set",
                f"model.preset={PRESET}",
                f"model.lvlm={built / 'hub' / 'lvlm'}",
                f"model.sam={built / 'hub' / 'sam'}",
                "model.max_length=null",
                "model.trainable.lora=true",
                "model.trainable.llm=false",
                "model.trainable.vision_tower=false",
                "model.trainable.sam_encoder=false",
                "model.trainable.mm_projector=false",
                "model.trainable.prompt_encoder=false",
                f"data.manifest={synth_m3ds}",
                f"train.output_dir={out}",
                "optim.batch_size=1",
                "train.max_steps=1",
                "train.progress=false",
                "data.val_split=null",
            ]
        )
        == 0
    )
    assert "trained 1 step(s)" in capsys.readouterr().out
    model, _ = checkpoint.load(out / "final")
    assert model.image_tokens == 576 and model.sam_size == 1024 and model.max_length == 576 + 640


def test_rvls2m_takes_a_token_grid_per_item():
    """Dynamic resolution: items with different grids (zero-padded states) score as each alone would."""
    from sim4seg.model import rvls2m

    g = torch.Generator().manual_seed(0)
    grids = [(6, 10), (8, 8), (6, 10)]
    n_max = 64
    emb = torch.zeros(3, n_max, 16)
    for i, (h, w) in enumerate(grids):
        emb[i, : h * w] = torch.randn(h * w, 16, generator=g)
    seg = torch.randn(3, 16, generator=g)
    sizes = torch.tensor([[300, 500], [400, 400], [240, 400]])
    for pool in ("image", "token"):
        grid = 4 if pool == "token" else 16
        got = rvls2m.region_scores(emb, seg, torch.tensor(grids), sizes, grid=grid, pool=pool)
        for i, (h, w) in enumerate(grids):
            alone = rvls2m.region_scores(
                emb[i : i + 1, : h * w], seg[i : i + 1], (h, w), sizes[i : i + 1], grid=grid, pool=pool
            )
            torch.testing.assert_close(got[i : i + 1], alone)
    with pytest.raises(ValueError, match=r"token grid\(s\) \[\(1, \(9, 9\)\)\] do not fit the 64 image-token states"):
        rvls2m.region_scores(emb, seg, [(6, 10), (9, 9), (6, 10)], sizes)


def test_a_token_grid_that_does_not_match_its_tokens_is_refused():
    from sim4seg.data.dataset import Collator, ExampleEncoder
    from sim4seg.model.tiny import build_tiny

    model, processor = build_tiny(seed=0)
    enc = ExampleEncoder.for_model(model, processor)
    items = [enc.encode(np.zeros((40, 60, 3), np.uint8), "Segment it.", "It is [SEG].") for _ in range(2)]
    b = Collator(processor.tokenizer.pad_token_id)(items)
    encoding = model.encode_image(b["pixel_values"], b["sam_pixel_values"], b["image_sizes"], b["token_boxes"])
    h, w = model.config.token_grid
    encoding.token_grids = torch.tensor([[h, w], [h, w]])
    model.embed(b["input_ids"], encoding)  # the grids match: accepted
    encoding.token_grids = torch.tensor([[h, w], [h - 1, w]])
    with pytest.raises(
        ValueError,
        match=rf"image 1: its token grid {h - 1}x{w} = {(h - 1) * w} tokens, but its prompt "
        rf"holds {h * w} image tokens",
    ):
        model.embed(b["input_ids"], encoding)


def test_adding_a_backbone_variant_is_a_variant_plus_a_preset(monkeypatch):
    """The worked example of docs/extending.md, run: a new prompt format is one variant and one preset."""
    from sim4seg.data.dataset import ExampleEncoder
    from sim4seg.model import presets
    from sim4seg.model.backbones import llava
    from sim4seg.model.shrink import build_shrunk

    template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}<|user|>\n"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}<|end|>\n{% else %}<|assistant|>\n{% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    monkeypatch.setitem(
        llava.VARIANTS,
        "my-llava",
        llava.LlavaVariant("my-llava", 336, 14, template, special_tokens=("<|user|>", "<|assistant|>", "<|end|>")),
    )
    monkeypatch.setitem(
        presets.PRESETS,
        "my-llava+medsam",
        presets.Preset(
            "me/my-llava-hf", "flaviagiammarino/medsam-vit-base", "my-llava", "medsam", note="my LLaVA and MedSAM"
        ),
    )
    model, processor = build_shrunk("my-llava+medsam")
    enc = ExampleEncoder.for_model(model, processor)
    ex = enc.encode(np.zeros((50, 80, 3), np.uint8), "Segment it.", "It is [SEG].")
    assert enc.prompt("Segment it.") == "<|user|>\n<image>\nSegment it.<|end|>\n<|assistant|>\n"
    assert int((ex["input_ids"] == model.image_token_id).sum()) == 576
    assert len(processor.tokenizer("<|assistant|>", add_special_tokens=False)["input_ids"]) == 1
    with pytest.raises(
        InputError, match="unknown backbone variant 'nope'; known: llava-1.5, llava-med, lisa, my-llava"
    ):
        monkeypatch.setitem(presets.PRESETS, "x", presets.Preset("a", "b", "nope", "medsam"))
        build_shrunk("x")
