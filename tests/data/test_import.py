"""``data import`` (matching by stem, unmatched files reported, CSV splits, adding to an existing M3DS, errors)
and ``--max-side`` for ``data build`` and ``data import`` (downscaled images and masks, original size kept)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim4seg.apps.cli import main
from sim4seg.data.build import build
from sim4seg.data.importer import import_folder
from sim4seg.data.io import read_image, read_mask
from sim4seg.data.schema import Sample, load_split, read_info, read_split
from sim4seg.data.verify import verify
from sim4seg.errors import InputError


def _trees():
    """The fixture trees of the public sources (``tests/data/sources/trees.py``)."""
    import importlib.util
    import sys

    name = "sim4seg_test_source_trees"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "sources" / "trees.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _folder(tmp: Path, n: int = 12) -> Path:
    """``n`` images ``c00..`` with masks ``c00_mask.png``; labels a/b, and ``none`` (no mask file) every 4th."""
    d = tmp / "mine"
    (d / "imgs").mkdir(parents=True)
    (d / "msks").mkdir()
    rows = ["filename,diagnosis"]
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)
        Image.fromarray(img).save(d / "imgs" / f"c{i:02d}.png")
        label = "none" if i % 4 == 0 else "a" if i % 2 else "b"
        if label != "none":
            m = np.zeros((40 + i, 50), np.uint8)
            m[5:15, 10:30] = 255
            Image.fromarray(m).save(d / "msks" / f"c{i:02d}_mask.png")
        rows.append(f"c{i:02d},{label}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    return d


def test_import_matches_reports_and_splits(tmp_path, capsys):
    d = _folder(tmp_path)
    (d / "imgs" / "lonely.png").write_bytes((d / "imgs" / "c01.png").read_bytes())  # no label, no mask
    (d / "msks" / "orphan.png").write_bytes((d / "msks" / "c01_mask.png").read_bytes())  # no image
    (d / "labels.csv").write_text((d / "labels.csv").read_text() + "ghost,a\nc01,b\n")  # no image; a second row
    Image.new("L", (7, 7)).save(d / "msks" / "c02_mask.png")  # wrong size
    out = tmp_path / "m3ds"
    args = [
        "data",
        "import",
        "--images",
        str(d / "imgs"),
        "--masks",
        str(d / "msks"),
        "--labels",
        str(d / "labels.csv"),
        "--no-finding",
        "none",
        "--subset",
        "mine",
        "--modality",
        "dermoscopy",
        "--target",
        "skin lesion",
        "--out",
        str(out),
    ]
    assert main(args) == 1  # files were left out
    text = capsys.readouterr().out
    for what in (
        "skipped imgs/lonely.png: no row in the labels CSV",
        "skipped msks/orphan.png: mask without an image",
        "labels CSV: ghost: a row without an image",
        "labels.csv:15: a second row for 'c01'",
        "mask is 7x7 but the image is 50x42",
    ):
        assert what in text, what
    assert "checked 11 record(s) of" in text and ": OK;" in text
    info = read_info(out)
    mine = info.subsets["mine"]
    assert mine.labels == ("a", "b", "none") and mine.no_finding == "none" and mine.modality == "dermoscopy"
    samples = [s for split in ("train", "val", "test") for s in read_split(out, split)]
    assert len(samples) == 11 and {s.split for s in samples} == {"train", "val", "test"}
    by_id = {s.id: s for s in samples}
    assert by_id["mine-c00"].source.mask_from == "empty" and not read_mask(out / by_id["mine-c00"].mask).any()
    assert by_id["mine-c01"].diagnosis == "a" and "skin lesion" in by_id["mine-c01"].query
    assert by_id["mine-c01"].answers.diagnosis.endswith("Diagnosis: a.")
    report = json.loads((out / "import_mine_report.json").read_text())
    assert len(report["skipped"]) == 5 and report["settings"]["splits"] == "stratified"
    # a re-run resumes; the splits are a pure function of the seed
    assert main(args) == 1
    assert json.loads((out / "import_mine_report.json").read_text())["reused"] == 11
    assert {s.id: s.split for split in ("train", "val", "test") for s in read_split(out, split)} == {
        s.id: s.split for s in samples
    }


def test_import_beside_an_existing_m3ds_with_csv_splits(synth_m3ds, tmp_path):
    out = tmp_path / "m3ds"
    shutil.copytree(synth_m3ds, out)
    before = {split: len(read_split(out, split)) for split in ("train", "val", "test")}
    d = _folder(tmp_path, 6)
    rows = (d / "labels.csv").read_text().splitlines()
    splits = ["train", "train", "train", "val", "test", "test"]
    (d / "labels.csv").write_text("\n".join([rows[0] + ",split"] + [f"{r},{s}" for r, s in zip(rows[1:], splits)]))
    rep = import_folder(
        out, d / "imgs", d / "msks", labels_csv=d / "labels.csv", subset="mine", modality="xray", no_finding="none"
    )
    assert rep["settings"]["splits"] == "csv"
    info = read_info(out)
    assert "mine" in info.subsets and "busi" in info.subsets
    for split, n in zip(("train", "val", "test"), (3, 1, 2)):
        rows = read_split(out, split)
        assert sum(s.subset == "mine" for s in rows) == n and len(rows) == before[split] + n
    assert verify(out, decode=False)[1] == []
    # importing again replaces the subset, the others stay
    import_folder(
        out, d / "imgs", d / "msks", labels_csv=d / "labels.csv", subset="mine", modality="xray", no_finding="none"
    )
    assert sum(len(read_split(out, s)) for s in ("train", "val", "test")) == sum(before.values()) + 6


def test_import_errors(tmp_path):
    d = _folder(tmp_path, 4)
    kw = dict(labels_csv=d / "labels.csv", modality="xray")
    with pytest.raises(InputError, match="one of the paper's subsets"):
        import_folder(tmp_path / "o", d / "imgs", d / "msks", subset="busi", **kw)
    with pytest.raises(InputError, match="lower-case"):
        import_folder(tmp_path / "o", d / "imgs", d / "msks", subset="My Data", **kw)
    with pytest.raises(InputError, match="masks folder not found"):
        import_folder(tmp_path / "o", d / "imgs", d / "nope", subset="mine", **kw)
    with pytest.raises(InputError, match="--no-finding 'x' is not among the labels"):
        import_folder(tmp_path / "o", d / "imgs", d / "msks", subset="mine", no_finding="x", **kw)
    (d / "bad.csv").write_text("path,what\nc00,a\n")
    with pytest.raises(InputError, match=r"bad.csv:1: the first row must name an image column"):
        import_folder(tmp_path / "o", d / "imgs", d / "msks", subset="mine", modality="xray", labels_csv=d / "bad.csv")
    with pytest.raises(InputError, match="no image was matched"):
        import_folder(tmp_path / "o", d / "imgs", tmp_path, subset="mine", modality="xray", label="a")
    with pytest.raises(InputError, match="--max-side must be at least 16"):
        import_folder(tmp_path / "o", d / "imgs", d / "msks", subset="mine", max_side=4, **kw)


def test_import_max_side_keeps_the_original_size(tmp_path):
    d = _folder(tmp_path, 4)
    out = tmp_path / "m3ds"
    import_folder(
        out,
        d / "imgs",
        d / "msks",
        labels_csv=d / "labels.csv",
        subset="mine",
        modality="xray",
        no_finding="none",
        max_side=25,
    )
    samples = [s for split in ("train", "val", "test") for s in read_split(out, split)]
    for s in samples:
        i = int(s.id[-2:])
        src_mask = read_mask(d / "msks" / f"c{i:02d}_mask.png") if s.diagnosis != "none" else None
        assert s.source.original_size == [40 + i, 50]
        img, mask = read_image(out / s.image), read_mask(out / s.mask)
        assert img.shape[:2] == mask.shape == (round((40 + i) / 2), 25)
        if src_mask is not None:  # nearest: the mask is the source mask's every other pixel
            assert mask.sum() == pytest.approx(src_mask.sum() / 4, rel=0.2)
    # the record round-trips; records of full-size images carry no original_size at all
    s, subsets = samples[0], read_info(out).subsets
    assert Sample.from_json(json.loads(json.dumps(s.to_json())), subsets).source.original_size == s.source.original_size
    s.source.original_size = None
    assert "original_size" not in s.to_json()["source"]
    with pytest.raises(ValueError, match="original_size must be"):
        Sample.from_json({**s.to_json(), "source": {**s.to_json()["source"], "original_size": [0, 3]}}, subsets)


def test_build_max_side_downscales_and_resumes(tmp_path, capsys):
    src = _trees().write_kvasir_seg(tmp_path / "src")
    out = tmp_path / "m3ds"
    rep = build(out, {"kvasir_seg": src}, max_side=24)
    assert rep["max_side"] == 24 and rep["sources"]["kvasir_seg"]["images"] == {
        "resized": rep["totals"]["train"] + rep["totals"]["val"] + rep["totals"]["test"]
    }
    info, samples = load_split(out, "train")
    assert info.build["max_side"] == 24
    for s in samples:
        h, w = s.source.original_size
        assert max(read_image(out / s.image).shape[:2]) == 24 and read_mask(out / s.mask).shape == (
            round(h * 24 / max(h, w)),
            round(w * 24 / max(h, w)),
        )
        assert s.image.endswith(".png")  # every stored image is re-encoded as PNG (no source metadata)
    assert (
        build(out, {"kvasir_seg": src}, max_side=24)["sources"]["kvasir_seg"]["reused"]
        == rep["sources"]["kvasir_seg"]["converted"]
    )
    # a different --max-side redoes the images; none: re-encoded at full size again, no original_size
    again = build(out, {"kvasir_seg": src})
    assert again["sources"]["kvasir_seg"]["reused"] == 0
    assert all(s.source.original_size is None for s in load_split(out, "train")[1])
    assert main(
        [
            "data",
            "build",
            "--source",
            f"kvasir_seg={src}",
            "--out",
            str(tmp_path / "cli"),
            "--max-side",
            "20",
            "--workers",
            "1",
        ]
    ) in (0, 1)
    assert read_info(tmp_path / "cli").build["max_side"] == 20
