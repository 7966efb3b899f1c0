"""Predictor (encode once, many queries), its outputs, DICOM input, bad input, batch mode that resumes after a kill,
and ``sim4seg evaluate --checkpoint``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import trained_checkpoint  # noqa: E402
from sim4seg.apps.cli import main  # noqa: E402
from sim4seg.data.dataset import ExampleEncoder  # noqa: E402
from sim4seg.data.io import read_image, read_mask  # noqa: E402
from sim4seg.data.schema import load_split  # noqa: E402
from sim4seg.errors import ImageReadError, InputError  # noqa: E402
from sim4seg.eval.evaluate import evaluate_predictions  # noqa: E402
from sim4seg.infer.batch import open_predictions, predict_split  # noqa: E402
from sim4seg.infer.predictor import Predictor, load_model, write_result  # noqa: E402
from sim4seg.infer.tts import TTSConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(synth_m3ds, tmp_path_factory):
    return trained_checkpoint(synth_m3ds, tmp_path_factory.mktemp("ckpt") / "ckpt")


@pytest.fixture(scope="module")
def predictor(ckpt):
    return Predictor.from_checkpoint(ckpt, tts=TTSConfig(max_new_tokens=24))


def _sample(root, split="test"):
    _, samples = load_split(root, split)
    return samples[0]


def test_set_image_encodes_once_then_answers_many_queries(predictor, synth_m3ds, monkeypatch):
    s = _sample(synth_m3ds)
    calls = []
    orig = predictor.model.encode_image
    monkeypatch.setattr(predictor.model, "encode_image", lambda *a, **k: calls.append(1) or orig(*a, **k))
    predictor.set_image(synth_m3ds / s.image)
    image = read_image(synth_m3ds / s.image)
    a = predictor.predict(s.query)
    b = predictor.predict("Please segment the skin lesion in this dermoscopy image and tell me the diagnosis.")
    assert calls == [1]
    for p in (a, b):
        assert p.mask.shape == image.shape[:2] and p.mask.dtype == bool
        assert p.seg and "[SEG]" in p.answer and p.diagnosis is not None
        assert {"read_encode_s", "generate_s", "masks_s", "predict_s"} <= set(p.timings)
    # the prompt is tokenized exactly as in training (image placeholder expanded to the image's tokens)
    enc = ExampleEncoder.for_model(predictor.model, predictor.processor).encode(image, s.query)
    assert torch.equal(predictor.prompt_ids(s.query)[0], enc["input_ids"])


def test_written_outputs(predictor, synth_m3ds, tmp_path):
    s = _sample(synth_m3ds)
    predictor.set_image(synth_m3ds / s.image)
    pred = predictor.predict(s.query)
    paths = write_result(pred, predictor.image, tmp_path, "case", {"query": s.query})
    h, w = predictor.image.shape[:2]
    assert np.array_equal(read_mask(paths["mask"]), pred.mask)
    assert Image.open(paths["overlay"]).size == (w, h) == Image.open(paths["mask"]).size
    rec = json.loads(paths["json"].read_text())
    assert rec["answer"] == pred.answer and rec["seg"] is True and rec["query"] == s.query
    assert rec["diagnosis"] == pred.diagnosis and rec["mask"] == "case_mask.png"
    assert rec["tts"]["m"] == 1 and rec["tts"]["selector"] == "consensus" and rec["timings"]["predict_s"] > 0


def test_dicom_image(predictor, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    arr = (np.random.default_rng(0).random((40, 56)) * 4000).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.PhotometricInterpretation, ds.SamplesPerPixel = 40, 56, "MONOCHROME2", 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.tobytes()
    path = tmp_path / "scan.dcm"
    ds.save_as(path, enforce_file_format=True)
    predictor.set_image(path)
    pred = predictor.predict("Segment the fracture in this X-ray image and give the diagnosis.")
    assert pred.mask.shape == (40, 56)


def test_bad_inputs_are_named(predictor, ckpt, tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a Sim4Seg checkpoint"):
        load_model(tmp_path / "empty")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(InputError, match="a file was given"):
        load_model(tmp_path / "file.bin")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="bad.png"):
        predictor.set_image(bad)
    predictor.set_image(np.zeros((30, 30, 3), np.uint8))
    with pytest.raises(InputError, match="over max_length=128"):
        predictor.predict("segment the lesion " * 60)
    with pytest.raises(InputError, match="empty"):
        predictor.predict("  ")


def test_predict_cli_single_image_and_errors(ckpt, synth_m3ds, tmp_path, capsys):
    s = _sample(synth_m3ds)
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(ckpt),
            "--image",
            str(synth_m3ds / s.image),
            "--query",
            s.query,
            "--query",
            "What is the diagnosis?",
            "--subset",
            s.subset,
            "--max-new-tokens",
            "24",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    stem = Path(s.image).stem
    for q in (0, 1):
        assert (out / f"{stem}_q{q}_mask.png").is_file() and (out / f"{stem}_q{q}_overlay.png").is_file()
    printed = capsys.readouterr().out
    assert "diagnosis:" in printed and "single answer: no agreement" in printed
    assert json.loads((out / f"{stem}_q0.json").read_text())["confidence"] is None
    assert not (out / f"{stem}_q0_uncertainty.png").exists()  # one candidate: no map
    # with TTS the uncertainty map is written beside the mask, and the agreement printed
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(ckpt),
            "--image",
            str(synth_m3ds / s.image),
            "--query",
            s.query,
            "--m",
            "2",
            "--n",
            "3",
            "--max-new-tokens",
            "24",
            "--out",
            str(out / "tts"),
        ]
    )
    assert rc == 0 and re.search(r"agreement [01]\.\d\d", capsys.readouterr().out)
    rec = json.loads((out / "tts" / f"{stem}.json").read_text())
    unc = np.asarray(Image.open(out / "tts" / f"{stem}_uncertainty.png"))
    assert unc.shape == read_mask(out / "tts" / f"{stem}_mask.png").shape and unc.dtype == np.uint8
    assert rec["uncertainty"] == f"{stem}_uncertainty.png" and 0.0 <= rec["confidence"] <= 1.0
    assert rec["uncertainty_mean"] == pytest.approx(unc.mean() / 255.0, abs=2e-3)
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(tmp_path),
                "--image",
                str(synth_m3ds / s.image),
                "--query",
                "x",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "not a Sim4Seg checkpoint" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--image",
                str(tmp_path / "nope.png"),
                "--query",
                "x",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "nope.png" in capsys.readouterr().err


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_batch_prediction_resumes_after_a_kill_without_loss_or_duplicates(ckpt, synth_m3ds, tmp_path):
    _, samples = load_split(synth_m3ds, "test")
    out = tmp_path / "preds"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "sim4seg",
        "predict",
        "--checkpoint",
        str(ckpt),
        "--manifest",
        str(synth_m3ds),
        "--out",
        str(out),
        "--max-new-tokens",
        "24",
        "--m",
        "2",
        "--n",
        "2",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = out / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and path.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = path.read_bytes()
    n_before = before.count(b"\n")
    assert 2 <= n_before < len(samples), "the run should have been killed part-way"
    with open(path, "ab") as f:  # as if killed in the middle of writing a line
        f.write(b'{"id": "half-writ')
    p = Predictor.from_checkpoint(ckpt, tts=TTSConfig(m=2, n=2, max_new_tokens=24))
    predict_split(p, synth_m3ds, "test", out, progress=False)
    rows = _lines(path)
    assert path.read_bytes().startswith(before)  # finished lines kept as they were
    assert sorted(r["id"] for r in rows) == sorted(s.id for s in samples)  # each id exactly once
    assert all((out / r["mask"]).is_file() and r["tts"]["m"] == 2 for r in rows)
    predict_split(p, synth_m3ds, "test", out, progress=False)  # a finished run: nothing added
    assert len(_lines(path)) == len(samples)
    ev = evaluate_predictions(synth_m3ds, "test", path)  # exactly the format evaluate reads
    assert ev.summary()["overall"]["n"] == len(samples)


def test_open_predictions_refuses_a_corrupt_file(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(InputError, match="predictions.jsonl:2: malformed JSON"):
        open_predictions(path)
    path.write_text('{"id": "a"}\n{"id": "a"}\n')
    with pytest.raises(InputError, match="twice"):
        open_predictions(path)
    path.write_text('{"id": "a"}\n[1]\n')
    with pytest.raises(InputError, match="predictions.jsonl:2: not a predictions row"):
        open_predictions(path)


def test_evaluate_with_checkpoint(ckpt, synth_m3ds, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["evaluate", "--manifest", str(synth_m3ds), "--checkpoint", str(ckpt), "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    _, samples = load_split(synth_m3ds, "test")
    assert metrics["overall"]["n"] == len(samples) and 0 <= metrics["overall"]["giou"] <= 1
    assert metrics["overall"]["acc"] is not None
    assert len(_lines(out / "predictions" / "predictions.jsonl")) == len(samples)
    assert "| Sim4Seg |" in capsys.readouterr().out
    rc = main(
        [
            "evaluate",
            "--manifest",
            str(synth_m3ds),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "o"),
            "--m",
            "2",
            "--n",
            "2",
            "--selector",
            "oracle",
        ]
    )
    assert rc == 0
    assert "UPPER BOUND" in (tmp_path / "o" / "metrics.md").read_text()
    assert (
        main(
            [
                "evaluate",
                "--manifest",
                str(synth_m3ds),
                "--checkpoint",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
