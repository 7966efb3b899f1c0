"""Regression tests of issue 13: one unreadable image does not stop batch ``predict``; ``evaluate``
scores a failed sample as nothing predicted."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import trained_checkpoint
from sim4seg.data.schema import load_split
from sim4seg.errors import InputError
from sim4seg.eval.evaluate import evaluate_predictions, read_predictions
from sim4seg.infer.batch import predict_split
from sim4seg.infer.predictor import Predictor
from sim4seg.infer.tts import TTSConfig


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_unreadable_image_is_recorded_as_failed_and_the_run_goes_on(synth_m3ds, tmp_path_factory, tmp_path):
    ckpt = trained_checkpoint(synth_m3ds, tmp_path_factory.mktemp("ckpt") / "ckpt")
    root = tmp_path / "ds"
    shutil.copytree(synth_m3ds, root)
    _, samples = load_split(root, "test")
    bad = samples[1]
    (root / bad.image).write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken")
    p = Predictor.from_checkpoint(ckpt, tts=TTSConfig(max_new_tokens=16))
    path = predict_split(p, root, "test", tmp_path / "out", progress=False)
    rows = {r["id"]: r for r in _lines(path)}
    assert sorted(rows) == sorted(s.id for s in samples)
    failed = rows[bad.id]
    assert failed["mask"] is None and failed["answer"] is None and bad.image in failed["failed"]
    assert all("failed" not in r for i, r in rows.items() if i != bad.id)
    predict_split(p, root, "test", tmp_path / "out", progress=False)  # resumed: the failure is not retried
    assert len(_lines(path)) == len(samples)
    ev = evaluate_predictions(root, "test", path)
    summary = ev.summary()
    assert summary["overall"]["n"] == len(samples)
    assert summary["failed"] == {bad.id: failed["failed"]}
    row = next(r for r in ev.rows if r["id"] == bad.id)
    assert row["correct"] is False and row["parsed"] is None and row["failed"]
    assert row["intersection"] == 0


def test_failed_rows_in_a_predictions_file(tmp_path):
    p = tmp_path / "p.jsonl"
    rows = [
        {"id": "a", "mask": "m/a.png", "answer": "Diagnosis: benign."},
        {"id": "b", "failed": "images/b.png: cannot decode image"},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = read_predictions(p)
    assert preds["b"].failed == "images/b.png: cannot decode image" and preds["b"].mask is None
    p.write_text(json.dumps({"id": "b", "failed": "x", "answer": "Diagnosis: benign."}) + "\n")
    with pytest.raises(InputError, match=r"p\.jsonl:1: a failed prediction has no 'mask' or 'answer'"):
        read_predictions(p)
    p.write_text(json.dumps({"id": "b", "failed": 3}) + "\n")
    with pytest.raises(InputError, match="field 'failed' must be a non-empty string"):
        read_predictions(p)
