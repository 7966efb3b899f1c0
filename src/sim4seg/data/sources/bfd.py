"""Bone Fracture Detection (Darabi 2024), YOLOv8 segmentation export.

Layout: ``BoneFractureYolo8/{train,valid,test}/{images,labels}/`` + ``data.yaml``. Rows
are normalised polygons (3-8 vertices, maybe closed by repeating the first point); a
5-value row is a box and becomes a 4-point polygon. Class names come from the
``data.yaml`` found (7 names, or 6 with shifted ids in some copies). Empty label files
are excluded: BFD's label set has no no-finding label.
"""

from __future__ import annotations

from pathlib import Path

from sim4seg.data.sources._base import Scan, find_root
from sim4seg.data.sources._yolo import FOLDERS, check_layout, class_labels, scan_yolo

NAME = SUBSET = "bfd"
LAYOUT = "BoneFractureYolo8/data.yaml and BoneFractureYolo8/{train,valid,test}/{images,labels}/"


def canonical(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").split())


def locate(path: str | Path) -> Path:
    root = find_root(
        path, ("data.yaml", *(f"{f}/images" for f, _ in FOLDERS)), wrappers=("BoneFractureYolo8",), what=NAME
    )
    check_layout(root, NAME)
    class_labels(root, SUBSET, canonical)
    return root


def scan(root: Path, seed: int) -> Scan:
    return scan_yolo(root, SUBSET, class_labels(root, SUBSET, canonical), "polygon", None)
