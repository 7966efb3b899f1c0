"""Recipes: every YAML in configs/ validates; unknown keys and bad values fail naming the key and the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sim4seg._config import apply_override
from sim4seg.errors import InputError
from sim4seg.model.config import Sim4SegConfig
from sim4seg.train.recipe import Config, config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))


def test_there_are_recipes():
    assert {p.name for p in RECIPES} >= {"tiny-cpu.yaml", "sim4seg-7b.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_validates_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    cfg.sim4seg_config()  # the model's own config validates too
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_the_7b_recipe_is_the_papers():
    c = load_config(CONFIGS / "sim4seg-7b.yaml")
    assert c.model.preset == "lisa-7b"
    assert (c.optim.lr, c.optim.weight_decay, c.optim.betas) == (3e-4, 0.01, (0.9, 0.95))
    assert (c.optim.batch_size, c.optim.grad_accum, c.optim.epochs) == (2, 10, 4)
    assert c.train.precision == "bf16"
    assert (c.model.loss.txt, c.model.loss.mask, c.model.loss.bce, c.model.loss.dice) == (1.0, 1.0, 2.0, 0.5)
    t = c.model.trainable
    assert (t.lora, t.lora_r, t.lora_alpha, t.lora_targets) == (True, 8, 16, ["q_proj", "v_proj"])
    assert not (t.vision_tower or t.sam_encoder or t.llm)
    assert (c.model.rvls2m.grid, c.model.rvls2m.k, c.model.rvls2m.tau) == (16, 36, "topk")
    assert c.data.answer_format == "cot"
    assert c.model.max_length is None and c.model.text_budget >= 512  # room for a chain of thought


def test_defaults_are_the_papers_optimizer():
    c = Config()
    assert (
        c.optim.lr,
        c.optim.weight_decay,
        c.optim.betas,
        c.optim.batch_size,
        c.optim.grad_accum,
        c.optim.epochs,
    ) == (3e-4, 0.01, (0.9, 0.95), 2, 10, 4)
    assert (c.model.loss.txt, c.model.loss.mask, c.model.loss.bce, c.model.loss.dice) == (1.0, 1.0, 2.0, 0.5)


def test_deepspeed_and_accelerate_configs_parse():
    ds = json.loads((CONFIGS / "deepspeed" / "zero2.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["gradient_accumulation_steps"] == "auto" and ds["train_micro_batch_size_per_gpu"] == "auto"
    for name in ("cpu-2proc.yaml", "ddp-2gpu.yaml"):
        acc = yaml.safe_load((CONFIGS / "accelerate" / name).read_text())
        assert acc["num_processes"] == 2 and acc["distributed_type"] == "MULTI_GPU"
    assert yaml.safe_load((CONFIGS / "accelerate" / "cpu-2proc.yaml").read_text())["use_cpu"] is True
    z3 = json.loads((CONFIGS / "deepspeed" / "zero3.json").read_text())
    # ZeRO-3: the final export gathers the shards; no "auto" that needs a transformers model.config
    assert (
        z3["zero_optimization"]["stage"] == 3 and z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    )
    assert not [k for k, v in z3["zero_optimization"].items() if v == "auto"]
    for stage in (2, 3):
        acc = yaml.safe_load((CONFIGS / "accelerate" / f"deepspeed-zero{stage}-8gpu.yaml").read_text())
        assert acc["distributed_type"] == "DEEPSPEED" and acc["num_processes"] == 8
        assert (CONFIGS.parent / acc["deepspeed_config"]["deepspeed_config_file"]).is_file()
    cpu = yaml.safe_load((CONFIGS / "accelerate" / "deepspeed-cpu-2proc.yaml").read_text())
    assert cpu["num_processes"] == 2 and not cpu.get("use_cpu")  # accelerate turns DeepSpeed off with use_cpu


def test_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("optim:\n  lr: 1e-4\n")  # YAML 1.1 reads 1e-4 as a string: accepted as a number
    c = load_config(
        p,
        [
            "optim.betas=[0.8, 0.9]",
            "train.max_steps=7",
            "model.rvls2m.k=12",
            "data.mix.isic2018=2",
            "data.mix.kvasir_seg=0.5",
            "train.deepspeed=null",
            "model.trainable.lora_targets=[q_proj]",
        ],
    )
    assert c.optim.lr == 1e-4 and c.optim.betas == (0.8, 0.9) and c.train.max_steps == 7
    assert c.model.rvls2m.k == 12 and c.data.mix == {"isic2018": 2.0, "kvasir_seg": 0.5}
    assert c.model.trainable.lora_targets == ["q_proj"]


@pytest.mark.parametrize(
    "item, match",
    [
        ("optim.lrr=1", r"--set optim.lrr: unknown key 'lrr' in optim; known: lr,"),
        ("nothing.x=1", r"unknown key 'nothing' in the top level"),
        ("optim.lr.x=1", r"optim.lr is not a section"),
        ("optim.lr", r"expects key.sub=value"),
    ],
)
def test_bad_overrides(item, match):
    with pytest.raises(InputError, match=match):
        apply_override(Config, {}, item)


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  trainable:\n    lora_rank: 8\n")
    with pytest.raises(InputError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "model.trainable.lora_rank" in str(e.value) and "lora_r" in str(e.value)
    p.write_text("optimizer:\n  lr: 1\n")
    with pytest.raises(InputError, match=r"bad.yaml: unknown key 'optimizer' in the top level"):
        load_config(p)


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"optim": {"lr": -1}}, r"optim.lr must be > 0"),
        ({"optim": {"lr": "fast"}}, r"optim.lr must be a number"),
        ({"optim": {"batch_size": 1.5}}, r"optim.batch_size must be an integer"),
        ({"optim": {"betas": [0.9]}}, r"optim.betas must have 2 entries"),
        ({"optim": {"warmup_ratio": 0.1}}, r"not both"),
        ({"optim": {"schedule": "step"}}, r"optim.schedule must be one of"),
        ({"train": {"precision": "fp16"}}, r"train.precision must be one of"),
        ({"train": {"validate": "maybe"}}, r"train.validate must be true or false"),
        ({"data": {"answer_format": "long"}}, r"data.answer_format must be one of"),
        ({"data": {"mix": {"isic2018": -1}}}, r"data.mix rates"),
        ({"model": {"rvls2m": {"tau": "best"}}}, r"rvls2m.tau must be one of"),
        ({"model": {"tiny": {"image_size": 60}}}, r"multiple of patch"),
        ({"model": {"loss": {"bce": -2}}}, r"loss.bce must be >= 0"),
        ({"loss": {"bce": 2}}, r"unknown key 'loss' in the top level; known: model, data, optim, train"),
        ({"model": "tiny"}, r"model must be a mapping"),
    ],
)
def test_bad_values(raw, match, tmp_path):
    with pytest.raises(InputError, match=match):
        config_from_dict(raw, source=tmp_path / "r.yaml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("optim: [1, 2\n")
    with pytest.raises(InputError, match=r"broken.yaml:\d+: invalid YAML"):
        load_config(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="mapping of sections"):
        load_config(p)


@pytest.mark.parametrize("text", ["no", "false", "fp32", '"no"'])
def test_precision_no_as_the_cli_advises(text, tmp_path):
    """`--set train.precision=no` (YAML 1.1 would read `no` as false) and `precision: no` in a file both work."""
    p = tmp_path / "r.yaml"
    p.write_text(f"train:\n  precision: {text}\n")
    assert load_config(p).train.precision == "no"
    p.write_text("{}\n")
    assert load_config(p, [f"train.precision={text}"]).train.precision == "no"


def test_boolean_fields_take_yes_and_no(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  validate: no\n  progress: yes\n")
    c = load_config(p)
    assert c.train.validate is False and c.train.progress is True


def test_the_model_section_is_the_models_own_config():
    """The recipe's model section extends Sim4SegConfig instead of mirroring its fields."""
    c = Config()
    assert isinstance(c.model, Sim4SegConfig)
    own = c.sim4seg_config()
    assert type(own) is Sim4SegConfig and own == Sim4SegConfig()
    assert Sim4SegConfig.from_json(own.to_json()) == own
