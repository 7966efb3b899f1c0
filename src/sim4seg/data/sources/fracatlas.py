"""FracAtlas (Abedeen et al. 2023): COCO polygons, body region from ``dataset.csv``.

Label of a fractured image (one with COCO polygons of category "fractured"): the body
region flagged in ``dataset.csv`` — ``hand``/``leg``/``hip``/``shoulder fracture``, or
``multi-region fracture`` when ``mixed`` is 1 or more than one region is flagged.
Images in ``images/Non_fractured`` without polygons are ``no fracture`` with an empty
mask. The polygons decide fractured-ness (the one image in ``Fractured/`` whose CSV
row says ``fractured=0`` but that has polygons is a fracture). Splits: the official
``Utilities/Fracture Split/{train,valid,test}.csv`` for the images they list; the
others (all non-fractured images) get a seeded stratified split in Table 1's ratio.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sim4seg.data.sources._base import Item, Scan, find_root, list_images, read_csv_rows, rel, require, slug
from sim4seg.data.sources._formats import coco_polygons, load_coco
from sim4seg.data.sources._splits import stratified_split
from sim4seg.data.subsets import SUBSETS
from sim4seg.errors import InputError

log = logging.getLogger(__name__)

NAME = SUBSET = "fracatlas"
COCO = "Annotations/COCO JSON/COCO_fracture_masks.json"
SPLIT_DIR = "Utilities/Fracture Split"
REGIONS = ("hand", "leg", "hip", "shoulder")
LAYOUT = f"images/Fractured/, images/Non_fractured/, dataset.csv, {COCO}, {SPLIT_DIR}/{{train,valid,test}}.csv"


def locate(path: str | Path) -> Path:
    markers = ("images/Fractured", "images/Non_fractured", "dataset.csv", COCO)
    root = find_root(path, markers, wrappers=("FracAtlas",), what=NAME)
    require(root, *(f"{SPLIT_DIR}/{s}.csv" for s in ("train", "valid", "test")), what=NAME)
    return root


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """``dataset.csv`` → image stem → row (columns by header name)."""
    rows = read_csv_rows(path)
    if not rows or "image_id" not in rows[0]:
        raise InputError("expected a header with an 'image_id' column", path, 1)
    head = rows[0]
    missing = [c for c in (*REGIONS, "mixed", "fractured") if c not in head]
    if missing:
        raise InputError(f"missing column(s) {missing}", path, 1)
    return {Path(r[head.index("image_id")]).stem: dict(zip(head, r)) for r in rows[1:] if len(r) >= len(head)}


def _flag(row: dict[str, str], col: str) -> bool:
    try:
        return float(row.get(col, "0") or 0) >= 0.5
    except ValueError:
        return False


def region_label(row: dict[str, str]) -> str | None:
    regions = [r for r in REGIONS if _flag(row, r)]
    if _flag(row, "mixed") or len(regions) > 1:
        return "multi-region fracture"
    return f"{regions[0]} fracture" if regions else None


def official_splits(root: Path) -> dict[str, str]:
    out = {}
    for fname, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        path = root / SPLIT_DIR / f"{fname}.csv"
        rows = read_csv_rows(path)
        col = rows[0].index("image_id") if rows and "image_id" in rows[0] else 0
        start = 1 if rows and "image_id" in rows[0] else 0
        for r in rows[start:]:
            out.setdefault(Path(r[col]).stem, split)
    return out


def scan(root: Path, seed: int) -> Scan:
    scan = Scan()
    table = read_table(root / "dataset.csv")
    coco = load_coco(root / COCO, "fractured")
    by_name = {Path(im["file_name"]).name: im for im in coco.images.values()}
    splits = official_splits(root)
    seen = set()
    for folder in ("Fractured", "Non_fractured"):
        for img in list_images(root / "images" / folder):
            seen.add(img.name)
            row = table.get(img.stem)
            if row is None:
                scan.skip(rel(img, root), "no row in dataset.csv")
                continue
            entry = by_name.get(img.name)
            anns = coco.anns.get(entry["id"], []) if entry else []
            item = Item(
                subset=SUBSET,
                key=slug(img.stem),
                label="",
                image=str(img),
                files=[rel(img, root), "dataset.csv"],
                split=splits.get(img.stem),
            )
            for a in anns:
                parts, why = coco_polygons(a)
                ann = f"{COCO}#{a.get('id')}"
                if why:
                    scan.skip(ann, why)
                for p in parts:
                    item.polygons.append(p)
                    item.ann_ids.append(ann)
            if item.polygons:
                label = region_label(row)
                if label is None:
                    scan.skip(rel(img, root), "fracture polygons but no body region flagged in dataset.csv")
                    continue
                if not _flag(row, "fractured"):
                    log.info(
                        "%s: dataset.csv says fractured=0 but it has fracture polygons; using the polygons", img.name
                    )
                item.label, item.mask_from, item.files = label, "polygon", item.files + [COCO]
                if entry and entry.get("width") and entry.get("height"):
                    item.ann_size = (int(entry["width"]), int(entry["height"]))
            elif folder == "Fractured" or _flag(row, "fractured"):
                scan.skip(rel(img, root), "fractured image without a usable COCO polygon")
                continue
            else:
                item.label, item.mask_from = SUBSETS[SUBSET].no_finding, "empty"
            scan.items.append(item)
    for entry in coco.images.values():
        if Path(entry["file_name"]).name not in seen and coco.anns.get(entry["id"]):
            scan.skip(f"{COCO}: {entry['file_name']}", "annotated image not found in images/")
    rest = [it for it in scan.items if it.split is None]
    stratified_split(rest, SUBSETS[SUBSET].paper_sizes, seed)
    return scan
