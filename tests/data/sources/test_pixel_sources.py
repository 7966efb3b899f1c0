"""ISBI 2016, ISIC 2017, Kvasir-SEG, BUSI, TN3K and FIVES: mask files, labels, splits, skips."""

from __future__ import annotations

import numpy as np


def test_isbi2016(build_one, trees):
    b = build_one("isbi2016")
    s = b.samples
    got = {sid: (x.diagnosis, x.split) for sid, x in s.items()}
    # training set untouched; val carved from the official test set per label (277/378 of it)
    assert got["isbi2016-ISIC_0000000"] == ("benign", "train") and got["isbi2016-ISIC_0000001"] == (
        "malignant",
        "train",
    )
    assert got["isbi2016-ISIC_0000004"] == ("malignant", "val")
    assert sorted([got["isbi2016-ISIC_0000003"], got["isbi2016-ISIC_0000005"]]) == [
        ("benign", "test"),
        ("benign", "val"),
    ]
    for i in (0, 1, 3, 4, 5):
        sid = f"isbi2016-ISIC_{i:07d}"
        assert np.array_equal(b.mask(sid), trees.rect(24, 32, i, 2, 20 + i, 20))
        assert s[sid].source.mask_from == "pixel"
    assert list(b.skipped()) == ["ISBI2016_ISIC_Part1_Test_Data/ISIC_0000006.jpg"]


def test_isic2017(build_one, trees):
    b = build_one("isic2017")
    assert {sid: (x.diagnosis, x.split) for sid, x in b.samples.items()} == {
        "isic2017-ISIC_0000010": ("melanoma", "train"),
        "isic2017-ISIC_0000011": ("nevus", "train"),
        "isic2017-ISIC_0000012": ("seborrheic keratosis", "val"),  # mask named _Segmentation
        "isic2017-ISIC_0000013": ("nevus", "test"),
    }
    assert np.array_equal(b.mask("isic2017-ISIC_0000012"), trees.rect(20, 30, 3, 3, 12, 9))
    assert "both classes set" in b.skipped()["ISIC-2017_Test_v2_Data/ISIC_0000014.jpg"]


def test_kvasir_seg_jpeg_masks_and_seeded_split(build_one, trees):
    b = build_one("kvasir_seg")
    assert len(b.samples) == 10
    for i in range(10):
        assert np.array_equal(b.mask(f"kvasir_seg-cju{i:04d}xyz"), trees.kvasir_mask(i))
    splits = b.splits()
    assert sorted(splits.values()).count("train") == 8 and list(splits.values()).count("val") == 1
    again = build_one("kvasir_seg")  # same seed → same split
    assert again.splits() == splits


def test_busi(build_one, trees):
    b = build_one("busi")
    s, r = b.samples, trees.rect
    one = s["busi-benign_1"]
    assert (one.diagnosis, one.source.instances) == ("benign", 2)
    assert one.source.annotation_ids == ["benign (1)_mask.png", "benign (1)_mask_1.png"]
    assert np.array_equal(b.mask(one.id), r(20, 30, 2, 2, 10, 10) | r(20, 30, 15, 5, 25, 15))
    assert np.array_equal(b.mask("busi-malignant_1"), r(20, 30, 5, 5, 20, 15))  # RGB mask
    normal = s["busi-normal_1"]
    assert (normal.diagnosis, normal.source.mask_from, normal.source.instances) == ("normal", "empty", 0)
    assert not b.mask(normal.id).any()
    assert set(s) == {"busi-benign_1", "busi-benign_2", "busi-malignant_1", "busi-normal_1"}
    assert b.skipped() == {"malignant/malignant (2).png": "no mask malignant (2)_mask.png beside it"}


def test_tn3k(build_one, trees):
    b = build_one("tn3k")
    assert {sid: (x.diagnosis, x.split) for sid, x in b.samples.items()} == {
        "tn3k-trainval-0000": ("benign", "train"),
        "tn3k-trainval-0001": ("malignant", "val"),
        "tn3k-trainval-0002": ("benign", "train"),
        "tn3k-test-0000": ("malignant", "test"),
        "tn3k-test-0001": ("benign", "test"),
    }
    assert np.array_equal(b.mask("tn3k-trainval-0002"), trees.rect(32, 32, 4, 4, 22, 20))
    assert b.skipped() == {"trainval-image/0003.jpg": "no 0/1 label in label4trainval.csv"}


def test_fives(build_one, trees):
    b = build_one("fives")
    assert {sid: (x.diagnosis, x.split) for sid, x in b.samples.items()} == {
        "fives-train-1_A": ("age-related macular degeneration", "train"),
        "fives-train-2_N": ("normal", "train"),
        "fives-test-3_D": ("diabetic retinopathy", "test"),
        "fives-test-4_G": ("glaucoma", "test"),
    }
    assert np.array_equal(b.mask("fives-train-1_A"), trees.rect(36, 36, 0, 16, 36, 18))  # RGB vessel map
    assert np.array_equal(b.mask("fives-test-4_G"), trees.rect(36, 36, 0, 17, 36, 19))  # from "Groud truth"
    assert b.skipped() == {"test/Original/5_X.png": "name does not end in _A, _D, _G or _N"}
