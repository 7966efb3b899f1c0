"""Annotation formats shared by several sources: COCO JSON, YOLO label files, ``data.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sim4seg.data.sources._base import read_json
from sim4seg.errors import InputError


@dataclass
class Coco:
    images: dict[int, dict]
    """image id → ``{"file_name", "width", "height"}``"""
    anns: dict[int, list[dict]] = field(default_factory=dict)
    """image id → annotations of the wanted category"""


def load_coco(path: Path, category: str) -> Coco:
    """Read a COCO file keeping annotations of the category named ``category`` (any id)."""
    d = read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("images"), list) or not isinstance(d.get("annotations"), list):
        raise InputError("not a COCO file: expected 'images' and 'annotations' lists", path)
    cats = {c.get("id"): str(c.get("name", "")) for c in d.get("categories", []) if isinstance(c, dict)}
    wanted = {cid for cid, name in cats.items() if name.strip().lower() == category.lower()}
    if not wanted and len(cats) == 1:
        wanted = set(cats)
    if not wanted:
        raise InputError(f"no category named {category!r} (categories: {sorted(cats.values())})", path)
    images = {}
    for im in d["images"]:
        if isinstance(im, dict) and "id" in im and "file_name" in im:
            images[im["id"]] = im
    coco = Coco(images=images)
    for a in d["annotations"]:
        if isinstance(a, dict) and a.get("category_id") in wanted:
            coco.anns.setdefault(a.get("image_id"), []).append(a)
    return coco


def coco_polygons(ann: dict) -> tuple[list[list[float]], str | None]:
    """The polygon parts of one COCO annotation, or why it cannot be used."""
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        return [], "RLE segmentation (expected polygons)"
    if not isinstance(seg, list) or not seg:
        return [], "annotation has no segmentation polygon"
    if all(isinstance(v, (int, float)) for v in seg):
        seg = [seg]
    parts = []
    for part in seg:
        if not isinstance(part, list) or len(part) % 2 or not all(isinstance(v, (int, float)) for v in part):
            return [], "malformed polygon (expected a flat list of x, y numbers)"
        parts.append([float(v) for v in part])
    return parts, None


def read_names(path: Path) -> list[str]:
    """Class names of a YOLO ``data.yaml`` (list form or ``{id: name}`` form)."""
    import yaml

    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"cannot read data.yaml: {e}", path) from None
    names = d.get("names") if isinstance(d, dict) else None
    if isinstance(names, dict):
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            names = None
    if not isinstance(names, list) or not names:
        raise InputError("data.yaml has no 'names' list", path)
    return [str(n) for n in names]


@dataclass
class YoloLine:
    cls: int
    values: list[float]
    """4 values (``cx cy w h``) for a box, an even number >= 6 for a polygon (normalised)."""
    line: int


def read_yolo(path: Path, n_classes: int) -> tuple[list[YoloLine], list[tuple[int, str]]]:
    """Rows of a YOLO label file and ``(line, problem)`` for each unusable row."""
    rows, bad = [], []
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    for i, raw in enumerate(text.splitlines(), 1):
        parts = raw.split()
        if not parts:
            continue
        try:
            cls = int(float(parts[0]))
            values = [float(v) for v in parts[1:]]
        except ValueError:
            bad.append((i, "non-numeric value"))
            continue
        if not 0 <= cls < n_classes:
            bad.append((i, f"class {cls} not in data.yaml ({n_classes} names)"))
        elif len(values) == 4 or (len(values) >= 6 and len(values) % 2 == 0):
            rows.append(YoloLine(cls, values, i))
        else:
            bad.append((i, f"{len(values)} coordinates (expected 4 for a box or an even number >= 6 for a polygon)"))
    return rows, bad


def box_corners(cx: float, cy: float, w: float, h: float) -> list[float]:
    """YOLO ``cx cy w h`` → ``[x0, y0, x1, y1]``."""
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def bounds(values: list[float]) -> list[float]:
    """``[x0, y0, x1, y1]`` of a flat polygon."""
    xs, ys = values[0::2], values[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]
