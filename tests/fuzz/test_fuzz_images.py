"""Fuzzing image and DICOM headers: mutated bytes of valid files through ``read_image``,
``image_size`` and ``read_mask``. Property: an ``ImageReadError`` (an ``InputError``) or a valid
array, within the time bound; never another exception, never a hang."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from sim4seg.data.io import image_size, read_image, read_mask
from sim4seg.errors import InputError

# The whole test's bound: the ci profile finishes in seconds; `make fuzz` runs far more examples.
TIMEOUT = 3600 if os.environ.get("SIM4SEG_FUZZ_PROFILE") == "fuzz" else 300


def _pil_bytes(fmt: str, mode: str, **kw) -> bytes:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 4096, (12, 16), dtype=np.uint16))
    elif mode == "F":
        img = Image.fromarray(rng.random((12, 16), dtype=np.float32), mode="F")
    else:
        img = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    if fmt == "JPEG":
        exif = Image.Exif()
        exif[0x0112] = 6
        kw["exif"] = exif.tobytes()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _dicom_bytes(frames: int = 1, rgb: bool = False) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.Rows, ds.Columns = 12, 16
    if rgb:
        ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        arr = np.arange(12 * 16 * 3 * frames, dtype=np.uint8)
    else:
        ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.WindowCenter, ds.WindowWidth, ds.RescaleSlope, ds.RescaleIntercept = 2000, 4000, 1, -10
        arr = np.arange(12 * 16 * frames, dtype=np.uint16)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


SEEDS = {
    "png": _pil_bytes("PNG", "RGB"),
    "png16": _pil_bytes("PNG", "I;16"),
    "pngp": _pil_bytes("PNG", "P"),
    "jpg": _pil_bytes("JPEG", "RGB"),
    "tif": _pil_bytes("TIFF", "RGB"),
    "tif16": _pil_bytes("TIFF", "I;16"),
    "tiff": _pil_bytes("TIFF", "F"),
    "bmp": _pil_bytes("BMP", "RGB"),
    "gif": _pil_bytes("GIF", "P"),
    "dcm": _dicom_bytes(),
    "dcm3": _dicom_bytes(frames=3),
    "dcmrgb": _dicom_bytes(rgb=True),
}
SUFFIX = {
    "png": ".png",
    "png16": ".png",
    "pngp": ".png",
    "jpg": ".jpg",
    "tif": ".tif",
    "tif16": ".tif",
    "tiff": ".tiff",
    "bmp": ".bmp",
    "gif": ".png",
    "dcm": ".dcm",
    "dcm3": ".dcm",
    "dcmrgb": "",
}

# A mutation: (kind, position, value). Header bytes (the first 600) are hit far more often.
MUTATION = st.tuples(
    st.sampled_from(["set", "insert", "delete", "truncate", "u32"]),
    st.one_of(st.integers(0, 600), st.integers(0, 20_000)),
    st.integers(0, 2**32 - 1),
)


def _mutate(data: bytes, mutations) -> bytes:
    b = bytearray(data)
    for kind, pos, value in mutations:
        pos = pos % (len(b) + 1)
        if kind == "set" and pos < len(b):
            b[pos] = value & 0xFF
        elif kind == "insert":
            b[pos:pos] = bytes([value & 0xFF]) * (1 + (value >> 8) % 8)
        elif kind == "delete":
            del b[pos : pos + 1 + (value >> 8) % 16]
        elif kind == "truncate":
            del b[max(pos, 1) :]
        elif kind == "u32":  # sizes and lengths in headers are 32-bit fields: big values probe the limits
            b[pos : pos + 4] = value.to_bytes(4, "little" if value & 1 else "big")
    return bytes(b)


@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="fuzz-images-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.filterwarnings("ignore::UserWarning")
@given(seed=st.sampled_from(sorted(SEEDS)), mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_image_and_dicom_files(work, seed, mutations, caplog):
    path = work / f"x{SUFFIX[seed]}"
    path.write_bytes(_mutate(SEEDS[seed], mutations))
    with caplog.at_level(logging.DEBUG):
        _read_all(path, seed)
    assert "Doe" not in caplog.text  # no DICOM patient field in any log record
    caplog.clear()


def _read_all(path: Path, seed: str) -> None:
    try:
        h, w = image_size(path, max_pixels=4_000_000)
        assert h >= 2 and w >= 2
    except InputError as e:
        assert e.path is not None and "Doe" not in str(e)
    try:
        img = read_image(path, max_pixels=4_000_000, frame=0)  # frame: a multi-frame DICOM needs one
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 2
    except InputError as e:
        assert e.path is not None and "Doe" not in str(e)
    if not seed.startswith("dcm"):
        try:
            m = read_mask(path, max_pixels=4_000_000)
            assert m.dtype == bool and m.ndim == 2
        except InputError as e:
            assert e.path is not None and "Doe" not in str(e)


def test_seeds_are_valid(work):
    for name, data in SEEDS.items():
        p = work / f"seed-{name}{SUFFIX[name]}"
        p.write_bytes(data)
        assert read_image(p, frame=0).shape[2] == 3, name
