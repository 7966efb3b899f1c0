"""BUSI (Al-Dhabyani et al. 2020): breast ultrasound, label = folder.

``Dataset_BUSI_with_GT/{benign,malignant,normal}/<name> (<n>).png`` with masks
``<name> (<n>)_mask.png`` and sometimes ``_mask_1.png``, ``_mask_2.png`` (all OR-ed;
gray, RGB or RGBA). Normal images are ``normal`` samples with an empty mask (their
all-black mask files are not read). No official split: seeded, stratified by label,
in Table 1's ratio 532/55/60.
"""

from __future__ import annotations

import re
from pathlib import Path

from sim4seg.data.sources._base import Item, Scan, find_root, list_images, rel, slug
from sim4seg.data.sources._splits import stratified_split
from sim4seg.data.subsets import SUBSETS

NAME = SUBSET = "busi"
LABELS = ("benign", "malignant", "normal")
LAYOUT = "Dataset_BUSI_with_GT/{benign,malignant,normal}/<name> (<n>).png and <name> (<n>)_mask*.png"
_MASK = re.compile(r"^(?P<stem>.+)_mask(_\d+)?$")


def locate(path: str | Path) -> Path:
    return find_root(path, LABELS, wrappers=("Dataset_BUSI_with_GT",), what=NAME)


def scan(root: Path, seed: int) -> Scan:
    scan = Scan()
    for label in LABELS:
        files = list_images(root / label)
        masks: dict[str, list[Path]] = {}
        for p in files:
            m = _MASK.match(p.stem)
            if m:
                masks.setdefault(m.group("stem"), []).append(p)
        for img in files:
            if _MASK.match(img.stem):
                continue
            item = Item(subset=SUBSET, key=slug(img.stem), label=label, image=str(img), files=[rel(img, root)])
            found = sorted(masks.get(img.stem, []))
            if label != SUBSETS[SUBSET].no_finding:
                if not found:
                    scan.skip(rel(img, root), f"no mask {img.stem}_mask.png beside it")
                    continue
                item.mask_from, item.mask_files = "pixel", [str(p) for p in found]
                item.files += [rel(p, root) for p in found]
                item.ann_ids = [p.name for p in found]
            scan.items.append(item)
    stratified_split(scan.items, SUBSETS[SUBSET].paper_sizes, seed)
    return scan
