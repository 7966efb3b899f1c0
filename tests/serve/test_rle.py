"""COCO RLE of masks: byte-identical to pycocotools' compressed strings, and both forms round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from sim4seg.serve import rle


def test_matches_pycocotools_and_round_trips():
    mask_util = pytest.importorskip("pycocotools.mask", reason="pycocotools (the [train] extra) is not installed")
    rng = np.random.default_rng(0)
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = rng.random((h, w)) < rng.random()
        if t % 7 == 0:
            m[:] = t % 2  # all empty / all full
        ours = rle.encode(m)
        ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours == {"size": [h, w], "counts": ref["counts"].decode()}
        assert np.array_equal(rle.decode(ours), m)
        assert np.array_equal(rle.decode(rle.encode(m, compressed=False)), m)
        assert np.array_equal(mask_util.decode({"size": ours["size"], "counts": ours["counts"].encode()}), m)


def test_uncompressed_form_and_errors():
    m = np.array([[0, 1], [1, 1]], dtype=bool)  # column-major: 0, 1, 1, 1
    assert rle.encode(m, compressed=False) == {"size": [2, 2], "counts": [1, 3]}
    assert rle.encode(np.ones((2, 2), bool), compressed=False)["counts"] == [0, 4]
    with pytest.raises(ValueError, match="sum to"):
        rle.decode({"size": [2, 2], "counts": [1, 2]})
