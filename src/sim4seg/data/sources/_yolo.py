"""Roboflow YOLO exports: ``{train,valid,test}/{images,labels}`` + ``data.yaml``.

Shared by ``bone_fracture`` (boxes) and ``bfd`` (polygons). One sample per image: all
its instances OR-ed, labelled with the class covering the largest total area (ties:
the lower class id). Roboflow augmentation copies (``<stem>.rf.<hash>``) are grouped
by ``<stem>`` and each group is put wholly in the split most of its copies came in.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from sim4seg.data.sources._base import Item, Scan, list_images, rel, require, slug
from sim4seg.data.sources._formats import bounds, box_corners, read_names, read_yolo
from sim4seg.data.sources._raster import clean_polygon, polygon_area
from sim4seg.data.sources._splits import vote_groups
from sim4seg.data.subsets import SUBSETS
from sim4seg.errors import InputError

log = logging.getLogger(__name__)

FOLDERS = (("train", "train"), ("valid", "val"), ("test", "test"))


def check_layout(root: Path, what: str) -> None:
    require(root, "data.yaml", *(f"{f}/{sub}" for f, _ in FOLDERS for sub in ("images", "labels")), what=what)


def class_labels(root: Path, subset: str, canonical: Callable[[str], str]) -> list[str]:
    """Canonical label of each class id, from the ``data.yaml`` found (6 or 7 names alike)."""
    names = read_names(root / "data.yaml")
    labels = [canonical(n) for n in names]
    unknown = [n for n, lb in zip(names, labels) if lb not in SUBSETS[subset].labels]
    if unknown:
        raise InputError(
            f"class name(s) {unknown} are not in the {subset} label set {list(SUBSETS[subset].labels)}",
            root / "data.yaml",
        )
    return labels


def augmentation_group(stem: str) -> str:
    return stem.split(".rf.")[0] if ".rf." in stem else stem


def _area(values: list[float]) -> float:
    if len(values) == 4:
        return abs(values[2] * values[3])
    return polygon_area(clean_polygon(values))


def scan_yolo(root: Path, subset: str, labels: list[str], kind: str, no_finding: str | None) -> Scan:
    """Items of a YOLO export; ``kind`` is ``box`` or ``polygon``; empty label files become
    ``no_finding`` samples, or are excluded when the subset has no such label."""
    scan = Scan()
    for folder, split in FOLDERS:
        for img in list_images(root / folder / "images"):
            label_file = root / folder / "labels" / f"{img.stem}.txt"
            if not label_file.is_file():
                scan.skip(rel(img, root), f"no label file (expected {rel(label_file, root)})")
                continue
            rows, bad = read_yolo(label_file, len(labels))
            for line, problem in bad:
                scan.skip(f"{rel(label_file, root)}:{line}", problem)
            files = [rel(img, root), rel(label_file, root)]
            item = Item(
                subset=subset,
                key=slug(img.stem),
                label="",
                image=str(img),
                files=files,
                split=split,
                group=augmentation_group(img.stem),
                coords="normalized",
            )
            if not rows:
                if bad:
                    scan.skip(rel(img, root), "no usable annotation line")
                elif no_finding is None:
                    scan.exclude(rel(img, root), f"empty label file and {subset} has no no-finding label")
                else:
                    item.label, item.mask_from = no_finding, "empty"
                    scan.items.append(item)
                continue
            area: dict[int, float] = defaultdict(float)
            for r in rows:
                area[r.cls] += _area(r.values)
                ann = f"{rel(label_file, root)}:{r.line}"
                if kind == "box":
                    item.boxes.append(box_corners(*r.values) if len(r.values) == 4 else bounds(r.values))
                elif len(r.values) == 4:
                    x0, y0, x1, y1 = box_corners(*r.values)
                    item.polygons.append([x0, y0, x1, y0, x1, y1, x0, y1])
                else:
                    item.polygons.append(list(r.values))
                item.ann_ids.append(ann)
            item.mask_from = kind
            item.label = labels[sorted(area.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]]
            scan.items.append(item)
    moved = vote_groups(scan.items)
    if moved:
        log.info("%s: moved %d augmentation copies so that no source image is in two splits", subset, moved)
    return scan
