"""``sim4seg model info``: a checkpoint without a training record, one with it (label sets per subset, data,
recipe, metrics), ``--json``, a broken record; the predictor reads the label sets from the same record."""

from __future__ import annotations

import json

import pytest

from sim4seg.apps.cli import main
from sim4seg.data.subsets import SUBSETS
from sim4seg.model import checkpoint
from sim4seg.model.checkpoint import TRAINING_FILE, trained_subsets


@pytest.fixture(scope="module")
def saved(_tiny_template, tmp_path_factory):
    d = tmp_path_factory.mktemp("ck") / "ckpt"
    checkpoint.save(*_tiny_template, d)  # read-only use of the shared model
    return d


def test_info_without_a_training_record(saved, capsys):
    assert main(["model", "info", str(saved)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {saved}" in out and "LVLM: llava" in out and "segmenter: sam" in out
    assert "RVLS2M: training on, inference on; grid 16, τ topk k=36" in out
    assert "training: no record" in out and "label sets unknown" in out
    assert trained_subsets(saved) is None


def test_info_with_a_training_record(saved, tmp_path, capsys):
    import shutil

    d = tmp_path / "ck"
    shutil.copytree(saved, d)
    record = {
        "format": 1,
        "trained_at": "2026-01-02T03:04:05+00:00",
        "sim4seg_version": "0.1.0",
        "model": {"preset": "tiny"},
        "steps": 40,
        "epochs_completed": 2,
        "samples_seen": 320,
        "data": {
            "manifest": "/data/m3ds",
            "train_split": "train",
            "val_split": "val",
            "answer_format": "cot",
            "build": {"command": "import"},
            "n_train": 160,
            "n_val": 20,
            "train_counts": {"busi": {"benign": 70, "malignant": 50, "normal": 40}},
        },
        "subsets": {"busi": SUBSETS["busi"].to_json()},
        "metrics": {"train": {"step": 40, "loss": 0.5}, "validations": [{"step": 40, "val/loss": 0.75}]},
    }
    (d / TRAINING_FILE).write_text(json.dumps(record))
    (d / "config.yaml").write_text(
        "optim: {lr: 0.001, epochs: 2, batch_size: 8, grad_accum: 1, schedule: cosine}\n"
        "train: {seed: 0, precision: 'no'}\n"
    )
    assert main(["model", "info", str(d)]) == 0
    out = capsys.readouterr().out
    assert "training: 2026-01-02T03:04:05+00:00 with sim4seg 0.1.0; 40 steps, 2 epoch(s) completed" in out
    assert "data: /data/m3ds (built by `data import`); split 'train' (160 samples)" in out
    assert "busi [ultrasound, 160 training samples]: benign (70), malignant (50), normal (40)" in out
    assert "recipe (config.yaml): lr 0.001, 2 epoch(s), batch 8 × accumulation 1, cosine schedule" in out
    assert "last training loss 0.5000 (step 40); validation loss 0.7500 (step 40)" in out
    assert list(trained_subsets(d)) == ["busi"] and trained_subsets(d)["busi"] == SUBSETS["busi"]
    assert main(["model", "info", str(d), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["training"]["subsets"]["busi"]["labels"] == ["benign", "malignant", "normal"]
    assert data["parameters"]["total"] > 0 and data["recipe"]["optim"]["lr"] == 0.001
    from sim4seg.infer.predictor import Predictor

    assert list(Predictor.from_checkpoint(d).subsets) == ["busi"]
    (d / TRAINING_FILE).write_text("{not json")
    assert main(["model", "info", str(d)]) == 2
    assert f"{TRAINING_FILE}:1: invalid JSON" in capsys.readouterr().err
    assert main(["model", "info", str(tmp_path / "nope")]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err
