"""Regression tests of issue 13 for ``data build`` / ``data export``: no patient data in outputs,
nothing linked, every passed-over file reported, symbolic links followed only within the root."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim4seg.data.build import build
from sim4seg.data.io import read_image
from sim4seg.data.schema import read_split
from sim4seg.data.verify import verify

_spec = importlib.util.spec_from_file_location("_test_io2", Path(__file__).with_name("test_io.py"))
_test_io = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_test_io)
dicom = _test_io._dicom  # PatientName Doe^Jane, PatientID SECRET-4711


def _trees():
    name = "sim4seg_test_source_trees"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "sources" / "trees.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _kvasir(tmp_path: Path) -> tuple[Path, Path]:
    base = _trees().write_kvasir_seg(tmp_path / "src")
    return base, base / "Kvasir-SEG"


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_dicom_sources_become_pngs_without_patient_fields(tmp_path):
    base, root = _kvasir(tmp_path)
    raw = np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 2  # 12-bit values
    (root / "images" / "cju0000xyz.jpg").unlink()
    dicom(root / "images" / "cju0000xyz.dcm", raw, WindowCenter=1536, WindowWidth=3072, PatientBirthDate="19700101")
    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    (root / "images" / "cju0001xyz.jpg").unlink()
    dicom(root / "images" / "cju0001xyz.dcm", rgb, "RGB")
    out = tmp_path / "m3ds"
    report = build(out, {"kvasir_seg": base})
    assert report["sources"]["kvasir_seg"]["total"] == 10
    data = _all_bytes(out)
    for secret in (b"SECRET-4711", b"Doe^Jane", b"19700101", b"DICM"):
        assert secret not in data
    samples = {s.id: s for split in ("train", "val", "test") for s in read_split(out, split)}
    gray, colour = samples["kvasir_seg-cju0000xyz"], samples["kvasir_seg-cju0001xyz"]
    assert gray.image == "images/kvasir_seg/cju0000xyz.png"
    assert "images/cju0000xyz.dcm" in gray.source.files  # provenance: the original path
    with Image.open(out / gray.image) as im:
        assert im.format == "PNG" and im.mode == "I;16" and not im.info.get("exif")  # 16-bit for a 12-bit source
    shown = read_image(root / "images" / "cju0000xyz.dcm").astype(int)
    assert np.abs(read_image(out / gray.image).astype(int) - shown).max() <= 1  # 16-bit rounding only
    with Image.open(out / colour.image) as im:
        assert im.mode == "RGB"
    np.testing.assert_array_equal(read_image(out / colour.image), rgb)
    assert verify(out) == (10, [])


def test_images_are_reencoded_never_linked(tmp_path):
    base, root = _kvasir(tmp_path)
    src = root / "images" / "cju0002xyz.jpg"
    exif = Image.Exif()
    exif[0x010E] = "patient SECRET-4711"  # ImageDescription
    Image.open(src).save(src, exif=exif.tobytes(), quality=95)
    out = tmp_path / "m3ds"
    build(out, {"kvasir_seg": base})
    written = out / "images" / "kvasir_seg" / "cju0002xyz.png"
    assert written.stat().st_nlink == 1 and written.stat().st_ino != src.stat().st_ino
    assert b"SECRET" not in _all_bytes(out)
    np.testing.assert_array_equal(read_image(written), read_image(src))
    before = written.read_bytes()
    Image.new("RGB", (48, 32), "red").save(src)  # a later edit of the source leaves the dataset alone
    assert written.read_bytes() == before


def test_export_never_embeds_dicom_bytes(tmp_path, synth_m3ds):
    pytest.importorskip("pyarrow", reason="the [parquet] extra is not installed")
    import pyarrow.parquet as pq

    from sim4seg.data.export import export_parquet

    root = tmp_path / "ds"
    shutil.copytree(synth_m3ds, root)
    lines = (root / "test.jsonl").read_text(encoding="utf-8").splitlines()
    first = read_split(root, "test")[0]
    arr = read_image(root / first.image)[..., 0].astype(np.uint16)
    dcm = dicom(root / "images" / "legacy.dcm", arr)  # a manifest written by hand pointing at DICOM
    lines[0] = lines[0].replace(f'"image": "{first.image}"', '"image": "images/legacy.dcm"')
    (root / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    export_parquet(root, tmp_path / "pq")
    shards = sorted((tmp_path / "pq" / "data").glob("test-*.parquet"))
    table = [r for shard in shards for r in pq.read_table(shard).to_pylist()]
    row = next(r for r in table if r["id"] == first.id)
    assert row["image"]["path"] == "images/legacy.png" and row["image"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    assert shards and not any(b"SECRET" in shard.read_bytes() for shard in shards)
    assert dcm.is_file()


def test_passed_over_files_are_reported(tmp_path):
    base, root = _kvasir(tmp_path)
    os.mkfifo(root / "images" / "pipe.jpg")
    os.symlink("loop2.jpg", root / "images" / "loop1.jpg")
    os.symlink("loop1.jpg", root / "images" / "loop2.jpg")
    shutil.copy(root / "masks" / "cju0000xyz.jpg", root / "masks" / "orphan.jpg")  # no image of that name
    report = build(tmp_path / "m3ds", {"kvasir_seg": base})
    skipped = {s["file"]: s["reason"] for s in report["sources"]["kvasir_seg"]["skipped"]}
    assert skipped["images/pipe.jpg"] == "a FIFO (named pipe), not a file"
    assert skipped["images/loop1.jpg"] == "symbolic link loop"
    assert skipped["images/loop2.jpg"] == "symbolic link loop"
    assert skipped["masks/orphan.jpg"].startswith("mask file without its image")
    assert report["sources"]["kvasir_seg"]["total"] == 10


def test_symlinks_are_followed_only_within_the_root(tmp_path):
    base, root = _kvasir(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(root / "images" / "cju0003xyz.jpg", outside / "x.jpg")
    os.symlink(outside / "x.jpg", root / "images" / "cju0003xyz.jpg")  # leads outside: refused
    shutil.copy(root / "images" / "cju0004xyz.jpg", root / "spare.jpg")
    (root / "images" / "cju0004xyz.jpg").unlink()
    os.symlink(root / "spare.jpg", root / "images" / "cju0004xyz.jpg")  # stays inside: followed
    report = build(tmp_path / "m3ds", {"kvasir_seg": base})
    r = report["sources"]["kvasir_seg"]
    skipped = {s["file"]: s["reason"] for s in r["skipped"]}
    assert "outside the dataset folder" in skipped["images/cju0003xyz.jpg"]
    assert r["total"] == 9
    ids = {s.id for split in ("train", "val", "test") for s in read_split(tmp_path / "m3ds", split)}
    assert "kvasir_seg-cju0004xyz" in ids and "kvasir_seg-cju0003xyz" not in ids
