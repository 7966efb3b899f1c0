"""Pictures of an evaluation (overlay sheets, confusion matrices, per-subset bars) and the learning curve."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from sim4seg.apps.cli import main
from sim4seg.data.io import read_mask, write_mask
from sim4seg.data.schema import read_info, read_split
from sim4seg.eval.figures import UNPARSED, confusion_counts, learning_curve, pick_worst_best


def test_pick_worst_best_is_disjoint_and_ordered():
    rows = [{"id": f"s{i}", "iou": v} for i, v in enumerate([0.5, 0.1, 0.9, None, 0.7, 0.1])]
    worst, best = pick_worst_best(rows, 2)
    assert [r["id"] for r in worst] == ["s1", "s5"] and [r["id"] for r in best] == ["s2", "s4"]
    worst, best = pick_worst_best(rows[:3], 2)  # fewer than 2K: no sample twice
    assert [r["id"] for r in worst] == ["s1", "s0"] and [r["id"] for r in best] == ["s2"]


def test_confusion_counts():
    labels = {"busi": ["normal", "benign", "malignant"]}
    rows = [
        {"subset": "busi", "label": "benign", "parsed": "benign", "correct": True},
        {"subset": "busi", "label": "benign", "parsed": "malignant", "correct": False},
        {"subset": "busi", "label": "normal", "parsed": None, "correct": False},
        {"subset": "busi", "label": "malignant", "parsed": None, "correct": None},
    ]  # no answer: left out
    c = confusion_counts(rows, labels)["busi"]
    assert c["columns"] == ["normal", "benign", "malignant", UNPARSED]
    assert c["counts"] == [[0, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert confusion_counts(rows[3:], labels) == {}


def test_evaluate_writes_labelled_pictures(synth_m3ds, tmp_path, capsys):
    samples = read_split(synth_m3ds, "test")
    pred_dir = tmp_path / "p"
    rows = []
    for i, s in enumerate(samples):  # every other sample: an empty mask and a wrong-format answer
        gt = read_mask(synth_m3ds / s.mask)
        mask = gt if i % 2 == 0 else np.zeros_like(gt)
        write_mask(pred_dir / "masks" / f"{s.id}.png", mask)
        rows.append(
            {
                "id": s.id,
                "mask": os.path.relpath(pred_dir / "masks" / f"{s.id}.png", pred_dir),
                "answer": s.answers.diagnosis if i % 2 == 0 else "It is [SEG].",
            }
        )
    preds = pred_dir / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate",
                "--manifest",
                str(synth_m3ds),
                "--predictions",
                str(preds),
                "--out",
                str(out),
                "--overlays",
                "1",
            ]
        )
        == 0
    )
    assert "pictures (" in capsys.readouterr().out
    subsets = sorted({s.subset for s in samples})
    for name in subsets:
        sheet = Image.open(out / "overlays" / f"{name}_worst.png")
        assert sheet.width >= 3 * 192 and sheet.height >= 192  # three panels of >= 192 px
        assert (out / f"confusion_{name}.png").stat().st_size > 0
    assert (out / "per_subset.png").stat().st_size > 0
    per_subset = {name: [s for s in samples if s.subset == name] for name in subsets}
    both = [n for n, v in per_subset.items() if len(v) >= 2]
    assert all((out / "overlays" / f"{n}_best.png").is_file() for n in both)
    confusion = json.loads((out / "confusion.json").read_text())
    info = read_info(synth_m3ds)
    for name, entry in confusion.items():
        counts = np.array(entry["counts"])
        assert counts.sum() == len(per_subset[name])
        assert entry["columns"] == list(info.subsets[name].labels) + [UNPARSED]
        wrong = sum(1 for i, s in enumerate(samples) if s.subset == name and i % 2 == 1)
        assert counts[:, -1].sum() == wrong and np.trace(counts[:, :-1]) == len(per_subset[name]) - wrong


def test_evaluate_baseline_has_bars_but_no_overlays(synth_m3ds, tmp_path):
    out = tmp_path / "o"
    assert (
        main(
            ["evaluate", "--manifest", str(synth_m3ds), "--baseline", "majority", "--out", str(out), "--overlays", "2"]
        )
        == 0
    )
    assert (out / "per_subset.png").is_file() and (out / "confusion.json").is_file()
    assert not (out / "overlays").exists()


def test_learning_curve(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [
        {"kind": "train", "step": s, "loss": 2.0 / s, "loss_txt": 1.0 / s, "loss_bce": 0.5, "loss_dice": 0.4}
        for s in range(1, 6)
    ] + [{"kind": "val", "step": 5, "val/loss": 1.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "tra')  # a line cut by a kill
    png = learning_curve(log, tmp_path / "lc.png")
    assert png is not None and Image.open(png).width > 300
    assert learning_curve(tmp_path / "missing.jsonl", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
