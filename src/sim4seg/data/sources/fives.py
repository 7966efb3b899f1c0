"""FIVES (Kai et al. 2022): fundus photographs with vessel maps; label from the file name.

``{train,test}/{Original,Ground truth}/<n>_<X>.png`` ("Groud truth" accepted), X in
A (age-related macular degeneration), D (diabetic retinopathy), G (glaucoma), N
(normal). Normal images still have vessels, so they keep their vessel mask. Official
train/test (600/200); Table 1 (600/99/101) shows val and test both come from the
official test set, so val is carved from it (99/200, seeded, stratified).
"""

from __future__ import annotations

from pathlib import Path

from sim4seg.data.sources._base import Item, Scan, find_root, is_image, list_images, rel
from sim4seg.data.sources._splits import carve
from sim4seg.errors import InputError

NAME = SUBSET = "fives"
CODES = {"A": "age-related macular degeneration", "D": "diabetic retinopathy", "G": "glaucoma", "N": "normal"}
GT_NAMES = ("Ground truth", "Groud truth", "Ground Truth")
LAYOUT = "{train,test}/Original/<n>_<A|D|G|N>.png and {train,test}/Ground truth/ (or 'Groud truth')"
VAL_FROM_TEST = 99 / 200


def gt_dir(part: Path) -> Path | None:
    return next((part / g for g in GT_NAMES if (part / g).is_dir()), None)


def locate(path: str | Path) -> Path:
    root = find_root(path, ("train/Original", "test/Original"), what=NAME)
    for part in ("train", "test"):
        if gt_dir(root / part) is None:
            raise InputError(f"{NAME}: expected {part}/Ground truth (or {part}/Groud truth); not found", root)
    return root


def scan(root: Path, seed: int) -> Scan:
    scan = Scan()
    for split in ("train", "test"):
        gt = gt_dir(root / split)
        masks = {p.stem: p for p in gt.iterdir() if is_image(p)}
        for img in list_images(root / split / "Original"):
            code = img.stem.rsplit("_", 1)[-1].upper() if "_" in img.stem else ""
            if code not in CODES:
                scan.skip(rel(img, root), "name does not end in _A, _D, _G or _N")
                continue
            mask = masks.get(img.stem)
            if mask is None:
                scan.skip(rel(img, root), f"no mask {rel(gt, root)}/{img.stem}.*")
                continue
            scan.items.append(
                Item(
                    subset=SUBSET,
                    key=f"{split}-{img.stem}",
                    label=CODES[code],
                    image=str(img),
                    files=[rel(img, root), rel(mask, root)],
                    mask_from="pixel",
                    mask_files=[str(mask)],
                    split=split,
                )
            )
    carve(scan.items, "test", "val", VAL_FROM_TEST, seed)
    return scan
