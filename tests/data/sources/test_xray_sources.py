"""FracAtlas, bone fracture, BFD and ChestX-Det: polygons/boxes, labels, splits, skips."""

from __future__ import annotations

import json

import numpy as np

from sim4seg.data.sources import fracatlas


def test_fracatlas(build_one, trees):
    b = build_one("fracatlas")
    s = b.samples
    r = trees.rect
    # two instances OR-ed; the degenerate third one is dropped and reported
    one = s["fracatlas-IMG0000001"]
    assert (one.diagnosis, one.split, one.source.instances, one.source.mask_from) == (
        "hand fracture",
        "train",
        2,
        "polygon",
    )
    assert np.array_equal(b.mask(one.id), r(30, 40, 5, 5, 15, 10) | r(30, 40, 20, 20, 30, 25))
    assert len(one.source.annotation_ids) == 2
    # grayscale image, two regions flagged → multi-region; triangle rasterized by pixel centres
    two = s["fracatlas-IMG0000002"]
    assert (two.diagnosis, two.split) == ("multi-region fracture", "train")
    rr, cc = np.mgrid[0:30, 0:40]
    tri = (rr >= 10) & (rr <= 19) & (cc >= 10) & (cc + rr < 29)
    assert np.array_equal(b.mask(two.id), tri) and tri.sum() == 45
    # EXIF 8, annotations in the displayed (rotated) frame: used as they are
    rot = s["fracatlas-IMG0002628"]
    assert b.image_hw(rot.id) == (40, 30) and rot.diagnosis == "shoulder fracture"
    assert np.array_equal(b.mask(rot.id), r(40, 30, 2, 20, 8, 30))
    # EXIF 6, annotations in the stored frame: rasterized there, then rotated like the image
    four = s["fracatlas-IMG0000004"]
    assert (four.diagnosis, four.split) == ("hip fracture", "val") and b.image_hw(four.id) == (40, 30)
    assert np.array_equal(b.mask(four.id), np.rot90(r(30, 40, 0, 0, 10, 5), k=-1))
    # in Fractured/ with fractured=0 in the CSV: the polygons decide; partly outside → clipped
    five = s["fracatlas-IMG0000005"]
    assert (five.diagnosis, five.split) == ("hand fracture", "test")
    assert np.array_equal(b.mask(five.id), r(30, 40, 30, 0, 40, 10))
    # non-fractured images: no fracture, empty mask, seeded split 4/1/1 (another category's polygon ignored)
    nf = [x for x in s.values() if x.diagnosis == "no fracture"]
    assert len(nf) == 6 and all(x.source.instances == 0 and x.source.mask_from == "empty" for x in nf)
    assert all(not b.mask(x.id).any() for x in nf)
    assert sorted(x.split for x in nf) == ["test", "train", "train", "train", "train", "val"]
    skipped = b.skipped()
    assert skipped["images/Fractured/IMG0000006.jpg"] == "no annotation of this image covers a pixel"
    coco = fracatlas.COCO
    assert "degenerate" in skipped[f"{coco}#2"] and "degenerate" in skipped[f"{coco}#7"]
    assert "outside" in skipped[f"{coco}#8"]
    assert skipped[f"{coco}: IMG0000099.jpg"] == "annotated image not found in images/"
    assert len(s) == 11 and "fracatlas-IMG0000006" not in s


def test_fracatlas_category_matched_by_name(tmp_path, trees):
    root = trees.write_fracatlas(tmp_path) / "FracAtlas"
    path = root / fracatlas.COCO
    coco = json.loads(path.read_text())
    coco["categories"] = [{"id": 0, "name": "fractured"}, {"id": 1, "name": "bone"}]
    for a in coco["annotations"]:
        a["category_id"] = 1 - a["category_id"]
    path.write_text(json.dumps(coco))
    scan = fracatlas.scan(fracatlas.locate(tmp_path), seed=0)
    labels = {it.key: it.label for it in scan.items}
    assert labels["IMG0000001"] == "hand fracture" and labels["IMG0000010"] == "no fracture"
    assert len([it for it in scan.items if it.polygons]) == 6


