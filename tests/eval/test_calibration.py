"""Calibration of the diagnosis confidence (ECE, reliability diagram) and the correlation of the mean pixel
uncertainty with 1 - IoU, from a predictions file's ``confidence`` and ``uncertainty_mean`` fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sim4seg.apps.cli import main
from sim4seg.data.io import read_mask, write_mask
from sim4seg.data.schema import read_split
from sim4seg.eval.calibration import correlation, reliability, uncertainty_report


def test_ece_on_a_hand_computed_example():
    conf = [0.25, 0.25, 0.75, 0.75, 1.0, 1.0]
    correct = [False, False, True, False, True, True]
    ece, bins = reliability(conf, correct, bins=4)
    # bins: [0, .25) empty; [.25, .5): conf .25 acc 0; [.5, .75) empty; [.75, 1]: conf .875 acc .75
    assert [b["n"] for b in bins] == [0, 2, 0, 4]
    assert ece == pytest.approx(2 / 6 * 0.25 + 4 / 6 * abs(0.75 - 0.875))
    perfect, _ = reliability([1.0, 1.0, 0.5, 0.5], [True, True, True, False], bins=10)
    assert perfect == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability([1.5], [True])


def test_correlation_pearson_and_spearman():
    x = [0.0, 0.1, 0.2, 0.3, 0.4]
    assert correlation(x, [v**3 for v in x]) == {
        "n": 5,
        "pearson": pytest.approx(np.corrcoef(x, [v**3 for v in x])[0, 1]),
        "spearman": pytest.approx(1.0),
    }
    assert correlation(x, [1.0] * 5)["pearson"] is None  # constant: undefined, not 0
    rep = uncertainty_report([{"confidence": None, "correct": True, "uncertainty_mean": None, "iou": 0.5}])
    assert rep["calibration"] is None and rep["uncertainty_vs_error"] is None
    assert rep["skipped"] == {"no_confidence": 1, "no_uncertainty": 1}


def test_evaluate_reports_calibration_and_uncertainty_vs_error(synth_m3ds, tmp_path, capsys):
    samples = read_split(synth_m3ds, "test")
    pdir = tmp_path / "p"
    rows, errors, uncs = [], [], []
    rng = np.random.default_rng(0)
    for i, s in enumerate(samples):
        gt = read_mask(synth_m3ds / s.mask)
        keep = rng.random(gt.shape) < (i % 4) / 4 + 0.2  # masks damaged by varying amounts
        pred = gt & keep
        write_mask(pdir / "masks" / f"{s.id}.png", pred)
        union = (gt | pred).sum()
        err = 0.0 if union == 0 else 1 - (gt & pred).sum() / union
        u = float(np.clip(err * 0.5 + 0.05 * rng.random(), 0, 1))
        errors.append(err)
        uncs.append(u)
        right = i % 3 != 0
        rows.append(
            {
                "id": s.id,
                "mask": f"masks/{s.id}.png",
                "answer": s.answers.diagnosis if right else "It is [SEG].\nDiagnosis: nonsense.",
                "confidence": 0.9 if right else 0.6,
                "uncertainty_mean": u,
            }
        )
    (pdir / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert (
        main(["evaluate", "--manifest", str(synth_m3ds), "--predictions", str(pdir / "p.jsonl"), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    rep = json.loads((out / "uncertainty.json").read_text())
    cal = rep["calibration"]
    n_right = sum(i % 3 != 0 for i in range(len(samples)))
    expected = (n_right * 0.1 + (len(samples) - n_right) * 0.6) / len(samples)
    assert cal["n"] == len(samples) and cal["ece"] == pytest.approx(expected)
    assert rep["uncertainty_vs_error"]["pearson"] == pytest.approx(np.corrcoef(uncs, errors)[0, 1], abs=1e-6)
    assert rep["uncertainty_vs_error"]["pearson"] > 0.9
    assert f"ECE {100 * expected:.2f} %" in printed and "Pearson +" in printed
    assert Image.open(out / "reliability.png").size[0] > 200
    # a value out of [0, 1] is named with its file and line
    rows[1]["confidence"] = 1.7
    (pdir / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(["evaluate", "--manifest", str(synth_m3ds), "--predictions", str(pdir / "p.jsonl"), "--out", str(out)])
        == 2
    )
    assert "p.jsonl:2" in capsys.readouterr().err
