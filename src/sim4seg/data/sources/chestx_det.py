"""ChestX-Det (Lian et al. 2021): 13 thoracic findings as polygons on NIH chest X-rays.

One sample per image: all finding polygons OR-ed into one mask, labelled with the
finding covering the largest total polygon area (ties: more instances, then by name);
every instance's finding is kept in ``source.annotation_ids``. (Table 1's 2967 samples
equal the number of images with findings, and the query names "the thoracic
abnormality", so one sample per finding would give one image several answers to the
same question.) Records with no finding become ``no finding`` samples with an empty
mask. Splits: official train/test JSONs; Table 1 (2478/388/101) shows val and test
both come from the official test set, so val is carved from it (388/489, seeded,
stratified). Images are looked up by file name anywhere under the given folder.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sim4seg.data.sources._base import Item, Scan, find_root, read_json, rel
from sim4seg.data.sources._raster import clean_polygon, polygon_area
from sim4seg.data.sources._splits import carve
from sim4seg.data.subsets import CHESTX_DET_FINDINGS, SUBSETS
from sim4seg.errors import InputError

NAME = SUBSET = "chestx_det"
FILES = (("ChestX_Det_train.json", "train"), ("ChestX_Det_test.json", "test"))
LAYOUT = "ChestX_Det_train.json, ChestX_Det_test.json and the NIH PNG images anywhere below"
VAL_FROM_TEST = 388 / 489


def locate(path: str | Path) -> Path:
    root = find_root(path, tuple(f for f, _ in FILES), what=NAME)
    if next(root.rglob("*.png"), None) is None:
        raise InputError(
            f"{NAME}: no PNG image found below this folder (expected the NIH images "
            "the JSON files name, e.g. 36199.png)",
            root,
        )
    return root


def canonical(sym: str) -> str:
    return " ".join(sym.strip().lower().replace("_", " ").split())


def scan(root: Path, seed: int) -> Scan:
    scan = Scan()
    index: dict[str, Path] = {}
    for p in sorted(root.rglob("*.png")):
        index.setdefault(p.name, p)
    seen: set[str] = set()
    for fname, split in FILES:
        records = read_json(root / fname)
        if not isinstance(records, list):
            raise InputError("expected a JSON list of records", root / fname)
        for n, rec in enumerate(records):
            where = f"{fname}[{n}]"
            if not isinstance(rec, dict) or not isinstance(rec.get("file_name"), str):
                scan.skip(where, "record without a file_name")
                continue
            name = rec["file_name"]
            if name in seen:
                scan.skip(f"{where} {name}", "image listed twice; first record kept")
                continue
            seen.add(name)
            img = index.get(Path(name).name)
            if img is None:
                scan.skip(f"{where} {name}", "image not found below the source folder")
                continue
            syms, polys = rec.get("syms") or [], rec.get("polygons") or []
            item = Item(
                subset=SUBSET, key=Path(name).stem, label="", image=str(img), files=[rel(img, root), fname], split=split
            )
            area: dict[str, float] = defaultdict(float)
            count: dict[str, int] = defaultdict(int)
            for k, sym in enumerate(syms):
                finding = canonical(str(sym))
                poly = polys[k] if k < len(polys) else None
                ann = f"{fname}[{n}]#{k}:{finding}"
                if finding not in CHESTX_DET_FINDINGS:
                    scan.skip(ann, f"unknown finding {sym!r}")
                    continue
                try:
                    flat = [float(v) for pt in poly for v in pt[:2]]
                except (TypeError, ValueError):
                    scan.skip(ann, "polygon is not a list of [x, y] points")
                    continue
                item.polygons.append(flat)
                item.ann_ids.append(ann)
                area[finding] += polygon_area(clean_polygon(flat))
                count[finding] += 1
            if item.polygons:
                item.mask_from = "polygon"
                item.label = sorted(area, key=lambda f: (-area[f], -count[f], f))[0]
            elif syms:
                scan.skip(f"{where} {name}", "no usable finding polygon")
                continue
            else:
                item.label, item.mask_from = SUBSETS[SUBSET].no_finding, "empty"
            scan.items.append(item)
    carve(scan.items, "test", "val", VAL_FROM_TEST, seed)
    return scan
