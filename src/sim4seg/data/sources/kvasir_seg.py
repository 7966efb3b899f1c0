"""Kvasir-SEG (Jha et al. 2020): polyp images and lossy JPEG masks (thresholded at 127).

No official split: a seeded split in Table 1's ratio 801/99/100 (exact for the 1000
images). ``kavsir_bboxes.json`` is not needed (the masks are complete).
"""

from __future__ import annotations

from pathlib import Path

from sim4seg.data.sources._base import Item, Scan, find_root, is_image, list_images, rel, slug
from sim4seg.data.sources._splits import stratified_split
from sim4seg.data.subsets import SUBSETS

NAME = SUBSET = "kvasir_seg"
LAYOUT = "Kvasir-SEG/images/<id>.jpg and Kvasir-SEG/masks/<id>.jpg"


def locate(path: str | Path) -> Path:
    return find_root(path, ("images", "masks"), wrappers=("Kvasir-SEG",), what=NAME)


def scan(root: Path, seed: int) -> Scan:
    scan = Scan()
    masks = {p.stem: p for p in (root / "masks").iterdir() if is_image(p)}
    for img in list_images(root / "images"):
        mask = masks.get(img.stem)
        if mask is None:
            scan.skip(rel(img, root), f"no mask masks/{img.stem}.*")
            continue
        scan.items.append(
            Item(
                subset=SUBSET,
                key=slug(img.stem),
                label="polyp",
                image=str(img),
                files=[rel(img, root), rel(mask, root)],
                mask_from="pixel",
                mask_files=[str(mask)],
            )
        )
    stratified_split(scan.items, SUBSETS[SUBSET].paper_sizes, seed)
    return scan
