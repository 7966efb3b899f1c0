"""TN3K (Gong et al. 2023): thyroid nodule ultrasound, JPEG masks (thresholded).

``tn3k/{trainval,test}-{image,mask}/0000.jpg``. Val = the ``val`` indices of
``tn3k-trainval-fold0.json`` (indices into the numerically sorted trainval list; the
other trainval images are train), test = the official test set. Labels (0 benign,
1 malignant) from ``label4trainval.csv`` / ``label4test.csv`` (no header, maybe a
byte-order mark), looked for in the dataset folder and its parent.
"""

from __future__ import annotations

from pathlib import Path

from sim4seg.data.sources._base import (
    Item,
    Scan,
    find_root,
    is_image,
    list_images,
    numeric_key,
    read_csv_rows,
    read_json,
    rel,
)
from sim4seg.errors import InputError

NAME = SUBSET = "tn3k"
FOLD = 0
DIRS = ("trainval-image", "trainval-mask", "test-image", "test-mask")
EXTRA = (f"tn3k-trainval-fold{FOLD}.json", "label4trainval.csv", "label4test.csv")
LAYOUT = "tn3k/{trainval,test}-{image,mask}/, tn3k-trainval-fold0.json, label4trainval.csv, label4test.csv"


def _find(root: Path, name: str) -> Path | None:
    for d in (root, root.parent):
        if (d / name).is_file():
            return d / name
    return None


def locate(path: str | Path) -> Path:
    root = find_root(path, DIRS, wrappers=("tn3k", "TN3K"), what=NAME)
    missing = [n for n in EXTRA if _find(root, n) is None]
    if missing:
        raise InputError(f"{NAME}: expected {missing} in this folder or its parent; not found", root)
    return root


def read_labels(path: Path) -> dict[str, str | None]:
    out = {}
    for row in read_csv_rows(path):
        value = row[1].strip() if len(row) > 1 else ""
        label = {"0": "benign", "1": "malignant", "0.0": "benign", "1.0": "malignant"}.get(value)
        out[Path(row[0]).stem] = label
    return out


def read_fold(path: Path, n: int) -> set[int]:
    d = read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("val"), list):
        raise InputError("expected an object with a 'val' list of indices", path)
    bad = [i for i in d["val"] if not isinstance(i, int) or not 0 <= i < n]
    if bad:
        raise InputError(f"val indices {bad[:5]} out of range for {n} trainval images", path)
    return set(d["val"])


def scan(root: Path, seed: int) -> Scan:
    scan = Scan()
    for part in ("trainval", "test"):
        labels_path = _find(root, f"label4{part}.csv")
        labels = read_labels(labels_path)
        images = sorted(list_images(root / f"{part}-image"), key=numeric_key)
        val = read_fold(_find(root, EXTRA[0]), len(images)) if part == "trainval" else set()
        masks = {p.stem: p for p in (root / f"{part}-mask").iterdir() if is_image(p)}
        for i, img in enumerate(images):
            split = "test" if part == "test" else "val" if i in val else "train"
            mask = masks.get(img.stem)
            if mask is None:
                scan.skip(rel(img, root), f"no mask {part}-mask/{img.stem}.*")
                continue
            label = labels.get(img.stem)
            if label is None:
                scan.skip(rel(img, root), f"no 0/1 label in {labels_path.name}")
                continue
            scan.items.append(
                Item(
                    subset=SUBSET,
                    key=f"{part}-{img.stem}",
                    label=label,
                    image=str(img),
                    files=[rel(img, root), rel(mask, root), labels_path.name],
                    mask_from="pixel",
                    mask_files=[str(mask)],
                    split=split,
                )
            )
    return scan
