"""Reading images and masks: any common format, 8/16-bit, EXIF orientation, DICOM.

``read_image`` returns what the models take: an ``HxWx3`` uint8 RGB array of the image
*as displayed* (EXIF orientation applied). ``read_mask`` returns an ``HxW`` bool array.
Every failure is an ``ImageReadError`` that names the file and the problem. Nothing in
here logs pixel data or DICOM patient fields.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sim4seg._atomic import atomic_open
from sim4seg.errors import ImageReadError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000
"""Images above this many pixels are refused (override: ``max_pixels=`` or SIM4SEG_MAX_PIXELS)."""

DICOM_SUFFIXES = {".dcm", ".dicom"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"} | DICOM_SUFFIXES


def max_pixels_default() -> int:
    value = os.environ.get("SIM4SEG_MAX_PIXELS")
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        return int(value)
    except ValueError:
        raise ImageReadError(f"SIM4SEG_MAX_PIXELS must be an integer, got {value!r}") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError("file not found", path)
    if not path.is_file():
        raise ImageReadError("not a regular file", path)
    if path.stat().st_size == 0:
        raise ImageReadError("file is empty", path)


def _check_pixels(path: Path, height: int, width: int, max_pixels: int | None) -> None:
    limit = max_pixels_default() if max_pixels is None else max_pixels
    if height <= 0 or width <= 0:
        raise ImageReadError(f"image has no pixels ({width}x{height})", path)
    if height * width > limit:
        raise ImageReadError(
            f"image is {width}x{height} = {height * width:,} pixels, over the limit of {limit:,} "
            "(raise it with max_pixels= or SIM4SEG_MAX_PIXELS)", path)


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a ``.dcm``/``.dicom`` name or a file with the DICOM preamble magic."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _open_pil(path: Path, max_pixels: int | None) -> Image.Image:
    """Open, check the size from the header, decode fully and apply EXIF orientation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            _check_pixels(path, img.height, img.width, max_pixels)
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image is too large to decode safely ({e})", path) from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image file Pillow can read (unknown or corrupt format)", path) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot decode image: {e}", path) from None
    return img


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an integer or float array linearly from its min..max onto 0..255."""
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip(np.round((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode → ``HxWx3`` uint8. 16-bit and float images are scaled min..max."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _to_uint8(np.asarray(img))
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "1":
        img = img.convert("L")
    elif mode == "LA":
        img = img.getchannel("L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "L":
        gray = np.asarray(img, dtype=np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _read_dicom(path: Path, max_pixels: int | None, frame: int | None = None) -> np.ndarray:
    """DICOM → ``HxWx3`` uint8: modality LUT (rescale), VOI window, MONOCHROME1 inverted; ``frame`` of a multi-frame file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, AttributeError) as e:
        raise ImageReadError(f"cannot read DICOM file: {type(e).__name__}: {e}", path) from None
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if "PixelData" not in ds:
        raise ImageReadError("DICOM file has no pixel data", path)
    _check_pixels(path, rows, cols, max_pixels)
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for missing codecs / bad data
        raise ImageReadError(f"cannot decode DICOM pixel data: {type(e).__name__}: {e}", path) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 or frame is not None:
        k = _frame_index(path, frame, frames)
        arr = arr[k] if frames > 1 else arr
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith(("RGB", "YBR")):
        # pydicom >= 3 returns colour data as RGB (YCbCr converted) by default.
        return arr.astype(np.uint8) if arr.dtype == np.uint8 else _to_uint8(arr)
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"):
        raise ImageReadError(f"unsupported DICOM photometric interpretation {photometric}", path)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return _to_uint8(apply_color_lut(arr, ds))
    values = arr.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        if width < 1:
            raise ImageReadError(f"DICOM window width {width} is invalid (must be >= 1)", path)
        # DICOM PS3.3 C.11.2.1.2.1, linear VOI function.
        out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
        gray = np.clip(np.round(out), 0, 255).astype(np.uint8)
    else:
        gray = _to_uint8(values)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return np.repeat(gray[..., None], 3, axis=2)


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None, frame: int | None = None,
               axis: int = 2, index: int | None = None) -> np.ndarray:
    """Read an image (JPEG/PNG/BMP/TIFF/DICOM/NIfTI) as displayed → ``HxWx3`` uint8 RGB.

    ``frame``: the frame of a multi-frame DICOM (required when it has several). ``axis`` / ``index``: the
    2-D slice of a NIfTI volume (``index`` required when the volume has several slices along ``axis``).
    Each is ignored for the other formats.
    """
    path = Path(path)
    _check_file(path)
    if is_nifti(path):
        return next(read_nifti_slices(path, axis, [index], max_pixels=max_pixels))
    if is_dicom(path):
        return _read_dicom(path, max_pixels, frame)
    return pil_to_rgb(_open_pil(path, max_pixels))


