"""Data selection: subsets / modalities with exclusions, for training recipes and for ``evaluate``."""

from __future__ import annotations

import json
import os

import pytest

from sim4seg.apps.cli import main
from sim4seg.data.schema import read_info, read_split
from sim4seg.data.selection import resolve_subsets
from sim4seg.data.subsets import SUBSETS
from sim4seg.errors import InputError
from sim4seg.train.recipe import DataConfig
from sim4seg.train.task import selected_subsets


def test_exclusions_and_modalities(synth_m3ds):
    info = read_info(synth_m3ds)
    assert resolve_subsets(info) == list(info.subsets)
    no_xray = resolve_subsets(info, exclude_modalities=["xray"])
    assert no_xray == [n for n in info.subsets if SUBSETS[n].modality != "xray"]
    assert "fracatlas" not in no_xray and "busi" in no_xray
    assert resolve_subsets(info, modalities=["fundus"]) == ["fives"]
    assert resolve_subsets(info, subsets=["busi", "tn3k", "fives"], exclude_subsets=["tn3k"]) == ["busi", "fives"]
    assert resolve_subsets(info, modalities=["ultrasound"], exclude_subsets=["busi"]) == ["tn3k"]


def test_errors_list_what_exists(synth_m3ds):
    info = read_info(synth_m3ds)
    with pytest.raises(InputError, match=r"unknown subset\(s\) nope; the manifest has fracatlas, .*fives") as e:
        resolve_subsets(info, exclude_subsets=["nope"], where=synth_m3ds)
    assert str(synth_m3ds) in str(e.value)
    with pytest.raises(InputError, match=r"unknown modality\(s\) mri; the manifest has dermoscopy, endoscopy"):
        resolve_subsets(info, exclude_modalities=["mri"])
    with pytest.raises(InputError, match="keeps no subset"):
        resolve_subsets(info, subsets=["fives"], exclude_modalities=["fundus"])


def test_recipe_selection_checked_against_the_manifest(synth_m3ds):
    assert selected_subsets(DataConfig(subsets=["busi"]), synth_m3ds) == ["busi"]  # unchanged path
    got = selected_subsets(DataConfig(exclude_subsets=["busi", "chestx_det", "fives"]), synth_m3ds)
    assert got == [n for n in read_info(synth_m3ds).subsets if n not in ("busi", "chestx_det", "fives")]
    with pytest.raises(InputError, match="recipe's data selection: unknown modality"):
        selected_subsets(DataConfig(exclude_modalities=["xrays"]), synth_m3ds)


def test_evaluate_only_some_subsets(synth_m3ds, tmp_path, capsys):
    samples = read_split(synth_m3ds, "test")
    pred_dir = tmp_path / "p"
    pred_dir.mkdir()
    rows = [
        {"id": s.id, "mask": os.path.relpath(synth_m3ds / s.mask, pred_dir), "answer": s.answers.diagnosis}
        for s in samples
    ]
    preds = pred_dir / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            "--manifest",
            str(synth_m3ds),
            "--predictions",
            str(preds),
            "--out",
            str(out),
            "--modalities",
            "ultrasound",
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["per_subset"]) == {"busi", "tn3k"}
    assert m["overall"]["n"] == sum(s.subset in ("busi", "tn3k") for s in samples)
    # predictions of only the selected subsets are enough
    (pred_dir / "few.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r, s in zip(rows, samples) if s.subset == "fives"), encoding="utf-8"
    )
    rc = main(
        [
            "evaluate",
            "--manifest",
            str(synth_m3ds),
            "--predictions",
            str(pred_dir / "few.jsonl"),
            "--out",
            str(tmp_path / "o2"),
            "--subsets",
            "fives",
        ]
    )
    assert rc == 0 and json.loads((tmp_path / "o2" / "metrics.json").read_text())["overall"]["giou"] == 1.0
    rc = main(
        [
            "evaluate",
            "--manifest",
            str(synth_m3ds),
            "--baseline",
            "empty",
            "--out",
            str(tmp_path / "o3"),
            "--subsets",
            "isic",
        ]
    )
    assert rc == 2
    assert "unknown subset(s) isic; the manifest has" in capsys.readouterr().err
