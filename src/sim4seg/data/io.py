"""Reading images and masks: any common format, 8/16-bit, EXIF orientation, DICOM.

``read_image`` returns what the models take: an ``HxWx3`` uint8 RGB array of the image
*as displayed* (EXIF orientation applied). ``read_mask`` returns an ``HxW`` bool array.
Every failure is an ``ImageReadError`` that names the file and the problem. Nothing in
here logs pixel data or DICOM patient fields.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sim4seg._atomic import atomic_open
from sim4seg.errors import ImageReadError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000
"""Images above this many pixels are refused (override: ``max_pixels=`` or SIM4SEG_MAX_PIXELS).

This limit replaces Pillow's own decompression-bomb limit (89.5 MP): the header's size is
checked against it before any pixel is decoded."""

MIN_SIDE = 2
"""Images narrower or lower than this many pixels are refused (a 1-pixel image holds no finding)."""

_PIL_LOCK = threading.Lock()

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
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageReadError("file not found", path) from None
    except (OSError, ValueError) as e:  # name too long, a loop of links, a NUL in the name, ...
        raise ImageReadError(f"cannot open: {getattr(e, 'strerror', None) or e}", path) from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError("not a regular file", path)
    if st.st_size == 0:
        raise ImageReadError("file is empty", path)


def _check_pixels(path: Path, height: int, width: int, max_pixels: int | None, min_side: int = 1) -> None:
    limit = max_pixels_default() if max_pixels is None else max_pixels
    if height <= 0 or width <= 0:
        raise ImageReadError(f"image has no pixels ({width}x{height})", path)
    if min(height, width) < min_side:
        raise ImageReadError(f"image is {width}x{height}; images must be at least {min_side} pixels on each side", path)
    if height * width > limit:
        raise ImageReadError(
            f"image is {width}x{height} = {height * width:,} pixels, over the limit of {limit:,} "
            "(raise it with max_pixels= or SIM4SEG_MAX_PIXELS)",
            path,
        )


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


@contextlib.contextmanager
def _our_pixel_limit():
    """Switch Pillow's decompression-bomb check off while a header is read: ``_check_pixels``
    applies sim4seg's limit (``max_pixels=`` / SIM4SEG_MAX_PIXELS) to the header's size instead."""
    with _PIL_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _pil_header(path: Path) -> Image.Image:
    """``Image.open`` (header only) without Pillow's own pixel limit."""
    with _our_pixel_limit():
        return Image.open(path)


def _open_pil(path: Path, max_pixels: int | None, min_side: int = 1) -> Image.Image:
    """Open, check the size from the header, decode fully and apply EXIF orientation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _pil_header(path)
            _check_pixels(path, img.height, img.width, max_pixels, min_side)
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image is too large to decode safely ({e})", path) from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image file Pillow can read (unknown or corrupt format)", path) from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        MemoryError,
        TypeError,
        IndexError,
        KeyError,
        ZeroDivisionError,
        struct.error,
    ) as e:
        raise ImageReadError(f"cannot decode image: {type(e).__name__}: {e}", path) from None
    return img


def _to_uint8(arr: np.ndarray, path: Path | None = None) -> np.ndarray:
    """Scale an integer or float array linearly from its min..max onto 0..255.

    Non-finite values of a float image: NaN becomes black, +/-inf the ends of the finite
    range; an image with no finite value at all is an ``ImageReadError``.
    """
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        if not finite.any():
            raise ImageReadError("image has no finite pixel value (all NaN or infinite)", path)
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
        arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip(np.round((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def pil_to_rgb(img: Image.Image, path: Path | None = None) -> np.ndarray:
    """Any Pillow mode → ``HxWx3`` uint8. 16-bit and float images are scaled min..max."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _to_uint8(np.asarray(img), path)
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


DICOM_EXTRA = "pip install 'sim4seg[dicom]'"


