"""ISIC 2017 challenge (parts 1 and 3): lesion masks; melanoma / seborrheic keratosis / nevus.

Official splits Training/Validation/Test (2000/150/600, as Table 1). Labels from the
Part 3 CSV (``image_id,melanoma,seborrheic_keratosis``, floats): melanoma if
``melanoma`` is 1, seborrheic keratosis if that is 1, nevus if both are 0; a row with
both set is skipped. ``*_superpixels.png`` and non-image files are ignored.
"""

from __future__ import annotations

from pathlib import Path

from sim4seg.data.sources._base import Item, Scan, find_root, list_images, read_csv_rows, rel
from sim4seg.data.sources.isbi2016 import find_mask
from sim4seg.errors import InputError

NAME = SUBSET = "isic2017"
PARTS = (("Training", "train"), ("Validation", "val"), ("Test_v2", "test"))
LAYOUT = "ISIC-2017_{Training,Validation,Test_v2}_Data/, ..._Part1_GroundTruth/, ..._Part3_GroundTruth.csv"


def _paths(part: str) -> tuple[str, str, str]:
    return f"ISIC-2017_{part}_Data", f"ISIC-2017_{part}_Part1_GroundTruth", f"ISIC-2017_{part}_Part3_GroundTruth.csv"


def _part_name(root: Path, part: str) -> str:
    """``Test_v2`` as distributed; plain ``Test`` is accepted too."""
    if part == "Test_v2" and not (root / _paths(part)[0]).exists() and (root / _paths("Test")[0]).exists():
        return "Test"
    return part


def locate(path: str | Path) -> Path:
    path = Path(path)
    root = find_root(path, _paths("Training") + _paths("Validation"), what=NAME)
    test = _part_name(root, "Test_v2")
    find_root(root, _paths(test), what=NAME)
    return root


def read_labels(path: Path) -> dict[str, str | None]:
    rows = read_csv_rows(path)
    if not rows or rows[0][:3] != ["image_id", "melanoma", "seborrheic_keratosis"]:
        raise InputError("expected the header image_id,melanoma,seborrheic_keratosis", path, 1)
    out = {}
    for row in rows[1:]:
        try:
            mel, sk = float(row[1]) >= 0.5, float(row[2]) >= 0.5
        except (IndexError, ValueError):
            out[row[0]] = None
            continue
        out[row[0]] = None if mel and sk else "melanoma" if mel else "seborrheic keratosis" if sk else "nevus"
    return out


def scan(root: Path, seed: int) -> Scan:
    scan = Scan()
    for part, split in PARTS:
        data, gt, csv = _paths(_part_name(root, part))
        labels = read_labels(root / csv)
        for img in list_images(root / data):
            if img.stem.endswith("_superpixels"):
                continue
            mask = find_mask(root / gt, img.stem)
            if mask is None:
                scan.skip(rel(img, root), f"no mask {img.stem}_segmentation.png in {gt}")
                continue
            if img.stem not in labels:
                scan.skip(rel(img, root), f"no label in {csv}")
                continue
            if labels[img.stem] is None:
                scan.skip(rel(img, root), f"unusable label row in {csv} (both classes set or not numbers)")
                continue
            scan.items.append(
                Item(
                    subset=SUBSET,
                    key=img.stem,
                    label=labels[img.stem],
                    image=str(img),
                    files=[rel(img, root), rel(mask, root), csv],
                    mask_from="pixel",
                    mask_files=[str(mask)],
                    split=split,
                )
            )
    return scan
