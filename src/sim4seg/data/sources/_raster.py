"""Polygons and boxes to masks, and the EXIF frame of annotations.

Convention (COCO's): pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)`` and belongs to a
shape when its centre ``(c + 0.5, r + 0.5)`` lies inside it (even-odd rule). A polygon
with positive area that covers no pixel centre (a hairline) is drawn as its outline
instead, so a thin annotation is never lost. Masks are ``HxW`` bool arrays.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# EXIF orientation → the PIL transpose that ``ImageOps.exif_transpose`` applies.
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def clean_polygon(flat: list[float]) -> np.ndarray:
    """``[x1, y1, ...]`` → ``Nx2`` float array without consecutive duplicates or a closing repeat."""
    pts = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return pts
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    pts = pts[keep]
    if len(pts) > 1 and np.all(pts[0] == pts[-1]):
        pts = pts[:-1]
    return pts


def polygon_area(pts: np.ndarray) -> float:
    """Absolute shoelace area of an ``Nx2`` polygon."""
    if len(pts) < 3:
        return 0.0
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def fill_polygon(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    """Even-odd scanline fill of an ``Nx2`` polygon on an ``HxW`` grid (pixel centres)."""
    out = np.zeros((h, w), bool)
    if len(pts) < 3:
        return out
    y0 = max(int(np.floor(pts[:, 1].min() - 0.5)), 0)
    y1 = min(int(np.ceil(pts[:, 1].max() - 0.5)), h - 1)
    if y1 < y0:
        return out
    ys = np.arange(y0, y1 + 1, dtype=np.float64) + 0.5  # R
    a, b = pts, np.roll(pts, -1, axis=0)  # E x 2 edges a→b
    ya, yb = a[:, 1][None, :], b[:, 1][None, :]
    crosses = (ya <= ys[:, None]) != (yb <= ys[:, None])  # R x E
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (ys[:, None] - ya) / (yb - ya)
        xs = a[:, 0][None, :] + t * (b[:, 0] - a[:, 0])[None, :]
    xs = np.where(crosses, xs, np.inf)
    xs.sort(axis=1)
    for i, row in enumerate(xs):
        row = row[np.isfinite(row)]
        for xa, xb in zip(row[0::2], row[1::2]):
            c0 = max(int(np.ceil(xa - 0.5)), 0)
            c1 = min(int(np.ceil(xb - 0.5)), w)  # centres < xb
            if c1 > c0:
                out[y0 + i, c0:c1] = True
    return out


def outline_polygon(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    """The pixels a polygon's edges pass through (for hairline shapes)."""
    img = Image.new("L", (w, h), 0)
    xy = [(float(x) - 0.5, float(y) - 0.5) for x, y in pts]
    ImageDraw.Draw(img).line(xy + xy[:1], fill=255, width=1)
    return np.asarray(img) > 0


def rasterize_polygon(flat: list[float], h: int, w: int) -> tuple[np.ndarray, str | None]:
    """Mask of one polygon and ``None``, or an empty mask and why it was dropped."""
    pts = clean_polygon(flat)
    if len(pts) < 3 or polygon_area(pts) <= 0:
        return np.zeros((h, w), bool), f"degenerate polygon ({len(pts)} distinct point(s), zero area)"
    if pts[:, 0].max() <= 0 or pts[:, 1].max() <= 0 or pts[:, 0].min() >= w or pts[:, 1].min() >= h:
        return np.zeros((h, w), bool), f"polygon lies outside the {w}x{h} image"
    mask = fill_polygon(pts, h, w)
    if not mask.any():
        mask = outline_polygon(pts, h, w)
    return mask, None


def rasterize_box(box: list[float], h: int, w: int) -> tuple[np.ndarray, str | None]:
    """Mask of an ``[x0, y0, x1, y1]`` box (pixel centres inside), or why it was dropped."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return np.zeros((h, w), bool), "degenerate box (zero width or height)"
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        return np.zeros((h, w), bool), f"box lies outside the {w}x{h} image"
    mask = np.zeros((h, w), bool)
    c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.ceil(x1 - 0.5)), w)
    r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.ceil(y1 - 0.5)), h)
    if c1 <= c0:  # thinner than a pixel: keep the column holding its centre
        c0 = min(max(int((x0 + x1) / 2), 0), w - 1)
        c1 = c0 + 1
    if r1 <= r0:
        r0 = min(max(int((y0 + y1) / 2), 0), h - 1)
        r1 = r0 + 1
    mask[r0:r1, c0:c1] = True
    return mask, None


def to_display(mask: np.ndarray, orientation: int) -> np.ndarray:
    """A mask drawn in the stored (raw) frame → the displayed frame of EXIF ``orientation``."""
    method = EXIF_TRANSPOSE.get(orientation)
    if method is None:
        return mask
    img = Image.fromarray(mask.astype(np.uint8) * 255, mode="L").transpose(method)
    return np.asarray(img) > 0