def _read_dicom_header(path: Path):
    """The DICOM data set with its pixel data deferred (not read into memory)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # pydicom warns (and logs) about invalid element values quoting them: a patient field
        # could end up in a log. Its warnings and log records are dropped here.
        with warnings.catch_warnings(), _quiet_decoders():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, defer_size="64 KB")
    except (
        InvalidDicomError,
        EOFError,
        OSError,
        ValueError,
        AttributeError,
        KeyError,
        TypeError,
        IndexError,
        OverflowError,
        NotImplementedError,
        MemoryError,
        struct.error,
        UnicodeError,
    ) as e:
        raise ImageReadError(f"cannot read DICOM file: {type(e).__name__}: {_one_line(e)}", path) from None


def _one_line(e: BaseException, n: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= n else text[:n] + "..."


def _dicom_geometry(path: Path, ds, max_pixels: int | None, min_side: int = 1) -> tuple[int, int, int]:
    """``(rows, columns, frames)`` from the header, checked against the pixel limit (one frame is decoded)."""
    if "PixelData" not in ds:
        raise ImageReadError("DICOM file has no pixel data", path)
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError, OverflowError) as e:
        raise ImageReadError(f"DICOM header has an invalid size: {_one_line(e)}", path) from None
    _check_pixels(path, rows, cols, max_pixels, min_side)
    return rows, cols, max(frames, 1)


def _check_decoder(path: Path, ds) -> None:
    """One clear line when the transfer syntax needs a decoder that is not installed."""
    import pydicom.pixels

    uid = ds.get("file_meta", {}).get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is None or not getattr(uid, "is_transfer_syntax", False) or not uid.is_compressed:
        return
    try:
        available = pydicom.pixels.get_decoder(uid).is_available
    except (NotImplementedError, ValueError, KeyError):
        raise ImageReadError(
            f"DICOM pixel data is compressed as {uid.name}, which sim4seg cannot decode", path
        ) from None
    if not available:
        raise ImageReadError(
            f"DICOM pixel data is compressed as {uid.name}, and no decoder for it is installed: "
            f"{DICOM_EXTRA} (pylibjpeg with its OpenJPEG and libjpeg plugins)",
            path,
        )


@contextlib.contextmanager
def _quiet_decoders():
    """pydicom and its plugins log a traceback at ERROR before raising; the raised error is reported instead."""
    loggers = [logging.getLogger(n) for n in ("pydicom", "openjpeg", "libjpeg", "pylibjpeg")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)


def _dicom_pixels(path: Path, ds, frames: int, frame: int | None = 0) -> np.ndarray:
    """The stored values of ``frame`` (colour converted to RGB); ``None`` is allowed for one frame only.

    Read from the file by pydicom, which reads and decodes only that frame of a multi-frame file.
    """
    from pydicom.pixels import pixel_array

    _check_decoder(path, ds)
    try:
        with warnings.catch_warnings(), _quiet_decoders():
            warnings.simplefilter("ignore")  # pydicom warns about fixable header quirks
            k = _frame_index(path, frame, frames)
            return pixel_array(str(path), index=k) if frames > 1 else pixel_array(str(path))
    except MemoryError:
        raise ImageReadError("DICOM pixel data is too large to decode", path) from None
    except ImageReadError:
        raise
    except Exception as e:  # pydicom raises many types for missing codecs / bad data
        raise ImageReadError(f"cannot decode DICOM pixel data: {type(e).__name__}: {_one_line(e)}", path) from None


def _dicom_value(ds, name: str, default: float, path: Path) -> float:
    value = ds.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else default
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ImageReadError(f"DICOM {name} {str(value)[:40]!r} is not a number", path) from None
    if not np.isfinite(out):
        raise ImageReadError(f"DICOM {name} is not finite", path)
    return out


@contextlib.contextmanager
def _dicom_errors(path: Path):
    """Any failure inside pydicom becomes an ``ImageReadError``: it parses elements lazily, so a
    damaged header can raise (``BytesLengthException``, ``struct.error``, ...) wherever a value is read."""
    try:
        yield
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError("DICOM data is too large to read", path) from None
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for damaged files
        raise ImageReadError(f"cannot read DICOM file: {type(e).__name__}: {_one_line(e)}", path) from None


def _read_dicom(path: Path, max_pixels: int | None, min_side: int = 1, frame: int | None = None) -> np.ndarray:
    """DICOM → ``HxWx3`` uint8: modality LUT (rescale), VOI window, MONOCHROME1 inverted; ``frame`` of a
    multi-frame file (required when it has several)."""
    with _dicom_errors(path), warnings.catch_warnings(), _quiet_decoders():
        warnings.simplefilter("ignore")
        return _read_dicom_checked(path, max_pixels, min_side, frame)


def _read_dicom_checked(path: Path, max_pixels: int | None, min_side: int, frame: int | None) -> np.ndarray:
    ds = _read_dicom_header(path)
    _, _, frames = _dicom_geometry(path, ds, max_pixels, min_side)
    arr = _dicom_pixels(path, ds, frames, frame)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ImageReadError(f"DICOM pixel data has an unexpected shape {arr.shape}", path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith(("RGB", "YBR")):
        # pydicom >= 3 returns colour data as RGB (YCbCr converted) by default.
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ImageReadError(f"DICOM says {photometric} but its pixel data has shape {arr.shape}", path)
        return arr.astype(np.uint8) if arr.dtype == np.uint8 else _to_uint8(arr, path)
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"):
        raise ImageReadError(f"unsupported DICOM photometric interpretation {photometric[:40]}", path)
    if arr.ndim != 2:
        raise ImageReadError(f"DICOM says {photometric} but its pixel data has shape {arr.shape}", path)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            return _to_uint8(apply_color_lut(arr, ds), path)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise ImageReadError(f"cannot apply the DICOM palette: {_one_line(e)}", path) from None
    slope = _dicom_value(ds, "RescaleSlope", 1.0, path) or 1.0
    values = arr.astype(np.float64) * slope + _dicom_value(ds, "RescaleIntercept", 0.0, path)
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        center = _dicom_value(ds, "WindowCenter", 0.0, path)
        width = _dicom_value(ds, "WindowWidth", 1.0, path)
        if width < 1:
            raise ImageReadError(f"DICOM window width {width} is invalid (must be >= 1)", path)
        # DICOM PS3.3 C.11.2.1.2.1, linear VOI function.
        with np.errstate(over="ignore", invalid="ignore"):
            out = ((values - (center - 0.5)) / max(width - 1, 1e-12) + 0.5) * 255.0
        gray = np.clip(np.round(np.nan_to_num(out)), 0, 255).astype(np.uint8)
    else:
        gray = _to_uint8(values, path)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return np.repeat(gray[..., None], 3, axis=2)


def dicom_display(path: str | os.PathLike, *, max_pixels: int | None = None, frame: int = 0) -> np.ndarray:
    """A DICOM image (``frame`` of a multi-frame file; the first by default) as displayed, at full depth, for
    re-encoding without its header.

    Monochrome images whose stored values have more than 8 bits come back as ``HxW`` uint16
    (modality LUT and VOI window applied, scaled onto 0..65535; MONOCHROME1 inverted);
    everything else as ``read_image`` returns it (``HxWx3`` uint8).
    """
    path = Path(path)
    _check_file(path)
    with _dicom_errors(path), warnings.catch_warnings(), _quiet_decoders():
        warnings.simplefilter("ignore")
        return _dicom_display(path, max_pixels, frame)


def _dicom_display(path: Path, max_pixels: int | None, frame: int) -> np.ndarray:
    ds = _read_dicom_header(path)
    bits = int(ds.get("BitsStored", 8) or 8) if str(ds.get("BitsStored", "8")).isdigit() else 8
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if bits <= 8 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return _read_dicom(path, max_pixels, MIN_SIDE, frame)
    _, _, frames = _dicom_geometry(path, ds, max_pixels, MIN_SIDE)
    arr = _dicom_pixels(path, ds, frames, frame)
    if arr.ndim != 2 or arr.size == 0:
        raise ImageReadError(f"DICOM says {photometric} but its pixel data has shape {arr.shape}", path)
    slope = _dicom_value(ds, "RescaleSlope", 1.0, path) or 1.0
    values = arr.astype(np.float64) * slope + _dicom_value(ds, "RescaleIntercept", 0.0, path)
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        center = _dicom_value(ds, "WindowCenter", 0.0, path)
        width = _dicom_value(ds, "WindowWidth", 1.0, path)
        if width < 1:
            raise ImageReadError(f"DICOM window width {width} is invalid (must be >= 1)", path)
        with np.errstate(over="ignore", invalid="ignore"):
            unit = np.nan_to_num((values - (center - 0.5)) / max(width - 1, 1e-12) + 0.5)
    else:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ImageReadError("image has no finite pixel value (all NaN or infinite)", path)
        lo, hi = float(finite.min()), float(finite.max())
        unit = np.zeros_like(values) if hi <= lo else (np.nan_to_num(values, nan=lo) - lo) / (hi - lo)
    gray = np.clip(np.round(np.clip(unit, 0.0, 1.0) * 65535.0), 0, 65535).astype(np.uint16)
    if photometric == "MONOCHROME1":
        gray = 65535 - gray
    return gray


def read_image(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = None,
    frame: int | None = None,
    axis: int = 2,
    index: int | None = None,
) -> np.ndarray:
    """Read an image (JPEG/PNG/BMP/TIFF/DICOM/NIfTI) as displayed → ``HxWx3`` uint8 RGB.

    ``frame``: the frame of a multi-frame DICOM (required when it has several; only that frame is
    decoded). ``axis`` / ``index``: the 2-D slice of a NIfTI volume (``index`` required when the volume
    has several slices along ``axis``). Each is ignored for the other formats.
    """
    path = Path(path)
    _check_file(path)
    if is_nifti(path):
        return next(read_nifti_slices(path, axis, [index], max_pixels=max_pixels))
    if is_dicom(path):
        return _read_dicom(path, max_pixels, MIN_SIDE, frame)
    return pil_to_rgb(_open_pil(path, max_pixels, MIN_SIDE), path)


def image_size(path: str | os.PathLike, *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(H, W)`` of the image as displayed, read from the header where possible."""
    path = Path(path)
    _check_file(path)
    if is_dicom(path):
        with _dicom_errors(path), warnings.catch_warnings(), _quiet_decoders():
            warnings.simplefilter("ignore")
            ds = _read_dicom_header(path)
            rows, cols, _ = _dicom_geometry(path, ds, max_pixels, MIN_SIDE)
        return rows, cols
    try:
        with _pil_header(path) as img:
            w, h = img.size
            _check_pixels(path, h, w, max_pixels, MIN_SIDE)
            # A PNG without an eXIf chunk before its image data would be decoded whole by
            # getexif() looking for one after it; the header's answer is what we take.
            has_exif = img.format != "PNG" or "exif" in img.info
            orientation = img.getexif().get(0x0112, 1) if has_exif else 1
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image is too large to decode safely ({e})", path) from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image file Pillow can read (unknown or corrupt format)", path) from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        TypeError,
        IndexError,
        KeyError,
        ZeroDivisionError,
        struct.error,
    ) as e:
        raise ImageReadError(f"cannot read image header: {type(e).__name__}: {e}", path) from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_display(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """The image as displayed at full depth, for re-encoding without any of the file's metadata.

    ``HxW`` uint16 for sources with more than 8 bits (16-bit PNG/TIFF, DICOM with
    ``BitsStored > 8`` after its modality LUT and window, 32-bit and float images scaled
    min..max), ``HxW`` uint8 for gray images, ``HxWx3`` uint8 RGB otherwise. EXIF orientation
    is applied. ``read_image`` of a PNG written from it shows what ``read_image`` of the
    source shows (8-bit sources exactly; deeper sources scaled min..max as usual).
    """
    path = Path(path)
    _check_file(path)
    if is_dicom(path):
        return dicom_display(path, max_pixels=max_pixels)
    img = _open_pil(path, max_pixels, MIN_SIDE)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.uint16)
    if img.mode in ("I", "F"):
        return _to_uint16(np.asarray(img), path)
    if img.mode in ("1", "L", "LA"):
        return np.asarray(img.getchannel(0) if img.mode == "LA" else img.convert("L"), dtype=np.uint8)
    return pil_to_rgb(img, path)


