"""ISBI 2016 (ISIC 2016 challenge, parts 1 and 3): lesion masks, benign/malignant.

Official splits are Training (900) and Test (379). Table 1 (899/277/101) shows the
paper's val and test both come from the official test set, so val is carved from it
(seeded, stratified by label, 277/378 of it); the training set is untouched.
Training labels read ``ISIC_0000000,benign``; test labels ``ISIC_0000003,0.0`` with
1.0 = malignant.
"""

from __future__ import annotations

from pathlib import Path

from sim4seg.data.sources._base import Item, Scan, find_root, list_images, read_csv_rows, rel
from sim4seg.data.sources._splits import carve

NAME = SUBSET = "isbi2016"
PARTS = (("Training", "train"), ("Test", "test"))
VAL_FROM_TEST = 277 / 378


def _paths(part: str) -> tuple[str, str, str]:
    return (
        f"ISBI2016_ISIC_Part1_{part}_Data",
        f"ISBI2016_ISIC_Part1_{part}_GroundTruth",
        f"ISBI2016_ISIC_Part3_{part}_GroundTruth.csv",
    )


LAYOUT = ", ".join(p for part, _ in PARTS for p in _paths(part))


def locate(path: str | Path) -> Path:
    return find_root(path, tuple(p for part, _ in PARTS for p in _paths(part)), what=NAME)


def parse_label(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("benign", "malignant"):
        return v
    try:
        return "malignant" if float(v) >= 0.5 else "benign"
    except ValueError:
        return None


def read_labels(path: Path, scan: Scan, root: Path) -> dict[str, str]:
    out = {}
    for i, row in enumerate(read_csv_rows(path), 1):
        label = parse_label(row[1]) if len(row) >= 2 else None
        if label is None:
            if i > 1 or not row[0].lower().startswith(("image", "id", "name")):
                scan.skip(f"{rel(path, root)}:{i}", f"cannot read a label from {','.join(row)!r}")
            continue
        out[Path(row[0]).stem] = label
    return out


def find_mask(folder: Path, stem: str) -> Path | None:
    for suffix in ("_Segmentation", "_segmentation"):
        for ext in (".png", ".jpg", ".bmp"):
            p = folder / f"{stem}{suffix}{ext}"
            if p.is_file():
                return p
    return None


def scan(root: Path, seed: int) -> Scan:
    scan = Scan()
    for part, split in PARTS:
        data, gt, csv = _paths(part)
        labels = read_labels(root / csv, scan, root)
        for img in list_images(root / data):
            if img.stem.endswith("_superpixels"):
                continue
            mask = find_mask(root / gt, img.stem)
            if mask is None:
                scan.skip(rel(img, root), f"no mask {img.stem}_Segmentation.png in {gt}")
                continue
            if img.stem not in labels:
                scan.skip(rel(img, root), f"no label in {csv}")
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
    carve(scan.items, "test", "val", VAL_FROM_TEST, seed)
    return scan
