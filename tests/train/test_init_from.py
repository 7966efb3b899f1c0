"""``model.init_from``: a new run (another dataset, step 0, fresh optimizer) starting from a Sim4Seg checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from sim4seg.errors import InputError
from sim4seg.train import task
from sim4seg.train.loop import lr_factor, train
from sim4seg.train.recipe import config_from_dict

TINY = dict(
    image_size=32,
    patch=8,
    vision_hidden=32,
    llm_hidden=64,
    llm_layers=2,
    heads=4,
    sam_image_size=32,
    sam_patch=8,
    sam_hidden=32,
)


def recipe(out, manifest, **model):
    return config_from_dict(
        {
            "model": {"preset": "tiny", "max_length": 128, "tiny": TINY, **model},
            "data": {"manifest": str(manifest), "val_split": None},
            "optim": {"batch_size": 2, "grad_accum": 1, "lr": 1e-3, "warmup_steps": 1},
            "train": {"output_dir": str(out), "max_steps": 2, "progress": False, "log_every": 1, "validate": False},
        }
    )


def test_a_new_run_starts_from_the_checkpoints_weights_at_step_0(synth_m3ds, tmp_path, monkeypatch):
    from sim4seg.data.synthetic import synthesize
    from sim4seg.model import checkpoint

    first = train(
        recipe(
            tmp_path / "first",
            synth_m3ds,
            trainable={"lora": False, "llm": True, "vision_tower": True, "sam_encoder": True},
        )
    )
    # the dry run reads the checkpoint's configs and tokenizer: meta device, text measured
    from sim4seg.train import dryrun

    dry = dryrun.dry_run(recipe(tmp_path / "dry", synth_m3ds, init_from=str(first.final_dir)), samples=2)
    assert dry.meta and "model.init_from" in dry.model_source and all(x.answer for x in dry.lengths)
    other = tmp_path / "other-m3ds"
    synthesize(other, 24, seed=11, subsets=["busi", "kvasir_seg"], size_range=(40, 64))

    built = {}
    orig = task.build_model

    def spy(config):
        model, processor = orig(config)
        built["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        built["trainable"] = {k for k, p in model.named_parameters() if p.requires_grad}
        return model, processor

    monkeypatch.setattr(task, "build_model", spy)
    # the recipe's trainable policy applies: LoRA on the LLM now, the encoders frozen
    second = train(
        recipe(
            tmp_path / "second",
            other,
            init_from=str(first.final_dir),
            trainable={"lora": True, "llm": False},
            rvls2m={"k": 12},
        )
    )
    want, _ = checkpoint.load(first.final_dir)
    got = {k.replace(".base_layer.", "."): v for k, v in built["state"].items() if "lora_" not in k}
    assert got.keys() == want.state_dict().keys()
    for k, v in want.state_dict().items():
        assert torch.equal(got[k], v), k
    # a fresh LoRA (B = 0: the same function), and what trains is the recipe's
    assert any("lora_" in k for k in built["trainable"])
    assert not any("vision_tower" in k or "sam.vision_encoder" in k for k in built["trainable"])
    # a new run: step 1 is the first step, with the schedule's first learning rate
    rows = [json.loads(line) for line in (tmp_path / "second" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and second.state.global_step == 2
    assert rows[0]["lr"] == pytest.approx(1e-3 * lr_factor(0, warmup=1, total=2, schedule="linear", min_ratio=0.0))
    final, _ = checkpoint.load(second.final_dir)
    assert final.config.rvls2m.k == 12  # the recipe's config is saved with it


def test_init_from_a_directory_that_is_no_checkpoint_is_a_clear_error(synth_m3ds, tmp_path):
    with pytest.raises(InputError, match="not a Sim4Seg checkpoint"):
        train(recipe(tmp_path / "run", synth_m3ds, init_from=str(tmp_path)))