def _to_uint16(arr: np.ndarray, path: Path | None = None) -> np.ndarray:
    """``_to_uint8``'s linear min..max scaling onto 0..65535."""
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ImageReadError("image has no finite pixel value (all NaN or infinite)", path)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
    if hi <= lo:
        return np.zeros(arr.shape, np.uint16)
    return np.clip(np.round((arr - lo) * (65535.0 / (hi - lo))), 0, 65535).astype(np.uint16)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``read_display``'s array atomically as a PNG (16-bit gray for uint16), with no metadata."""
    arr = np.ascontiguousarray(image)
    if arr.dtype == np.uint16 and arr.ndim == 2:
        img = Image.fromarray(arr)  # mode I;16: a 16-bit gray PNG
    elif arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        img = Image.fromarray(arr)
    else:
        raise ValueError(f"cannot write an image of dtype {arr.dtype} and shape {arr.shape} as PNG")
    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG")


def read_mask_raw(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """A mask file's pixel values, as displayed: ``HxW`` (gray) or ``HxWxC`` (colour)."""
    _check_file(Path(path))
    img = _open_pil(Path(path), max_pixels) if not is_dicom(path) else None
    if img is None:
        raise ImageReadError("masks must be image files, not DICOM", path)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_uint8(np.asarray(img), Path(path))
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
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        path.suffix.lower()
    )
    if fmt is None:
        raise ValueError(f"cannot write an image with suffix {path.suffix!r}: {path}")
    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    with atomic_open(path, "wb") as f:
        img.save(f, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))


