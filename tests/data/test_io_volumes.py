"""NIfTI slices (axis, index, every slice) and multi-frame DICOM frames, with a clear message for each mistake."""

from __future__ import annotations

import nibabel as nib  # noqa: E402  (the serve extra)
import numpy as np
import pytest

from sim4seg.data.io import frame_count, read_image, read_nifti_slices
from sim4seg.errors import ImageReadError
from tests_dicom import multiframe


def _nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def test_nifti_slice_orientation_and_scaling(tmp_path):
    vol = np.zeros((4, 5, 3), np.int16)
    vol[0, 4, 1] = 100  # patient's far left (x=0), most anterior (y=4), slice z=1
    vol[3, 0, 1] = 50
    p = _nifti(tmp_path / "v.nii.gz", vol)
    assert frame_count(p) == 3 and frame_count(p, axis=0) == 4 and frame_count(p, axis=1) == 5
    img = read_image(p, index=1)
    assert img.shape == (5, 4, 3) and img.dtype == np.uint8 and (img[..., 0] == img[..., 2]).all()
    # anterior up, patient's left on the image's left; min..max scaled
    assert img[0, 0, 0] == 255 and img[4, 3, 0] == 127 and img[2, 2, 0] == 0
    sag = read_image(p, axis=0, index=0)
    assert sag.shape == (3, 5, 3) and sag[1, 4, 0] == 255  # rows: z (superior up), columns: y
    # a flipped affine (LAS) is put in canonical orientation first: the same picture
    flipped = _nifti(tmp_path / "f.nii", vol[::-1], np.diag([-1, 1, 1, 1]))
    np.testing.assert_array_equal(read_image(flipped, index=1), img)
    slices = list(read_nifti_slices(p, 2))
    assert len(slices) == 3 and np.array_equal(slices[1], img)


def test_nifti_errors_are_clear(tmp_path):
    p = _nifti(tmp_path / "ct.nii.gz", np.zeros((4, 4, 6), np.float32))
    with pytest.raises(ImageReadError, match=r"ct.nii.gz: 3-D volume with 6 slices: choose one .*0..5"):
        read_image(p)
    with pytest.raises(ImageReadError, match=r"slice 6 is out of range: the file has 6 slice\(s\) \(0..5\)"):
        read_image(p, index=6)
    with pytest.raises(ImageReadError, match="axis must be 0"):
        read_image(p, axis=3, index=0)
    with pytest.raises(ImageReadError, match="4-D"):
        read_image(_nifti(tmp_path / "t.nii", np.zeros((2, 2, 2, 3))), index=0)
    (tmp_path / "bad.nii").write_bytes(b"not a nifti" * 40)
    with pytest.raises(ImageReadError, match="bad.nii: cannot read NIfTI"):
        read_image(tmp_path / "bad.nii")
    two_d = _nifti(tmp_path / "xray.nii", np.arange(12, dtype=np.float32).reshape(3, 4))
    assert read_image(two_d).shape == (4, 3, 3) and frame_count(two_d) == 1
    nan = np.full((3, 3, 1), np.nan, np.float32)
    assert not read_image(_nifti(tmp_path / "nan.nii", nan)).any()


def test_multiframe_dicom_needs_a_frame(tmp_path):
    frames = [np.zeros((6, 5), np.uint8) for _ in range(4)]
    for k, f in enumerate(frames):
        f[k, k] = 200  # frame k is bright at (k, k) only
    p = multiframe(tmp_path / "cine.dcm", frames)
    assert frame_count(p) == 4
    with pytest.raises(ImageReadError, match=r"cine.dcm: multi-frame DICOM with 4 frames: choose one .*0..3") as e:
        read_image(p)
    assert "Doe" not in str(e.value)
    with pytest.raises(ImageReadError, match=r"frame 4 is out of range: the file has 4 frame\(s\)"):
        read_image(p, frame=4)
    for k in range(4):
        img = read_image(p, frame=k)
        assert img.shape == (6, 5, 3) and img[k, k, 0] == 255 and int(img[..., 0].sum()) == 255
