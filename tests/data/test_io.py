import logging

import numpy as np
import pytest
from PIL import Image

from helpers import write_dicom
from sim4seg.data.io import image_size, is_dicom, read_image, read_mask, read_mask_raw, write_mask
from sim4seg.errors import ImageReadError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (12, 20), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_lossless_rgb_and_gray(tmp_path, suffix):
    Image.fromarray(RGB).save(tmp_path / f"c{suffix}")
    Image.fromarray(GRAY).save(tmp_path / f"g{suffix}")
    np.testing.assert_array_equal(read_image(tmp_path / f"c{suffix}"), RGB)
    out = read_image(tmp_path / f"g{suffix}")
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 1], GRAY)


def test_jpeg(tmp_path):
    flat = np.full((16, 24, 3), (200, 100, 50), np.uint8)
    Image.fromarray(flat).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (16, 24, 3)
    assert np.abs(out.astype(int) - flat).max() <= 3


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_scaled_min_max(tmp_path, suffix):
    arr = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    Image.fromarray(arr).save(tmp_path / f"a{suffix}")
    out = read_image(tmp_path / f"a{suffix}")
    np.testing.assert_array_equal(out[..., 0], [[0, 64], [128, 255]])


def test_rgba_and_palette(tmp_path):
    rgba = np.dstack([RGB, np.full((12, 20), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB)
    pal = Image.fromarray(GRAY).convert("P")
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))


@pytest.mark.parametrize(
    "orientation, rotate",
    [(6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1)), (3, lambda a: np.rot90(a, 2))],
)
def test_exif_orientation_applied(tmp_path, orientation, rotate):
    img = Image.fromarray(RGB)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(tmp_path / "e.png", exif=exif.tobytes())
    out = read_image(tmp_path / "e.png")
    np.testing.assert_array_equal(out, rotate(RGB))
    assert image_size(tmp_path / "e.png") == out.shape[:2]


_dicom = write_dicom  # the shared writer (tests/helpers.py)


def test_dicom_rescale_window_monochrome1(tmp_path, caplog):
    raw = np.array([[0, 100], [200, 400]], np.uint16)
    p = _dicom(
        tmp_path / "x.dcm", raw, "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-100, WindowCenter=300, WindowWidth=401
    )
    with caplog.at_level(logging.DEBUG):
        out = read_image(p)
    values = raw * 2.0 - 100  # modality LUT
    expected = np.clip(np.round(((values - 299.5) / 400 + 0.5) * 255), 0, 255)
    np.testing.assert_array_equal(out[..., 0], 255 - expected.astype(np.uint8))
    assert "SECRET" not in caplog.text and "Doe" not in caplog.text


def test_dicom_without_window_is_min_max(tmp_path):
    raw = np.array([[10, 20], [30, 50]], np.uint16)
    out = read_image(_dicom(tmp_path / "y", raw))  # no suffix: detected by the DICM magic
    np.testing.assert_array_equal(out[..., 2], [[0, 64], [128, 255]])
    assert is_dicom(tmp_path / "y")


def test_dicom_rgb(tmp_path):
    out = read_image(_dicom(tmp_path / "c.dcm", RGB, "RGB"))
    np.testing.assert_array_equal(out, RGB)


def test_dicom_errors_do_not_leak_patient_fields(tmp_path):
    p = _dicom(tmp_path / "big.dcm", np.zeros((40, 40), np.uint16))
    with pytest.raises(ImageReadError) as e:
        read_image(p, max_pixels=100)
    assert "over the limit" in str(e.value) and "SECRET" not in str(e.value)
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(ImageReadError, match="bad.dcm"):
        read_image(tmp_path / "bad.dcm")


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"missing\.png: file not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg: file is empty"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"notes\.png: not an image file"):
        read_image(tmp_path / "notes.png")
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"t\.jpg: cannot decode image"):
        read_image(tmp_path / "t.jpg")
    Image.fromarray(RGB).save(tmp_path / "ok.png")
    with pytest.raises(ImageReadError, match=r"ok\.png: image is 20x12 = 240 pixels, over the limit of 100"):
        read_image(tmp_path / "ok.png", max_pixels=100)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path)


def test_pixel_limit_from_environment(tmp_path, monkeypatch):
    Image.fromarray(RGB).save(tmp_path / "ok.png")
    monkeypatch.setenv("SIM4SEG_MAX_PIXELS", "200")
    with pytest.raises(ImageReadError, match="over the limit of 200"):
        read_image(tmp_path / "ok.png")
    monkeypatch.setenv("SIM4SEG_MAX_PIXELS", "240")
    assert read_image(tmp_path / "ok.png").shape == (12, 20, 3)


def test_masks_of_every_kind(tmp_path):
    m = np.zeros((10, 14), bool)
    m[2:6, 3:9] = True
    write_mask(tmp_path / "m.png", m)
    raw = read_mask_raw(tmp_path / "m.png")
    assert raw.ndim == 2 and set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), m)
    Image.fromarray(m.astype(np.uint8)).save(tmp_path / "01.png")  # 0/1 masks
    np.testing.assert_array_equal(read_mask(tmp_path / "01.png"), m)
    noisy = np.where(m, 240, 9).astype(np.uint8)  # JPEG-like values
    Image.fromarray(np.dstack([noisy] * 3)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), m)
    rgba = np.dstack([np.zeros_like(noisy)] * 3 + [np.where(m, 255, 0).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")  # shape only in alpha
    np.testing.assert_array_equal(read_mask(tmp_path / "alpha.png"), m)
    Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).save(tmp_path / "m.jpg", quality=80)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.jpg"), m)
    assert not list(tmp_path.glob(".*tmp"))
