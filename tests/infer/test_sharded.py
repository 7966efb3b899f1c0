"""Batched inference (several images per forward) equals batch size 1; ``evaluate --checkpoint`` sharded over two
processes (``accelerate launch``, gloo) equals one process, and a killed rank's finished samples are not redone."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import trained_checkpoint  # noqa: E402
from sim4seg.apps.cli import main  # noqa: E402
from sim4seg.data.io import read_mask  # noqa: E402
from sim4seg.data.schema import load_split  # noqa: E402
from sim4seg.errors import InputError  # noqa: E402
from sim4seg.infer.batch import PREDICTIONS, predict_split  # noqa: E402
from sim4seg.infer.predictor import Predictor  # noqa: E402
from sim4seg.infer.tts import TTSConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(synth_m3ds, tmp_path_factory):
    return trained_checkpoint(synth_m3ds, tmp_path_factory.mktemp("ckpt") / "ckpt")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _iou_of(row: dict) -> float | None:
    return row["tts"]["chosen"]["pred_iou"] if row["tts"]["chosen"] else None


def _without_time_and_iou(row: dict) -> dict:
    tts = dict(
        row["tts"], chosen=row["tts"]["chosen"] and {k: v for k, v in row["tts"]["chosen"].items() if k != "pred_iou"}
    )
    return {k: v for k, v in row.items() if k != "time_s"} | {"tts": tts}


def _same(a_dir: Path, b_dir: Path) -> tuple[list[dict], float]:
    """Assert both directories hold the same predictions (ids, order, answers, diagnoses, chosen candidate, mask
    pixels); return a's rows and the largest difference of SAM's predicted IoU (a float32 score, reported only)."""
    a, b = _rows(a_dir / PREDICTIONS), _rows(b_dir / PREDICTIONS)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    iou_diff = 0.0
    for x, y in zip(a, b):
        assert _without_time_and_iou(x) == _without_time_and_iou(y), x["id"]
        assert np.array_equal(read_mask(a_dir / x["mask"]), read_mask(b_dir / y["mask"])), x["id"]
        if _iou_of(x) is not None:
            assert _iou_of(y) == pytest.approx(_iou_of(x), abs=1e-5)
            iou_diff = max(iou_diff, abs(_iou_of(x) - _iou_of(y)))
    return a, iou_diff


def test_batched_prediction_equals_batch_size_one(ckpt, synth_m3ds, tmp_path):
    predictor = Predictor.from_checkpoint(ckpt, tts=TTSConfig(max_new_tokens=24))
    predict_split(predictor, synth_m3ds, "test", tmp_path / "b1", progress=False, batch_size=1)
    predict_split(predictor, synth_m3ds, "test", tmp_path / "b4", progress=False, batch_size=4)
    rows, iou_diff = _same(tmp_path / "b1", tmp_path / "b4")
    _, samples = load_split(synth_m3ds, "test")
    assert len(rows) == len(samples) > 4 and sum(r["seg"] for r in rows) > len(rows) // 2
    # the prompts differ in length, so the batch really is left-padded
    lengths = {
        len(predictor.prompt_ids(s.query, predictor.encode([synth_m3ds / s.image])[1].lvlm_features.shape[1])[0])
        for s in samples[:4]
    }
    print(
        f"batch 4 vs batch 1: {len(rows)} predictions identical (answers, diagnoses, masks pixel for pixel); "
        f"SAM's predicted IoU differs by at most {iou_diff:.2g}; prompt lengths in the first batch: {sorted(lengths)}"
    )
    with pytest.raises(InputError, match="batch-size"):
        predict_split(predictor, synth_m3ds, "test", tmp_path / "b0", progress=False, batch_size=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_evaluate_equals_one_process_and_resumes_a_killed_rank(ckpt, synth_m3ds, tmp_path, capsys):
    one = tmp_path / "one"
    assert main(["evaluate", "--manifest", str(synth_m3ds), "--checkpoint", str(ckpt), "--out", str(one)]) == 0
    capsys.readouterr()
    rows = _rows(one / "predictions" / PREDICTIONS)
    n = len(rows)

    # what a job killed mid-run leaves: rank 1 finished its first two samples (indices 1, 3) and died while
    # writing a third; rank 0 had done nothing. Marked time_s = -1 so that a redone sample would show.
    two = tmp_path / "two"
    pred = two / "predictions"
    (pred / "masks").mkdir(parents=True)
    done = [dict(rows[i], time_s=-1) for i in (1, 3)]
    for r in done:
        shutil.copy(one / "predictions" / r["mask"], pred / r["mask"])
    (pred / "predictions.rank-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in done) + '{"id": "half')

    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs/accelerate/cpu-2proc.yaml"),
        "--main_process_port",
        str(_free_port()),
        "-m",
        "sim4seg",
        "evaluate",
        "--manifest",
        str(synth_m3ds),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(two),
        "--batch-size",
        "2",
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("scored") == 1  # rank 0 alone scores and prints

    _, iou_diff = _same(one / "predictions", pred)
    merged = _rows(pred / PREDICTIONS)
    assert len(merged) == n and [r["time_s"] for r in merged if r["time_s"] == -1] == [-1, -1]
    assert [r["id"] for r in merged if r["time_s"] == -1] == [rows[1]["id"], rows[3]["id"]]  # kept, not redone
    assert not list(pred.glob("predictions.rank-*.jsonl"))
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m1 == m2 and m1["overall"]["n"] == n
    print(
        f"2 processes (batch 2) vs 1 process (batch 1): {n} predictions identical (SAM's predicted IoU within "
        f"{iou_diff:.2g}), metrics.json identical "
        f"(gIoU {m1['overall']['giou']:.4f}, cIoU {m1['overall']['ciou']:.4f}, Acc {m1['overall']['acc']:.4f})"
    )
