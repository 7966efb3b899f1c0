"""Rasterization, EXIF frames, splits and layout discovery used by every converter."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from sim4seg.data.sources._base import Item, find_root, read_csv_rows
from sim4seg.data.sources._raster import EXIF_TRANSPOSE, rasterize_box, rasterize_polygon, to_display
from sim4seg.data.sources._splits import carve, stratified_split, vote_groups
from sim4seg.errors import InputError


def test_polygon_by_pixel_centres_and_hairline():
    m, why = rasterize_polygon([2, 1, 7, 1, 7, 4, 2, 4, 2, 1], 6, 10)  # closed rectangle
    assert why is None and m.sum() == 15 and m[1:4, 2:7].all()
    m, why = rasterize_polygon([1.2, 2.0, 8.7, 2.0, 8.7, 2.3, 1.2, 2.3], 6, 10)  # thinner than a pixel
    assert why is None and m.any() and set(np.nonzero(m)[0]) <= {1, 2}
    m, why = rasterize_polygon([-5, -5, 3, -5, 3, 3, -5, 3], 6, 10)  # partly outside: clipped
    assert why is None and m.sum() == 9
    assert "degenerate" in rasterize_polygon([0, 0, 5, 5, 9, 9], 6, 10)[1]  # collinear
    assert "outside" in rasterize_polygon([20, 20, 30, 20, 30, 30], 6, 10)[1]


def test_box_masks():
    m, why = rasterize_box([1, 1, 4, 3], 5, 5)
    assert why is None and m.sum() == 6 and m[1:3, 1:4].all()
    m, _ = rasterize_box([2.2, 0, 2.4, 5], 5, 5)  # thinner than a pixel
    assert m.sum() == 5 and m[:, 2].all()
    assert "degenerate" in rasterize_box([1, 1, 1, 4], 5, 5)[1]


@pytest.mark.parametrize("orientation", sorted(EXIF_TRANSPOSE))
def test_to_display_matches_exif_transpose(orientation):
    raw = np.zeros((4, 6), bool)
    raw[0, :2] = raw[3, 5] = True
    img = Image.fromarray(raw.astype(np.uint8) * 255)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(img)) > 0
    assert np.array_equal(to_display(raw, orientation), expected)


def _items(n_per_label: dict[str, int]) -> list[Item]:
    return [
        Item(subset="busi", key=f"{label}{i}", label=label, image="x")
        for label, n in n_per_label.items()
        for i in range(n)
    ]


def test_stratified_split_is_per_label_and_seeded():
    items = _items({"benign": 20, "malignant": 10})
    stratified_split(items, (8, 1, 1), seed=1)
    got = {(it.label, it.split) for it in items}
    assert sum(1 for it in items if it.label == "benign" and it.split == "train") == 16
    assert sum(1 for it in items if it.label == "malignant" and it.split == "test") == 1
    again = _items({"benign": 20, "malignant": 10})
    stratified_split(again, (8, 1, 1), seed=1)
    assert [it.split for it in again] == [it.split for it in items] and len(got) == 6
    other = _items({"benign": 20, "malignant": 10})
    stratified_split(other, (8, 1, 1), seed=2)
    assert [it.split for it in other] != [it.split for it in items]


def test_carve_and_group_vote():
    items = _items({"benign": 10})
    for it in items:
        it.split = "test"
    carve(items, "test", "val", 0.3, seed=0)
    assert sum(it.split == "val" for it in items) == 3
    a, b, c = (Item(subset="bfd", key=k, label="humerus", image="x", group="g") for k in "abc")
    a.split, b.split, c.split = "train", "train", "test"
    assert vote_groups([a, b, c]) == 1 and c.split == "train"
    a.split, b.split = "train", "val"
    vote_groups([a, b])
    assert a.split == b.split == "val"


def test_find_root_and_bom_csv(tmp_path):
    (tmp_path / "wrap" / "Kvasir-SEG" / "images").mkdir(parents=True)
    (tmp_path / "wrap" / "Kvasir-SEG" / "masks").mkdir()
    assert find_root(tmp_path / "wrap", ("images", "masks")) == tmp_path / "wrap" / "Kvasir-SEG"
    with pytest.raises(InputError, match="'masks'"):
        find_root(tmp_path / "wrap" / "Kvasir-SEG" / "images", ("images", "masks"))
    (tmp_path / "a.csv").write_bytes("\ufeffname,label\n\n0001.jpg,1\n".encode())
    assert read_csv_rows(tmp_path / "a.csv") == [["name", "label"], ["0001.jpg", "1"]]
