"""Images as the backends get them: read once (DICOM included), shrunk, encoded as data URLs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from helpers import write_dicom
from sim4seg.cot.images import ImageInput, load_image, shrink
from sim4seg.data.io import read_image, write_image
from sim4seg.errors import ImageReadError


def _decode(url: str) -> tuple[str, np.ndarray]:
    header, b64 = url.split(",", 1)
    return header, np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_dicom_is_sent_as_lossless_png(tmp_path):
    pixels = (np.arange(30 * 40).reshape(30, 40) % 4096).astype(np.uint16)
    path = tmp_path / "scan.dcm"
    write_dicom(path, pixels, Modality="DX")
    image = load_image(path)
    assert image.fmt == "png"
    header, sent = _decode(image.data_url())
    assert header == "data:image/png;base64"
    assert np.array_equal(sent, read_image(path)) and sent.shape == (30, 40, 3)
    assert image.data_url() is image.data_url()  # encoded once


def test_jpeg_sources_are_sent_as_jpeg_and_big_images_shrunk(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.jpg"
    write_image(path, rng.integers(0, 255, (300, 120, 3), dtype=np.uint8))
    image = load_image(path, max_side=100)
    assert image.fmt == "jpeg" and image.array.shape == (100, 40, 3)
    header, sent = _decode(image.data_url())
    assert header == "data:image/jpeg;base64" and sent.shape == (100, 40, 3)
    assert load_image(path, max_side=0).array.shape == (300, 120, 3)
    assert load_image(path, fmt="png").fmt == "png"


def test_shrink_keeps_aspect_and_small_images():
    a = np.zeros((50, 200, 3), np.uint8)
    assert shrink(a, 100).shape == (25, 100, 3)
    assert shrink(a, 500) is a


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_image(bad)
    with pytest.raises(ValueError, match="image format"):
        load_image(bad, fmt="gif")
    assert ImageInput(np.zeros((2, 2, 3), np.uint8)).pil().size == (2, 2)
