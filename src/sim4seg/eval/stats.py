"""How noisy a figure is: bootstrap intervals over samples and permutation tests over seeds (numpy only).

- ``bootstrap_ci``: a percentile interval of gIoU / cIoU / Acc / Dice from the evaluator's per-sample
  rows, resampling the samples (what a sweep's error bars show: the test split's sampling noise).
- ``paired_permutation_test``: the two-sided p-value of the mean difference between two arms run
  with the same seeds (sign flips of the per-seed differences; exact up to 2^16 flips).
- ``mean_sd``: mean and sample standard deviation (ddof = 1).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

EXACT_LIMIT = 16
"""Up to this many pairs the permutation test enumerates every sign flip; above, it samples."""


def metric_arrays(rows: Sequence[Mapping], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-sample numerator and denominator whose ratio of sums is ``metric`` (``None`` if not scored).

    ``rows``: the evaluator's per-sample rows (``iou``, ``dice``, ``intersection``, ``union``, ``correct``).
    """
    if metric == "ciou":
        kept = [r for r in rows if r.get("intersection") is not None]
        num = [r["intersection"] for r in kept]
        den = [r["union"] for r in kept]
    elif metric in ("giou", "dice"):  # the evaluator's rows hold the per-sample IoU as "iou"
        key = "iou" if metric == "giou" else "dice"
        num = [r[key] for r in rows if r.get(key) is not None]
        den = [1.0] * len(num)
    elif metric == "acc":
        num = [float(r["correct"]) for r in rows if r.get("correct") is not None]
        den = [1.0] * len(num)
    else:
        raise ValueError(f"unknown metric {metric!r}; choose giou, ciou, dice or acc")
    if not num:
        return None
    return np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)


def bootstrap_ci(
    rows: Sequence[Mapping], metric: str, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval (fractions) of ``metric`` over the samples of ``rows``.

    cIoU resamples (intersection, union) pairs and takes the ratio of sums, as the metric does; an
    all-empty resample (zero union) counts as 1, the both-empty convention. ``None`` if not scored.
    """
    arrays = metric_arrays(rows, metric)
    if arrays is None:
        return None
    num, den = arrays
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(n_boot, len(num)))
    n_sum, d_sum = num[idx].sum(1), den[idx].sum(1)
    values = np.where(d_sum > 0, n_sum / np.where(d_sum > 0, d_sum, 1.0), 1.0)
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def paired_permutation_test(a: Sequence[float], b: Sequence[float], *, n_perm: int = 100_000, seed: int = 0) -> float:
    """Two-sided p-value of ``mean(a - b)`` under the null that the arms are exchangeable within a pair.

    Flips the sign of each pair's difference: every one of the 2^K flips when K <= ``EXACT_LIMIT``,
    else ``n_perm`` random ones (p then counts the observed arrangement, so it is never 0).
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0 or len(a) != len(b):
        raise ValueError("the two arms need the same, non-zero number of paired values")
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if len(d) <= EXACT_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
        stats = np.abs((signs * d).mean(1))
        return float((stats >= observed - tol).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_perm, len(d)))
    stats = np.abs((signs * d).mean(1))
    return float(((stats >= observed - tol).sum() + 1) / (n_perm + 1))