# ---------------------------------------------------------------------------- volumes and frames

NIFTI_SUFFIXES = (".nii", ".nii.gz")
AXIS_NAMES = ("sagittal", "coronal", "axial")
"""NIfTI axes in the closest canonical (RAS+) orientation: 0 = x (sagittal), 1 = y (coronal), 2 = z (axial)."""


def is_nifti(path: str | os.PathLike) -> bool:
    """True for a ``.nii`` / ``.nii.gz`` file name."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _frame_index(
    path: Path, frame: int | None, count: int, what: str = "frame", how: str = "frame=K (predict --frame K|all)"
) -> int:
    """``frame`` checked against ``count`` frames (or slices); ``None`` is only allowed when there is one."""
    if frame is None:
        if count == 1:
            return 0
        raise ImageReadError(
            f"{'multi-frame DICOM' if what == 'frame' else '3-D volume'} with {count} {what}s: "
            f"choose one with {how}, K in 0..{count - 1}",
            path,
        )
    if not 0 <= frame < count:
        raise ImageReadError(f"{what} {frame} is out of range: the file has {count} {what}(s) (0..{count - 1})", path)
    return frame


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise ImageReadError(
            "reading NIfTI needs nibabel: pip install -c constraints.txt 'sim4seg[serve]' (or pip install nibabel)"
        ) from None
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
        raise ImageReadError(
            f"NIfTI image is {len(shape)}-D {'x'.join(map(str, shape))}; only 2-D images and 3-D "
            "volumes are read (take one volume of the series first)",
            path,
        )
    return img, shape + (1,) * (3 - len(shape))


def frame_count(path: str | os.PathLike, *, axis: int = 2) -> int:
    """How many 2-D images the file holds: DICOM frames, NIfTI slices along ``axis``, else 1 (headers only)."""
    path = Path(path)
    _check_file(path)
    if is_nifti(path):
        _check_axis(path, axis)
        return _nifti_volume(path)[1][axis]
    if is_dicom(path):
        with _dicom_errors(path):
            return max(int(_read_dicom_header(path).get("NumberOfFrames", 1) or 1), 1)
    return 1


def _check_axis(path: Path, axis: int) -> None:
    if axis not in (0, 1, 2):
        raise ImageReadError(
            f"NIfTI axis must be 0 ({AXIS_NAMES[0]}), 1 ({AXIS_NAMES[1]}) or 2 ({AXIS_NAMES[2]}), got {axis}", path
        )


def read_nifti_slices(
    path: str | os.PathLike, axis: int = 2, indices: list[int | None] | None = None, *, max_pixels: int | None = None
) -> Iterator[np.ndarray]:
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
