"""Turn one ``Item`` into files under the output root (runs in worker processes).

Writes ``images/<subset>/<key>.png`` — the source image re-encoded as displayed (EXIF
orientation applied; DICOM through its modality LUT and window; 16-bit where the source
has more than 8 bits), so no metadata of the source (DICOM patient fields, EXIF) reaches
the dataset, and a later edit of the source cannot change it (nothing is linked) — and
``masks/<subset>/<key>.png`` (single-channel 0/255 in the displayed frame). Both writes
are atomic. Returns a ``Result``; a bad sample is a ``Result``
with ``ok=False`` and the reason, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sim4seg.data.io import _pil_header, is_dicom, read_display, read_mask, write_mask, write_png
from sim4seg.data.sources._base import Item, Skip
from sim4seg.data.sources._raster import rasterize_box, rasterize_polygon, to_display
from sim4seg.errors import InputError


@dataclass
class Result:
    sample_id: str
    ok: bool
    image: str = ""
    mask: str = ""
    instances: int = 0
    mask_from: str = "empty"
    ann_ids: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    """The sample itself (``ok=False``) or some of its instances, with reasons."""
    image_write: str = ""
    """``encoded`` (the image was re-encoded as PNG) or ``resized`` (re-encoded downscaled, ``max_side``)."""
    original_size: list[int] | None = None
    """``[H, W]`` as displayed when the image was stored downscaled (``max_side``)."""


def output_paths(item: Item) -> tuple[str, str]:
    """``(image, mask)`` paths relative to the output root (both PNG: images are re-encoded)."""
    return f"images/{item.subset}/{item.key}.png", f"masks/{item.subset}/{item.key}.png"


def _header(path: Path) -> tuple[int, int, int]:
    """``(raw_w, raw_h, exif_orientation)`` from the file header."""
    if is_dicom(path):
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows), 1
    with _pil_header(path) as img:
        return img.width, img.height, int(img.getexif().get(0x0112, 1) or 1)


def _shapes(item: Item, h: int, w: int, raw: tuple[int, int, int]) -> tuple[np.ndarray, int, list[Skip]]:
    """OR of the item's polygons or boxes in the displayed ``HxW`` frame; instance count; drops."""
    raw_w, raw_h, orientation = raw
    frame_h, frame_w, rotate = h, w, False
    if item.coords == "pixel" and item.ann_size is not None:
        ann = tuple(item.ann_size)
        if ann == (w, h):
            pass  # annotations in the displayed frame (what annotation tools show)
        elif ann == (raw_w, raw_h) and orientation in (5, 6, 7, 8):
            frame_h, frame_w, rotate = raw_h, raw_w, True  # stored frame: rasterize there, then orient
        else:
            raise InputError(f"annotation says the image is {ann[0]}x{ann[1]} but it is {w}x{h} as displayed")
    shapes = item.polygons if item.mask_from == "polygon" else item.boxes
    mask = np.zeros((frame_h, frame_w), bool)
    drops, n = [], 0
    for i, shape in enumerate(shapes):
        coords = list(shape)
        if item.coords == "normalized":
            coords = [v * (frame_w if j % 2 == 0 else frame_h) for j, v in enumerate(coords)]
        fn = rasterize_polygon if item.mask_from == "polygon" else rasterize_box
        m, why = fn(coords, frame_h, frame_w)
        ann_id = item.ann_ids[i] if i < len(item.ann_ids) else str(i)
        if why:
            drops.append(Skip(ann_id, why))
            continue
        mask |= m
        n += 1
    if rotate:
        mask = to_display(mask, orientation)
    return mask, n, drops


def downscaled(h: int, w: int, max_side: int | None) -> tuple[int, int] | None:
    """``(H, W)`` with the longer side ``max_side`` (aspect kept), or ``None`` when the image already fits."""
    if max_side is None or max(h, w) <= max_side:
        return None
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def store_downscaled(
    image: np.ndarray, mask: np.ndarray, size: tuple[int, int], image_dst: Path, mask_dst: Path
) -> None:
    """Write ``image`` (``read_display``'s array) resized to ``size`` (Lanczos) as a PNG, and ``mask`` resized
    with it (nearest), atomically. 16-bit images stay 16-bit."""
    h, w = size
    if image.dtype == np.uint16:  # resampled in float: Pillow's 16-bit mode takes no Lanczos
        small = Image.fromarray(image.astype(np.float32)).resize((w, h), Image.Resampling.LANCZOS)
        write_png(image_dst, np.clip(np.rint(np.asarray(small)), 0, 65535).astype(np.uint16))
    else:
        small = Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
        write_png(image_dst, np.asarray(small))
    write_mask(mask_dst, np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST)))


def convert_item(item: Item, out_root: str, max_side: int | None = None) -> Result:
    """Write the image and mask of ``item`` under ``out_root``; never raises for bad input.

    ``max_side``: an image whose longer side is larger is stored downscaled to it (re-encoded: JPEG
    sources as JPEG, others as PNG; EXIF orientation applied), its mask with it (nearest), and its
    displayed size kept in ``Result.original_size``.
    """
    out = Path(out_root)
    image_rel, mask_rel = output_paths(item)
    res = Result(item.sample_id, ok=False, image=image_rel, mask=mask_rel, mask_from=item.mask_from)
    src = Path(item.image)
    try:
        pixels = read_display(src)
        h, w = pixels.shape[:2]
        if item.mask_from == "empty":
            mask, n = np.zeros((h, w), bool), 0
        elif item.mask_from == "pixel":
            mask, n = np.zeros((h, w), bool), 0
            for mf in item.mask_files:
                m = read_mask(mf)
                if m.shape != (h, w):
                    raise InputError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}", mf)
                if m.any():
                    mask |= m
                    n += 1
            if n == 0:
                raise InputError("mask file(s) have no foreground pixel", item.mask_files[0])
        else:
            mask, n, res.skipped = _shapes(item, h, w, _header(src))
            if n == 0:
                raise InputError("no annotation of this image covers a pixel", src)
        size = downscaled(h, w, max_side)
        if size is None:
            write_png(out / image_rel, pixels)
            res.image_write = "encoded"
            write_mask(out / mask_rel, mask)
        else:
            store_downscaled(pixels, mask, size, out / image_rel, out / mask_rel)
            res.image_write, res.original_size = "resized", [h, w]
    except InputError as e:
        res.skipped.append(Skip(str(e.path or src), e.problem))
        return res
    except OSError as e:
        res.skipped.append(Skip(str(src), f"cannot read or write: {e}"))
        return res
    res.ok, res.instances = True, n
    res.ann_ids = [a for a in item.ann_ids if a not in {s.file for s in res.skipped}]
    return res
