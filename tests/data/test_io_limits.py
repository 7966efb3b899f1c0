"""Regression tests of issue 13 for image reading: pixel limit, bombs, NaN, tiny, multi-frame, codecs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim4seg.data import io
from sim4seg.data.io import image_size, read_image
from sim4seg.errors import ImageReadError

_spec = importlib.util.spec_from_file_location("_test_io", Path(__file__).with_name("test_io.py"))
_test_io = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_test_io)
dicom = _test_io._dicom  # writes a DICOM with PatientName Doe^Jane, PatientID SECRET-4711


def _huge_png(path: Path, w: int, h: int) -> Path:
    """A valid PNG header claiming ``w x h`` (the body is not needed to test header checks)."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
    import zlib

    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # IHDR CRC
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_header_is_an_image_read_error(tmp_path):
    p = _huge_png(tmp_path / "bomb.png", 60_000, 60_000)  # 3.6 GP: over Pillow's 2x limit too
    with pytest.raises(ImageReadError, match=r"bomb\.png: image is 60000x60000 .* over the limit"):
        image_size(p)
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(p)


def test_our_pixel_limit_governs_not_pillows(tmp_path, monkeypatch):
    # 95 MP: under our documented 100 MP default, over Pillow's 89.5 MP warning limit.
    p = _huge_png(tmp_path / "big.png", 9_500, 10_000)
    assert image_size(p) == (10_000, 9_500)
    # 200 MP: over Pillow's hard limit (2 x 89.5 MP); SIM4SEG_MAX_PIXELS raises ours and it governs.
    p = _huge_png(tmp_path / "bigger.png", 20_000, 10_000)
    with pytest.raises(ImageReadError, match="over the limit of 100,000,000"):
        image_size(p)
    monkeypatch.setenv("SIM4SEG_MAX_PIXELS", "300000000")
    assert image_size(p) == (10_000, 20_000)
    assert image_size(p, max_pixels=250_000_000) == (10_000, 20_000)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's global is left as it was


def test_verify_quick_lists_a_bomb(tmp_path, synth_m3ds):
    import shutil

    from sim4seg.data.schema import read_split
    from sim4seg.data.verify import verify

    root = tmp_path / "ds"
    shutil.copytree(synth_m3ds, root)
    s = read_split(root, "train")[0]
    _huge_png(root / s.image, 60_000, 60_000)
    _, problems = verify(root, decode=False)
    assert [p for p in problems if "over the limit" in p.problem and s.image in p.problem]


def test_full_baseline_lists_a_bomb_mask(tmp_path, synth_m3ds):
    import shutil

    from sim4seg.data.schema import read_split
    from sim4seg.eval.evaluate import evaluate_baseline

    root = tmp_path / "ds"
    shutil.copytree(synth_m3ds, root)
    s = read_split(root, "test")[0]
    _huge_png(root / s.mask, 60_000, 60_000)
    with pytest.raises(ImageReadError, match="over the limit"):
        evaluate_baseline(root, "test", "full")


def test_non_finite_float_images(tmp_path):
    nan = np.full((4, 5), np.nan, np.float32)
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match=r"nan\.tif: image has no finite pixel value"):
        read_image(tmp_path / "nan.tif")
    inf = np.full((4, 5), np.inf, np.float32)
    Image.fromarray(inf, mode="F").save(tmp_path / "inf.tif")
    with pytest.raises(ImageReadError, match="no finite pixel value"):
        read_image(tmp_path / "inf.tif")
    part = np.array([[0.0, 1.0, np.nan], [np.inf, -np.inf, 0.5]], np.float32)
    Image.fromarray(part, mode="F").save(tmp_path / "part.tif")
    out = read_image(tmp_path / "part.tif")[..., 0]
    np.testing.assert_array_equal(out, [[0, 255, 0], [255, 0, 128]])


def test_one_pixel_images_are_refused(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(ImageReadError, match=r"dot\.png: image is 1x1; images must be at least 2 pixels"):
        read_image(tmp_path / "dot.png")
    with pytest.raises(ImageReadError, match="at least 2 pixels"):
        image_size(tmp_path / "dot.png")
    Image.new("RGB", (1, 40)).save(tmp_path / "line.png")
    with pytest.raises(ImageReadError, match="at least 2 pixels"):
        read_image(tmp_path / "line.png")
    assert read_image(dicom(tmp_path / "two.dcm", np.zeros((2, 2), np.uint16))).shape == (2, 2, 3)
    with pytest.raises(ImageReadError, match="at least 2 pixels"):
        read_image(dicom(tmp_path / "one.dcm", np.zeros((1, 1), np.uint16)))


def test_multi_frame_dicom_decodes_only_the_chosen_frame(tmp_path):
    # The header says 50,000 frames; only the first is in the file. Decoding all frames fails
    # (the data is short); reading just the chosen first one succeeds.
    frame = np.arange(20, dtype=np.uint16).reshape(4, 5)
    p = dicom(tmp_path / "mf.dcm", frame, NumberOfFrames=50_000)
    with pytest.raises(ImageReadError, match="multi-frame DICOM with 50000 frames: choose one"):
        read_image(p)
    out = read_image(p, frame=0)
    assert out.shape == (4, 5, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert image_size(p) == (4, 5)


def test_undecodable_transfer_syntax_is_one_clear_line(tmp_path, monkeypatch):
    import pydicom
    import pydicom.pixels
    from pydicom.uid import JPEG2000Lossless

    p = dicom(tmp_path / "j2k.dcm", np.zeros((8, 8), np.uint16))
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 60])
    ds.save_as(p, enforce_file_format=True)

    class Missing:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Missing())
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    msg = str(e.value)
    assert "\n" not in msg and "j2k.dcm" in msg and "JPEG 2000" in msg
    assert "pip install 'sim4seg[dicom]'" in msg and "SECRET" not in msg


def test_jpeg2000_dicom_decodes_with_the_dicom_extra(tmp_path):
    pytest.importorskip("openjpeg", reason="the [dicom] extra (pylibjpeg-openjpeg) is not installed")
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    raw = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    p = dicom(tmp_path / "j.dcm", raw)
    ds = pydicom.dcmread(p)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    ds.save_as(p, enforce_file_format=True)
    out = read_image(p)[..., 0]
    np.testing.assert_array_equal(out, io._to_uint8(raw.astype(np.float64)))