def image_size(path: str | os.PathLike, *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(H, W)`` of the image as displayed, read from the header where possible."""
    path = Path(path)
    _check_file(path)
    if is_dicom(path):
        return read_image(path, max_pixels=max_pixels).shape[:2]
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except UnidentifiedImageError:
        raise ImageReadError("not an image file Pillow can read (unknown or corrupt format)", path) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read image header: {e}", path) from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_mask_raw(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """A mask file's pixel values, as displayed: ``HxW`` (gray) or ``HxWxC`` (colour)."""
    img = _open_pil(Path(path), max_pixels) if not is_dicom(path) else None
    if img is None:
        raise ImageReadError("masks must be image files, not DICOM", path)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_uint8(np.asarray(img))
    return np.asarray(img)


def read_mask(path: str | os.PathLike, *, threshold: int = 127, max_pixels: int | None = None) -> np.ndarray:
    """Read a mask → ``HxW`` bool: foreground where any colour channel is ``> threshold``.

    Accepts 0/255 or 0/1 PNGs, lossy JPEG masks (thresholded), gray, RGB and RGBA
    (alpha is ignored unless the colour channels are all zero). 0/1 masks are detected
    and treated as 0/255.
    """
    path = Path(path)
    _check_file(path)
    arr = read_mask_raw(path, max_pixels=max_pixels)
    if arr.ndim == 3:
        colour = arr[..., :3] if arr.shape[2] >= 3 else arr[..., :1]
        if arr.shape[2] in (2, 4) and not colour.any():
            colour = arr[..., -1:]
        arr = colour.max(axis=2)
    if arr.dtype == bool:
        return arr.copy()
    if arr.max() == 1:
        return arr == 1
    return arr > threshold


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an ``HxW`` bool mask atomically as a single-channel 0/255 PNG."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    img = Image.fromarray(np.where(mask.astype(bool), 255, 0).astype(np.uint8), mode="L")
    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG", optimize=False)


def write_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95) -> None:
    """Write an ``HxWx3`` (or ``HxW``) uint8 array atomically; the format follows the suffix."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write an image with suffix {path.suffix!r}: {path}")
    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    with atomic_open(path, "wb") as f:
        img.save(f, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))


# ---------------------------------------------------------------------- multi-frame DICOM and NIfTI volumes

NIFTI_SUFFIXES = (".nii", ".nii.gz")
AXIS_NAMES = ("sagittal", "coronal", "axial")
"""NIfTI axes in the closest canonical (RAS+) orientation: 0 = x (sagittal), 1 = y (coronal), 2 = z (axial)."""


def is_nifti(path: str | os.PathLike) -> bool:
    """True for a ``.nii`` / ``.nii.gz`` file name."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _frame_index(path: Path, frame: int | None, count: int, what: str = "frame",
                 how: str = "frame=K (predict --frame K|all)") -> int:
    """``frame`` checked against ``count`` frames (or slices); ``None`` is only allowed when there is one."""
    if frame is None:
        if count == 1:
            return 0
        raise ImageReadError(f"{'multi-frame DICOM' if what == 'frame' else '3-D volume'} with {count} {what}s: "
                             f"choose one with {how}, K in 0..{count - 1}", path)
    if not 0 <= frame < count:
        raise ImageReadError(f"{what} {frame} is out of range: the file has {count} {what}(s) (0..{count - 1})", path)
    return frame


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise ImageReadError("reading NIfTI needs nibabel: pip install -c constraints.txt 'sim4seg[serve]' "
                             "(or pip install nibabel)") from None
    return nibabel


