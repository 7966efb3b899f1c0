"""Metrics against hand-computed values (LISA conventions)."""

from __future__ import annotations

import numpy as np
import pytest

from sim4seg.eval import metrics as M


def m(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows])


def test_mask_stats_hand_computed():
    pred = m(["##..", "##..", "....", "...."])  # 4 px
    gt = m([".##.", ".##.", ".##.", "...."])  # 6 px
    s = M.mask_stats(pred, gt)
    assert (s.intersection, s.union, s.pred_area, s.gt_area) == (2, 8, 4, 6)
    assert s.iou == pytest.approx(2 / 8)
    assert s.dice == pytest.approx(4 / 10)
    assert M.intersection_union(pred, gt) == (2, 8)


def test_both_empty_is_one_and_one_empty_is_zero():
    empty = np.zeros((3, 5), bool)
    some = empty.copy()
    some[1, 2] = True
    assert M.mask_stats(empty, empty).iou == 1.0
    assert M.mask_stats(empty, empty).dice == 1.0
    assert M.mask_stats(empty, some).iou == 0.0
    assert M.mask_stats(some, empty).iou == 0.0
    assert M.mask_stats(some, empty).dice == 0.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        M.mask_stats(np.zeros((3, 4)), np.zeros((4, 3)))


def test_giou_differs_from_ciou():
    # sample A: small, perfect (I=1, U=1); sample B: large, half right (I=50, U=100)
    assert M.giou([1.0, 0.5]) == pytest.approx(0.75)
    assert M.ciou([1, 50], [1, 100]) == pytest.approx(51 / 101)
    assert M.ciou([0, 0], [0, 0]) == 1.0
    assert M.accuracy([True, False, False, True]) == 0.5
    with pytest.raises(ValueError):
        M.giou([])


def test_accumulator_per_subset_and_overall():
    acc = M.MetricAccumulator()
    a_pred, a_gt = np.ones((1, 1), bool), np.ones((1, 1), bool)  # I=1 U=1
    b_gt = np.zeros((10, 10), bool)
    b_gt[:, :5] = True  # 50 px
    b_pred = np.zeros((10, 10), bool)
    b_pred[:, :] = True  # I=50 U=100
    e = np.zeros((4, 4), bool)  # both empty
    acc.add_masks("x", a_pred, a_gt, correct=True)
    acc.add_masks("x", b_pred, b_gt, correct=False, unparseable=True)
    acc.add_masks("y", e, e, correct=True)
    s = acc.summary()
    o = s["overall"]
    assert o["n"] == 3 and o["unparseable"] == 1
    assert o["giou"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert o["ciou"] == pytest.approx(51 / 101)
    assert o["dice"] == pytest.approx((1 + 100 / 150 + 1) / 3)
    assert o["acc"] == pytest.approx(2 / 3)
    x, y = s["per_subset"]["x"], s["per_subset"]["y"]
    assert x["giou"] == pytest.approx(0.75) and x["ciou"] == pytest.approx(51 / 101) and x["acc"] == 0.5
    assert y == {"giou": 1.0, "ciou": 1.0, "dice": 1.0, "acc": 1.0, "n": 1, "unparseable": 0}


def test_accumulator_unscored_metrics_are_none():
    acc = M.MetricAccumulator()
    acc.add("x", None, correct=True)
    acc.add("x", None, correct=False, unparseable=True)
    o = acc.summary()["overall"]
    assert o["giou"] is None and o["ciou"] is None and o["dice"] is None
    assert o["acc"] == 0.5 and o["n"] == 2 and o["unparseable"] == 1
    with pytest.raises(ValueError, match="unparseable"):
        acc.add("x", None, correct=True, unparseable=True)
    with pytest.raises(ValueError, match="no samples"):
        M.MetricAccumulator().summary()


def test_a_registered_metric_is_averaged_into_every_summary():
    from sim4seg.eval import metrics

    @metrics.register_metric("recall")
    def recall(s: metrics.MaskStats) -> float:
        return 1.0 if s.gt_area == 0 else s.intersection / s.gt_area

    try:
        acc = metrics.MetricAccumulator()
        gt = np.zeros((4, 4), bool)
        gt[:2] = True  # 8 pixels
        acc.add_masks("a", gt[:, :] & (np.arange(4) < 2)[None, :], gt)  # 4 of 8 found
        acc.add_masks("a", gt, gt)  # all found
        out = acc.summary()
        assert out["overall"]["recall"] == pytest.approx(0.75)
        assert out["per_subset"]["a"]["recall"] == pytest.approx(0.75)
    finally:
        del metrics.MASK_METRICS["recall"]
    with pytest.raises(ValueError, match="built-in"):
        metrics.register_metric("ciou")
