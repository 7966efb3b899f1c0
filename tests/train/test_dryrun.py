"""``sim4seg train --dry-run``: data checked, model on the meta device, lengths, parameters, memory, steps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sim4seg.model.presets import PRESETS
from sim4seg.train import dryrun
from sim4seg.train.recipe import load_config

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_of_the_tiny_recipe_encodes_samples_and_trains_nothing(synth_m3ds, tmp_path, capsys):
    from sim4seg.apps.cli import main
    from sim4seg.data.schema import read_split

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(REPO / "configs" / "tiny-cpu.yaml"),
                "--dry-run",
                "--dry-run-samples",
                "3",
                "--set",
                f"data.manifest={synth_m3ds}",
                f"train.output_dir={out}",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert not out.exists()  # nothing trained, nothing written
    assert "token lengths of the first 3 training sample(s) (max_length 256)" in text
    first = read_split(synth_m3ds, "train")[:3]
    assert all(s.id in text for s in first) and "longest" in text and "0 of 3 over" in text
    for part in ("LVLM vision tower", "LLM lm_head", "ϕ (projection)", "SAM mask decoder"):
        assert part in text
    assert "ESTIMATE" in text and "ZeRO-2      8" in text and "ZeRO-3      4" in text
    n = len(read_split(synth_m3ds, "train"))
    assert f"1 GPU: {math.ceil(n / 8)}," in text  # tiny-cpu: batch 8, grad_accum 1


def test_token_lengths_are_the_encoders(synth_m3ds):
    cfg = load_config(REPO / "configs" / "tiny-cpu.yaml", [f"data.manifest={synth_m3ds}"])
    r = dryrun.dry_run(cfg, samples=2)
    from sim4seg.data.dataset import ExampleEncoder, M3DSDataset
    from sim4seg.train.task import build_model

    model, processor = build_model(cfg)
    ds = M3DSDataset(synth_m3ds, "train", ExampleEncoder.for_model(model, processor))
    for length, i in zip(r.lengths, range(2)):
        item = ds[i]
        assert length.total == len(item["input_ids"]) and length.answer == int((item["labels"] != -100).sum())
        assert length.image == int((item["input_ids"] == processor.image_token_id).sum())
    assert not r.meta and r.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_dry_run_of_the_papers_7b_recipe_on_the_meta_device(synth_m3ds):
    cfg = load_config(
        REPO / "configs" / "sim4seg-7b.yaml", [f"data.manifest={synth_m3ds}", "data.answer_format=diagnosis"]
    )
    model, processor, source, meta, _ = dryrun.build_meta_model(cfg)
    assert meta and all(p.is_meta for p in model.parameters())  # nothing allocated
    assert "published" in source
    r = dryrun.dry_run(cfg, samples=2)
    assert [s.image for s in r.lengths] == [256, 256] and r.text_note  # LISA's CLIP-224: 16×16 tokens
    parts = {p.name: p for p in r.parts}
    assert parts["LLM (decoder)"].trainable == 0 and parts["LLM LoRA"].trainable == 32 * 2 * 2 * 8 * 4096
    assert parts["SAM image encoder"].trainable == 0 and parts["LVLM vision tower"].trainable == 0
    assert parts["ϕ (projection)"].trainable == 4096 * 4096 + 4096 + 4096 * 256 + 256
    assert parts["LLM lm_head"].trainable == parts["LLM embeddings"].trainable == 32005 * 4096
    assert r.total == sum(p.numel() for p in model.parameters())
    # the per-GPU table follows the documented formulas
    w, g, o = r.memory["weights"], r.memory["gradients"], r.memory["optimizer"]
    assert w == 4 * r.total and g == 4 * r.trainable and o == 8 * r.trainable  # DDP: fp32 as loaded
    assert r.per_gpu[("DDP", 8)][1] == pytest.approx(w + g + o + r.memory["activations_ckpt"])
    z = r.memory_zero  # DeepSpeed bf16: bf16 weights, fp32 master
    assert z["weights"] == 2 * r.total and z["gradients"] == 2 * r.trainable and z["optimizer"] == 12 * r.trainable
    assert r.per_gpu[("ZeRO-2", 8)][1] == pytest.approx(
        z["weights"] + (z["gradients"] + z["optimizer"]) / 8 + z["activations_ckpt"]
    )
    assert r.per_gpu[("ZeRO-3", 8)][0] < r.per_gpu[("ZeRO-2", 8)][0] < r.per_gpu[("DDP", 8)][0]
    assert r.per_gpu[("ZeRO-2", 1)] == r.per_gpu[("ZeRO-3", 1)]


def test_dry_run_of_a_sam2_preset_counts_sam2s_parts(synth_m3ds):
    """The SAM2 pairing's accounting goes through the segmenter adapter's parts (Sam2Model's own module names)."""
    from transformers import Sam2Model

    from sim4seg.model import published

    preset = "llava-1.5-7b+sam2.1-hiera-large"
    cfg = load_config(
        REPO / "configs" / "sim4seg-7b.yaml",
        [f"data.manifest={synth_m3ds}", "data.answer_format=diagnosis", f"model.preset={preset}"],
    )
    r = dryrun.dry_run(cfg, samples=1)
    with torch.device("meta"):
        sam = Sam2Model(published.sam2_1_hiera_large())
    parts = {p.name: p for p in r.parts}
    assert parts["SAM image encoder"].total == sum(p.numel() for p in sam.vision_encoder.parameters())
    assert parts["SAM image encoder"].trainable == 0  # the recipe freezes it
    decoder = sum(p.numel() for p in sam.mask_decoder.parameters())
    assert parts["SAM mask decoder"].total == parts["SAM mask decoder"].trainable == decoder
    assert parts["other"].total == sam.no_memory_embedding.numel() == 256  # in no part: stays as loaded
    assert [s.image for s in r.lengths] == [576]  # LLaVA-1.5's 24 × 24 tokens
    backbones = 7_063_427_072 + sum(p.numel() for p in sam.parameters())  # LLaVA-1.5-7B + the Sam2Model
    assert r.total == backbones + parts["ϕ (projection)"].total + parts["LLM LoRA"].total


def test_dry_run_of_the_qwen_preset_counts_its_parts_and_its_dynamic_image_budget(synth_m3ds):
    cfg = load_config(
        REPO / "configs" / "sim4seg-7b.yaml",
        [f"data.manifest={synth_m3ds}", "data.answer_format=diagnosis", "model.preset=qwen2.5-vl-7b+sam-vit-h"],
    )
    r = dryrun.dry_run(cfg, samples=2)
    assert r.max_length == 1280 + 640  # the most one image takes under the preset's max_pixels, plus text
    assert [s.image for s in r.lengths] == [1280, 1280] and r.text_note
    parts = {p.name: p for p in r.parts}
    assert parts["LVLM projector"].total == 44_574_464  # the 2×2 patch merger, counted apart from its ViT
    assert parts["LVLM vision tower"].total == 676_550_144 - 44_574_464
    assert parts["LLM LoRA"].trainable == 28 * 8 * ((3584 + 3584) + (3584 + 4 * 128))  # q, v (4 KV heads)
    assert parts["LVLM vision tower"].trainable == 0 and parts["LLM (decoder)"].trainable == 0
    assert r.total == 8_292_166_656 + 641_090_864 + parts["ϕ (projection)"].total + parts["LLM LoRA"].total
    text = (2 * 1920 * 3584) * 28  # activations scale with the per-image token budget (s = 1920)
    assert r.memory["activations_ckpt"] == pytest.approx(
        text * 2 + 34 * 1920 * 2 * 3584 * 1 + 2 * 1920 * 152064 * (4 + 2), rel=1e-9
    )


def test_dry_run_of_the_qwen3_preset_uses_its_32_px_tokens(synth_m3ds):
    cfg = load_config(
        REPO / "configs" / "sim4seg-7b.yaml",
        [f"data.manifest={synth_m3ds}", "data.answer_format=diagnosis", "model.preset=qwen3-vl-8b+sam-vit-h"],
    )
    r = dryrun.dry_run(cfg, samples=1)
    assert r.max_length == 1280 + 640 and [s.image for s in r.lengths] == [1280]
    parts = {p.name: p for p in r.parts}
    assert parts["LVLM projector"].total == 40_119_040  # the final merger; the deepstack mergers are the ViT's
    assert parts["LLM LoRA"].trainable == 36 * 8 * ((4096 + 32 * 128) + (4096 + 8 * 128))  # q, v


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_has_its_dry_run_offline(synth_m3ds, preset):
    """The paper's recipe on each preset: built on the meta device from the published configs (nothing is
    reachable here), every parameter in one part, the memory table filled for every strategy and GPU count."""
    from transformers import AutoModelForImageTextToText

    from sim4seg.model import published
    from sim4seg.model.backbones import segmenter_adapter

    cfg = load_config(
        REPO / "configs" / "sim4seg-7b.yaml",
        [f"data.manifest={synth_m3ds}", "data.answer_format=diagnosis", f"model.preset={preset}"],
    )
    r = dryrun.dry_run(cfg, samples=1)
    assert r.meta and "published" in r.model_source
    lvlm_cfg, sam_cfg = (f() for f in published.PUBLISHED[preset])
    with torch.device("meta"):
        lvlm = AutoModelForImageTextToText.from_config(lvlm_cfg)
        sam = segmenter_adapter(sam_cfg).from_config(sam_cfg)
    backbones = sum(p.numel() for m in (lvlm, sam) for p in m.parameters())
    parts = {p.name: p for p in r.parts}
    added = parts["ϕ (projection)"].total + parts["LLM LoRA"].total
    seg_rows = 4096 if preset == "lisa-7b" else lvlm_cfg.text_config.hidden_size  # LISA's vocab has no <image>
    assert r.total - added - backbones in (0, seg_rows, 2 * seg_rows)  # + the [SEG] rows when the vocab grows
    assert 0 < r.trainable < r.total and parts["LLM (decoder)"].trainable == 0
    assert {k for k in r.per_gpu} == {(s, n) for s in dryrun.STRATEGIES for n in dryrun.GPUS}


def test_a_segmenter_no_adapter_knows_is_an_error_not_an_unreachable_config(synth_m3ds, tmp_path):
    from transformers import ViTConfig

    from sim4seg.errors import InputError
    from sim4seg.model import published

    published.llava_1_5_7b().save_pretrained(tmp_path / "lvlm")
    ViTConfig().save_pretrained(tmp_path / "sam")
    cfg = load_config(
        REPO / "configs" / "sim4seg-7b.yaml",
        [
            f"data.manifest={synth_m3ds}",
            "data.answer_format=diagnosis",
            "model.preset=llava-1.5-7b+sam-vit-h",
            f"model.lvlm={tmp_path / 'lvlm'}",
            f"model.sam={tmp_path / 'sam'}",
        ],
    )
    with pytest.raises(InputError, match="unsupported segmenter 'vit'; supported: SAM"):
        dryrun.dry_run(cfg, samples=1)


def test_published_configs_match_the_checkpoints():
    from transformers import LlavaForConditionalGeneration, SamModel

    from sim4seg.model import published

    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(published.llava_1_5_7b())
        sam = SamModel(published.sam_vit_h())
    assert sum(p.numel() for p in llava.parameters()) == 7_063_427_072  # llava-hf/llava-1.5-7b-hf: 7.06B
    assert sum(p.numel() for p in sam.parameters()) == 641_090_864  # facebook/sam-vit-huge: 641M
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        qwen = Qwen2_5_VLForConditionalGeneration(published.qwen2_5_vl_7b())
    assert sum(p.numel() for p in qwen.parameters()) == 8_292_166_656  # Qwen/Qwen2.5-VL-7B-Instruct: 8.29B
    from transformers import Qwen3VLForConditionalGeneration

    with torch.device("meta"):
        qwen3 = Qwen3VLForConditionalGeneration(published.qwen3_vl_8b())
    assert sum(p.numel() for p in qwen3.parameters()) == 8_767_123_696  # Qwen/Qwen3-VL-8B-Instruct: 8.77B
    v = published.llava_1_5_7b().vision_config
    assert (v.image_size // v.patch_size) ** 2 == published.llava_1_5_7b().image_seq_length == 576
    lisa = published.lisa_7b()
    assert (lisa.vision_config.image_size // lisa.vision_config.patch_size) ** 2 == lisa.image_seq_length == 256
    with torch.device("meta"):
        med = LlavaForConditionalGeneration(published.llava_med_7b())
        medsam = SamModel(published.medsam_vit_b())
    # Mistral-7B's 7.24B (vocab 32000) + CLIP ViT-L/14-336 and the projector of LLaVA-1.5 (same shapes)
    vision = sum(p.numel() for p in llava.model.vision_tower.parameters()) + sum(
        p.numel() for p in llava.model.multi_modal_projector.parameters()
    )
    mistral = sum(p.numel() for p in med.model.language_model.parameters()) + med.lm_head.weight.numel()
    assert mistral - 2 * 4096 == 7_241_732_096 and sum(p.numel() for p in med.parameters()) == mistral + vision
    assert sum(p.numel() for p in medsam.parameters()) == 93_735_728  # SAM ViT-B (facebook/sam-vit-base): 93.7M


def test_memory_formulas_and_steps():
    parts = [dryrun.Part("a", 1000, 100)]
    t = dryrun.memory_terms(parts, weight_bytes=2, hidden=8, layers=2, vocab=10, seq=4, batch=1, bf16=True)
    assert t["weights"] == 2000 and t["gradients"] == 200 and t["optimizer"] == 100 * 12
    assert t["activations"] == 2 * 34 * 4 * 8 + 4 * 10 * 6
    assert t["activations_ckpt"] == 2 * 2 * 4 * 8 + 34 * 4 * 8 + 4 * 10 * 6
    assert dryrun.steps_per_epoch(35, 2, 10, 1) == 2 and dryrun.steps_per_epoch(35, 2, 10, 8) == 1
    with pytest.raises(ValueError):
        dryrun.per_gpu(t, "FSDP", 2)
