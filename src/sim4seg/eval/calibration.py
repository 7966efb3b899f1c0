"""How far to trust the model's own uncertainty: calibration of the diagnosis confidence and the link
between the mask's pixel uncertainty and its error — computed from the per-sample evaluation rows.

* Diagnosis confidence (the agreement of the m sampled answers) against correctness: a reliability
  table over equal-width bins and the expected calibration error
  ``ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|``. A greedy single answer has no confidence
  (``None``) and is left out.
* Mean pixel uncertainty (the share of the m×n candidate masks disagreeing with the chosen one)
  against the mask error ``1 − IoU``: Pearson's and Spearman's correlation (a useful uncertainty
  correlates positively).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> tuple[float, list[dict]]:
    """``(ECE, bins)``: each bin ``{"lo", "hi", "n", "confidence", "accuracy"}`` (empty bins: n = 0, None)."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if c.shape != y.shape or c.ndim != 1 or c.size == 0:
        raise ValueError("need equally long, non-empty confidence and correctness lists")
    if ((c < 0) | (c > 1)).any():
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, bins - 1)  # a confidence of 1 is in the last bin
    out, ece = [], 0.0
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        conf = float(c[sel].mean()) if n else None
        acc = float(y[sel].mean()) if n else None
        if n:
            ece += n / c.size * abs(acc - conf)
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n, "confidence": conf, "accuracy": acc})
    return float(ece), out


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # ties: mean rank
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def correlation(x: Sequence[float], y: Sequence[float]) -> dict:
    """Pearson's and Spearman's correlation of ``x`` and ``y`` (``None`` where a side is constant or n < 3)."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("need two equally long lists")

    def r(u, v):
        if len(u) < 3 or u.std() == 0 or v.std() == 0:
            return None
        return float(np.corrcoef(u, v)[0, 1])

    return {"n": int(a.size), "pearson": r(a, b), "spearman": r(_ranks(a), _ranks(b)) if a.size else None}


def uncertainty_report(rows: Sequence[Mapping], bins: int = 10) -> dict:
    """From evaluation rows (``confidence``, ``correct``, ``uncertainty_mean``, ``iou``) →
    ``{"calibration": {...} | None, "uncertainty_vs_error": {...} | None, "skipped": {...}}``."""
    cal = [
        (r["confidence"], r["correct"])
        for r in rows
        if r.get("confidence") is not None and r.get("correct") is not None
    ]
    unc = [
        (r["uncertainty_mean"], 1.0 - r["iou"])
        for r in rows
        if r.get("uncertainty_mean") is not None and r.get("iou") is not None
    ]
    out: dict = {
        "calibration": None,
        "uncertainty_vs_error": None,
        "skipped": {"no_confidence": len(rows) - len(cal), "no_uncertainty": len(rows) - len(unc)},
    }
    if cal:
        ece, table = reliability([c for c, _ in cal], [y for _, y in cal], bins)
        out["calibration"] = {
            "n": len(cal),
            "ece": ece,
            "mean_confidence": float(np.mean([c for c, _ in cal])),
            "accuracy": float(np.mean([y for _, y in cal])),
            "bins": table,
        }
    if unc:
        out["uncertainty_vs_error"] = {
            **correlation([u for u, _ in unc], [e for _, e in unc]),
            "mean_uncertainty": float(np.mean([u for u, _ in unc])),
            "mean_error": float(np.mean([e for _, e in unc])),
        }
    return out
