"""Segmentation and diagnosis metrics, as LISA (and the Sim4Seg paper) report them.

Per sample, with the predicted mask P and the ground truth G (``HxW`` bool):

* ``I = |P ∧ G|``, ``U = |P ∨ G|``; ``IoU = I / U``, and ``IoU = 1`` when both are empty
  (``U = 0``) — a correct "nothing to segment".
* ``Dice = 2I / (|P| + |G|)``, likewise 1 when both are empty.

Over a set of samples:

* ``gIoU`` = mean of the per-sample IoUs;
* ``cIoU`` = ``ΣI / ΣU`` (cumulative; 1 when every mask in the set is empty);
* ``Dice`` = mean of the per-sample Dice scores;
* ``Acc`` = share of samples whose parsed diagnosis equals the label; an unparseable
  answer is wrong.

``MetricAccumulator`` adds one sample at a time and keeps only sums, so a whole split is
scored without holding its masks in memory.

Per-sample mask metrics averaged over a set (``giou``, ``dice``) live in the registry
``MASK_METRICS``: a new one is a function of a sample's pixel counts (``MaskStats``) added
with ``@register_metric("name")``, and appears in every ``metrics.json`` from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class MaskStats:
    """Pixel counts of one (prediction, ground truth) pair."""

    intersection: int
    union: int
    pred_area: int
    gt_area: int

    @property
    def iou(self) -> float:
        return iou(self.intersection, self.union)

    @property
    def dice(self) -> float:
        return dice(self.intersection, self.pred_area, self.gt_area)


def mask_stats(pred: np.ndarray, gt: np.ndarray) -> MaskStats:
    """Counts for ``pred`` and ``gt`` (both ``HxW``, any dtype; nonzero = foreground)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    p, g = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    inter = int(np.count_nonzero(p & g))
    pa, ga = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    return MaskStats(intersection=inter, union=pa + ga - inter, pred_area=pa, gt_area=ga)


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """``(I, U)`` pixel counts of one sample."""
    s = mask_stats(pred, gt)
    return s.intersection, s.union


def iou(intersection, union):
    """``I / U``, 1.0 when ``U == 0`` (both masks empty: LISA's convention) — the one place this rule lives.

    Scalars give a float; NumPy arrays of counts give an array of IoUs, element-wise.
    """
    i, u = np.asarray(intersection, dtype=np.float64), np.asarray(union, dtype=np.float64)
    if (i < 0).any() or (u < i).any():
        raise ValueError(f"need 0 <= intersection <= union, got I={intersection}, U={union}")
    out = np.where(u > 0, i / np.maximum(u, 1), 1.0)
    return float(out) if out.ndim == 0 else out


def dice(intersection: int, pred_area: int, gt_area: int) -> float:
    """``2I / (|P| + |G|)``; 1.0 when both masks are empty."""
    total = pred_area + gt_area
    if intersection < 0 or 2 * intersection > total:
        raise ValueError(f"need 0 <= 2I <= |P|+|G|, got I={intersection}, |P|={pred_area}, |G|={gt_area}")
    return 1.0 if total == 0 else 2.0 * intersection / total


def giou(ious: Iterable[float]) -> float:
    """Mean of per-sample IoUs (LISA's gIoU)."""
    values = list(ious)
    if not values:
        raise ValueError("gIoU of an empty set of samples")
    return float(sum(values) / len(values))


def ciou(intersections: Iterable[int], unions: Iterable[int]) -> float:
    """``ΣI / ΣU`` (LISA's cIoU); 1.0 when every union is 0."""
    si, su = sum(intersections), sum(unions)
    return iou(si, su)


def accuracy(correct: Iterable[bool]) -> float:
    """Share of ``True``."""
    values = [bool(c) for c in correct]
    if not values:
        raise ValueError("accuracy of an empty set of samples")
    return sum(values) / len(values)


MASK_METRICS: dict[str, Callable[[MaskStats], float]] = {}
"""Per-sample mask metrics, averaged over the samples with a predicted mask: ``{name: f(MaskStats)}``."""


def register_metric(name: str):
    """Decorator: add ``f(MaskStats) -> float`` to ``MASK_METRICS`` under ``name`` (averaged per set)."""
    if name in ("ciou", "acc", "n", "unparseable"):
        raise ValueError(f"{name!r} is a built-in set-level value, not a per-sample metric")

    def add(f: Callable[[MaskStats], float]) -> Callable[[MaskStats], float]:
        MASK_METRICS[name] = f
        return f

    return add


@register_metric("giou")
def _sample_iou(s: MaskStats) -> float:
    """IoU of one sample; its mean is LISA's gIoU."""
    return s.iou


@register_metric("dice")
def _sample_dice(s: MaskStats) -> float:
    return s.dice


@dataclass
class _Totals:
    n: int = 0
    n_masks: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    sum_i: int = 0
    sum_u: int = 0
    n_answers: int = 0
    n_correct: int = 0
    n_unparseable: int = 0

    def add(self, stats: MaskStats | None, correct: bool | None, unparseable: bool) -> None:
        self.n += 1
        if stats is not None:
            self.n_masks += 1
            for name, f in MASK_METRICS.items():
                self.sums[name] = self.sums.get(name, 0.0) + f(stats)
            self.sum_i += stats.intersection
            self.sum_u += stats.union
        if correct is not None:
            self.n_answers += 1
            self.n_correct += bool(correct)
            self.n_unparseable += bool(unparseable)

    def summary(self) -> dict:
        seg = self.n_masks > 0
        means = {name: self.sums.get(name, 0.0) / self.n_masks if seg else None for name in MASK_METRICS}
        return {
            **means,
            "ciou": iou(self.sum_i, self.sum_u) if seg else None,
            "acc": self.n_correct / self.n_answers if self.n_answers else None,
            "n": self.n,
            "unparseable": self.n_unparseable,
        }


class MetricAccumulator:
    """Running sums per subset and overall; ``summary()`` gives the ``metrics.json`` dict.

    ``add(subset, stats, correct, unparseable)`` takes one sample: ``stats`` is ``None`` when
    the method predicts no mask (segmentation not scored), ``correct`` is ``None`` when it
    gives no diagnosis (accuracy not scored). A metric with no scored sample is ``None``.
    """

    def __init__(self) -> None:
        self._overall = _Totals()
        self._subsets: dict[str, _Totals] = {}

    def add(self, subset: str, stats: MaskStats | None, correct: bool | None = None, unparseable: bool = False) -> None:
        if unparseable and correct:
            raise ValueError("an unparseable answer cannot be correct")
        self._overall.add(stats, correct, unparseable)
        self._subsets.setdefault(subset, _Totals()).add(stats, correct, unparseable)

    def add_masks(
        self,
        subset: str,
        pred: np.ndarray | None,
        gt: np.ndarray,
        correct: bool | None = None,
        unparseable: bool = False,
    ) -> MaskStats | None:
        """Compute the sample's counts from its masks, add them, and return them."""
        stats = None if pred is None else mask_stats(pred, gt)
        self.add(subset, stats, correct, unparseable)
        return stats

    @property
    def n(self) -> int:
        return self._overall.n

    def summary(self) -> dict:
        """``{"overall": {...}, "per_subset": {subset: {...}}}``; each holds ``giou``, ``ciou``,
        ``dice``, ``acc`` (fractions in [0, 1], or ``None``), ``n`` and ``unparseable`` (counts)."""
        if self._overall.n == 0:
            raise ValueError("no samples were scored")
        return {
            "overall": self._overall.summary(),
            "per_subset": {k: v.summary() for k, v in sorted(self._subsets.items())},
        }
