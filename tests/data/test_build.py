"""The M3DS builder end to end: ten fixture trees → one M3DS that verify accepts and stats
tabulates; resume, interruption, report, exit status, bad input, --paper-sizes."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from sim4seg.apps.cli import main
from sim4seg.data import build as build_mod
from sim4seg.data.build import REPORT_FILE, STATE_DIR, build
from sim4seg.data.subsets import SUBSETS
from sim4seg.data.verify import verify
from sim4seg.errors import InputError


def _trees():
    name = "sim4seg_test_source_trees"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "sources" / "trees.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.fixture(scope="module")
def all_sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    return _trees().write_all(base)


def _specs(paths: dict) -> list[str]:
    return [a for name, p in paths.items() for a in ("--source", f"{name}={p}")]


def test_build_all_ten_verify_and_stats(all_sources, tmp_path, capsys):
    out = tmp_path / "m3ds"
    status = main(["data", "build", *_specs(all_sources), "--out", str(out), "--workers", "2"])
    text = capsys.readouterr().out
    assert status == 1  # the fixtures hold bad files on purpose
    report = json.loads((out / REPORT_FILE).read_text())
    assert list(report["sources"]) == list(SUBSETS)
    assert report["totals"] == {"train": 32, "val": 13, "test": 14}
    assert report["sources"]["busi"]["counts"] == {"train": {"benign": 2, "malignant": 1, "normal": 1}}
    assert report["skipped"] == 13 and report["excluded"] == 1
    assert {"file": "malignant/malignant (2).png", "reason": "no mask malignant (2)_mask.png beside it"} in report[
        "sources"
    ]["busi"]["skipped"]
    assert "total: 59 samples (train 32, val 13, test 14); 13 skipped, 1 excluded" in text
    checked, problems = verify(out)
    assert checked == 59 and problems == []
    assert main(["data", "verify", str(out)]) == 0
    assert main(["data", "stats", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    total = next(line for line in lines if line.startswith("Total"))
    assert [c.strip() for c in total.split("|")[2:]] == ["32     13     14", "59"]
    assert any(line.startswith("FracAtlas") and "| multi-region fracture" in line for line in lines)
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["build"]["sources"]["fives"].endswith("FIVES A Fundus Image Dataset")


def test_resume_reuses_finished_and_redoes_missing(all_sources, tmp_path):
    out = tmp_path / "m3ds"
    sources = {k: all_sources[k] for k in ("busi", "kvasir_seg")}
    first = build(out, sources, workers=1)
    assert first["sources"]["kvasir_seg"]["converted"] == 10
    img = out / "images" / "kvasir_seg" / "cju0000xyz.png"
    src = all_sources["kvasir_seg"] / "Kvasir-SEG" / "images" / "cju0000xyz.jpg"
    assert img.stat().st_ino != src.stat().st_ino and first["sources"]["kvasir_seg"]["images"] == {"encoded": 10}
    (out / "masks" / "kvasir_seg" / "cju0003xyz.png").unlink()
    (out / "masks" / "kvasir_seg" / ".cju0004xyz.png.abc.tmp").write_bytes(b"half")  # left by a killed run
    with open(out / STATE_DIR / "busi.jsonl", "a") as f:
        f.write('{"id": "busi-torn", "fing')  # torn last line
    again = build(out, sources, workers=1)
    k = again["sources"]["kvasir_seg"]
    assert (k["converted"], k["reused"]) == (1, 9) and again["sources"]["busi"]["converted"] == 0
    assert not list(out.rglob("*.tmp"))
    assert verify(out)[1] == []


def test_interrupted_build_loses_nothing_finished(all_sources, tmp_path, monkeypatch):
    out = tmp_path / "m3ds"
    real, calls = build_mod.convert_item, []

    def flaky(item, out_root):
        calls.append(item.sample_id)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(item, out_root)

    monkeypatch.setattr(build_mod, "convert_item", flaky)
    with pytest.raises(KeyboardInterrupt):
        build(out, {"kvasir_seg": all_sources["kvasir_seg"]}, workers=1)
    assert not (out / "train.jsonl").exists() and not list(out.rglob("*.tmp"))
    monkeypatch.setattr(build_mod, "convert_item", real)
    report = build(out, {"kvasir_seg": all_sources["kvasir_seg"]}, workers=1)
    assert (report["sources"]["kvasir_seg"]["reused"], report["sources"]["kvasir_seg"]["converted"]) == (4, 6)
    assert verify(out) == (10, [])


def test_exit_zero_without_skips_and_two_workers_match_one(all_sources, tmp_path):
    assert (
        main(
            [
                "data",
                "build",
                "--source",
                f"kvasir_seg={all_sources['kvasir_seg']}",
                "--out",
                str(tmp_path / "a"),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    build(tmp_path / "b", {"kvasir_seg": all_sources["kvasir_seg"]}, workers=1)
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_text() == (tmp_path / "b" / f"{split}.jsonl").read_text()


def test_missing_folder_fails_before_any_work(all_sources, tmp_path, capsys):
    out = tmp_path / "m3ds"
    missing = tmp_path / "nowhere"
    status = main(
        ["data", "build", "--source", f"busi={all_sources['busi']}", "--source", f"fives={missing}", "--out", str(out)]
    )
    assert status == 2 and str(missing) in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "name, remove, expected",
    [
        ("fracatlas", "FracAtlas/Annotations/COCO JSON/COCO_fracture_masks.json", "COCO_fracture_masks.json"),
        ("fracatlas", "FracAtlas/Utilities/Fracture Split/valid.csv", "valid.csv"),
        ("isic2017", "ISIC-2017_Validation_Part3_GroundTruth.csv", "ISIC-2017_Validation_Part3_GroundTruth.csv"),
        ("tn3k", "tn3k-trainval-fold0.json", "tn3k-trainval-fold0.json"),
        ("fives", "FIVES A Fundus Image Dataset/test/Groud truth", "test/Ground truth"),
        ("bfd", "BoneFractureYolo8/valid/labels", "valid/labels"),
    ],
)
def test_missing_annotation_names_what_and_where(tmp_path, name, remove, expected):
    import shutil

    src = _trees().WRITERS[name](tmp_path / "src")
    target = src / remove if (src / remove).exists() else src.parent / remove
    if not target.exists():
        target = next(p for p in tmp_path.rglob(Path(remove).name) if p.as_posix().endswith(remove))
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(InputError) as e:
        build(tmp_path / "out", {name: src})
    assert expected in str(e.value)
    assert not (tmp_path / "out").exists()


def test_bad_source_spec():
    for bad in (["busi"], ["nosuch=/x"], ["busi=/a", "busi=/b"], []):
        with pytest.raises(InputError):
            build_mod.parse_sources(bad)


def test_paper_sizes_keeps_findings_first(all_sources, tmp_path, monkeypatch):
    monkeypatch.setitem(SUBSETS, "fracatlas", dataclasses.replace(SUBSETS["fracatlas"], paper_sizes=(3, 1, 1)))
    report = build(tmp_path / "m3ds", {"fracatlas": all_sources["fracatlas"]}, paper_sizes=True)
    r = report["sources"]["fracatlas"]
    assert r["dropped_by_paper_sizes"] == {"train": 4, "val": 1, "test": 1}  # IMG6 tried, failed, replaced
    assert r["counts"] == {
        "train": {"hand fracture": 1, "multi-region fracture": 1, "shoulder fracture": 1},
        "val": {"hip fracture": 1},
        "test": {"hand fracture": 1},
    }
    assert verify(tmp_path / "m3ds")[1] == []
