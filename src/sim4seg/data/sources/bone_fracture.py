"""Roboflow100 bone-fracture-7fylg, YOLO export: boxes become box masks.

Layout: ``{train,valid,test}/{images,labels}/`` + ``data.yaml`` (``names: [angle,
fracture, line, messed_up_angle]``). A polygon row (not expected) is reduced to its
bounding box. Empty label files are "no fracture" samples with an empty mask.
"""

from __future__ import annotations

from pathlib import Path

from sim4seg.data.sources._base import Scan, find_root
from sim4seg.data.sources._yolo import FOLDERS, check_layout, class_labels, scan_yolo
from sim4seg.data.subsets import SUBSETS

NAME = SUBSET = "bone_fracture"
LAYOUT = "data.yaml and {train,valid,test}/{images,labels}/ (Roboflow YOLO export)"


def canonical(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("-", " ")


def locate(path: str | Path) -> Path:
    root = find_root(path, ("data.yaml", *(f"{f}/images" for f, _ in FOLDERS)), what=NAME)
    check_layout(root, NAME)
    class_labels(root, SUBSET, canonical)
    return root


def scan(root: Path, seed: int) -> Scan:
    return scan_yolo(root, SUBSET, class_labels(root, SUBSET, canonical), "box", SUBSETS[SUBSET].no_finding)