def test_bone_fracture_boxes(build_one, trees):
    b = build_one("bone_fracture")
    s, r = b.samples, trees.rect
    a = s["bone_fracture-105_jpg.rf.aaa"]
    assert (a.diagnosis, a.source.mask_from, a.source.instances) == ("fracture", "box", 2)
    assert np.array_equal(b.mask(a.id), r(20, 40, 10, 5, 30, 15) | r(20, 40, 8, 4, 12, 6))
    # the augmentation copies of 105 (train + valid) land together (tie → the held-out split)
    assert a.split == s["bone_fracture-105_jpg.rf.ccc"].split == "val"
    empty = s["bone_fracture-106_jpg.rf.bbb"]
    assert (empty.diagnosis, empty.split, empty.source.instances) == ("no fracture", "train", 0)
    assert not b.mask(empty.id).any()
    m = s["bone_fracture-107_jpg.rf.ddd"]
    assert m.diagnosis == "messed up angle" and np.array_equal(b.mask(m.id), r(30, 30, 12, 12, 18, 18))
    t = s["bone_fracture-109_jpg.rf.fff"]
    assert (t.diagnosis, t.split) == ("angle", "test") and np.array_equal(b.mask(t.id), r(30, 30, 9, 9, 21, 21))
    assert b.skipped() == {
        "test/images/108_jpg.rf.eee.jpg": "no label file (expected test/labels/108_jpg.rf.eee.txt)",
        "test/labels/109_jpg.rf.fff.txt:2": "class 7 not in data.yaml (4 names)",
    }


def _bfd_checks(b, trees):
    s, r = b.samples, trees.rect
    copies = [s[f"bfd-a1_jpg.rf.x{i}"] for i in (1, 2, 3)]
    assert {c.split for c in copies} == {"test"}  # train+valid+test copies → one split
    for c in copies:
        assert c.diagnosis == "elbow positive" and np.array_equal(b.mask(c.id), r(40, 40, 4, 4, 20, 20))
    three = s["bfd-a3_jpg.rf.z1"]
    rr, cc = np.mgrid[0:40, 0:40]
    tri = (rr <= 9) & (cc >= rr) & (cc <= 9)
    assert (three.diagnosis, three.split, three.source.instances) == ("forearm fracture", "train", 2)
    assert np.array_equal(b.mask(three.id), tri | r(40, 40, 20, 20, 40, 40))
    box = s["bfd-b1_jpg.rf.w1"]
    assert box.diagnosis == "wrist positive" and np.array_equal(b.mask(box.id), r(40, 40, 10, 10, 30, 30))
    assert b.source["excluded"] == [
        {"file": "train/images/a2_jpg.rf.y1.jpg", "reason": "empty label file and bfd has no no-finding label"}
    ]
    assert "bfd-a2_jpg.rf.y1" not in s and b.source["skipped"] == []


def test_bfd_polygons_and_groups(build_one, trees):
    _bfd_checks(build_one("bfd"), trees)


def test_bfd_six_class_yaml(tmp_path, trees):
    from sim4seg.data.build import build

    names = [n for n in trees.BFD_NAMES if n != "humerus fracture"]  # ids shift after 2
    src = trees.write_bfd(tmp_path / "src", names=names)
    out = tmp_path / "out"
    report = build(out, {"bfd": src}, workers=1)
    assert report["sources"]["bfd"]["counts"]["test"] == {"elbow positive": 3, "wrist positive": 1}


def test_chestx_det(build_one, trees):
    b = build_one("chestx_det")
    s, r = b.samples, trees.rect
    one = s["chestx_det-1"]
    assert (one.diagnosis, one.split, one.source.instances) == ("effusion", "train", 3)
    assert np.array_equal(
        b.mask(one.id), r(40, 40, 0, 0, 10, 10) | r(40, 40, 20, 0, 30, 10) | r(40, 40, 30, 30, 33, 33)
    )
    assert [a.split(":")[-1] for a in one.source.annotation_ids] == ["effusion", "nodule", "effusion"]
    assert (s["chestx_det-2"].diagnosis, s["chestx_det-2"].source.instances) == ("no finding", 0)
    assert s["chestx_det-3"].diagnosis == "pleural thickening"
    assert np.array_equal(b.mask("chestx_det-3"), r(40, 40, 5, 5, 15, 25))
    six = s["chestx_det-6"]  # RGBA PNG
    assert six.diagnosis == "diffuse nodule" and b.image_hw(six.id) == (40, 40)
    # official test set: val carved from it (one per label here), train untouched
    assert {sid: x.split for sid, x in s.items()} == {
        "chestx_det-1": "train",
        "chestx_det-2": "train",
        "chestx_det-3": "train",
        "chestx_det-4": "val",
        "chestx_det-5": "val",
        "chestx_det-6": "val",
    }
    assert b.skipped() == {"ChestX_Det_train.json[3] 404.png": "image not found below the source folder"}