def _nifti_volume(path: Path):
    """The NIfTI image in its closest canonical (RAS+) orientation, 2-D images as one-slice volumes."""
    nib = _nibabel()
    try:
        img = nib.load(str(path))
        img = nib.as_closest_canonical(img)
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise ImageReadError(f"cannot read NIfTI file: {type(e).__name__}: {e}", path) from None
    shape = tuple(int(v) for v in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ImageReadError(f"NIfTI image is {len(shape)}-D {'x'.join(map(str, shape))}; only 2-D images and 3-D "
                             "volumes are read (take one volume of the series first)", path)
    return img, shape + (1,) * (3 - len(shape))


def frame_count(path: str | os.PathLike, *, axis: int = 2) -> int:
    """How many 2-D images the file holds: DICOM frames, NIfTI slices along ``axis``, else 1 (headers only)."""
    path = Path(path)
    _check_file(path)
    if is_nifti(path):
        _check_axis(path, axis)
        return _nifti_volume(path)[1][axis]
    if is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as e:  # noqa: BLE001 — any parse failure is reported when the image is read
            raise ImageReadError(f"cannot read DICOM file: {type(e).__name__}: {e}", path) from None
        return int(ds.get("NumberOfFrames", 1) or 1)
    return 1


def _check_axis(path: Path, axis: int) -> None:
    if axis not in (0, 1, 2):
        raise ImageReadError(f"NIfTI axis must be 0 ({AXIS_NAMES[0]}), 1 ({AXIS_NAMES[1]}) or 2 ({AXIS_NAMES[2]}), "
                             f"got {axis}", path)


def read_nifti_slices(path: str | os.PathLike, axis: int = 2, indices: list[int | None] | None = None, *,
                      max_pixels: int | None = None) -> Iterator[np.ndarray]:
    """Yield 2-D slices of a NIfTI file as ``HxWx3`` uint8 (the file is opened once).

    The volume is put in its closest canonical orientation (RAS+); a slice is shown with the
    anterior / superior side up and the patient's left on the image's left (neurological
    convention), its values scaled linearly from the slice's minimum to its maximum (NaNs as
    the minimum). ``indices``: slice numbers along ``axis`` (``None`` in the list: the only slice
    of a one-slice image); default: every slice.
    """
    path = Path(path)
    _check_axis(path, axis)
    img, shape = _nifti_volume(path)
    if len(img.shape) == 2:
        axis = 2  # a 2-D image is its own (only) axial slice
    count = shape[axis]
    plane = [shape[a] for a in range(3) if a != axis]
    _check_pixels(path, plane[1], plane[0], max_pixels)
    for index in range(count) if indices is None else indices:
        k = _frame_index(path, index, count, "slice", f"index=K (predict --nifti-axis {axis} --nifti-index K|all)")
        where: list = [slice(None)] * len(img.shape)
        if len(img.shape) >= 3:
            where[axis] = k
            where[3:] = [0] * (len(img.shape) - 3)  # trailing singleton dimensions
        try:
            data = np.asarray(img.dataobj[tuple(where)], dtype=np.float32).reshape(plane)
        except Exception as e:  # truncated or corrupt data
            raise ImageReadError(f"cannot read NIfTI slice {k}: {type(e).__name__}: {e}", path) from None
        if np.isnan(data).all():
            data = np.zeros_like(data)
        data = np.nan_to_num(data, nan=float(np.nanmin(data)))
        gray = np.ascontiguousarray(np.rot90(_to_uint8(data)))  # rows: the second axis, reversed (A / S up)
        yield np.repeat(gray[..., None], 3, axis=2)
