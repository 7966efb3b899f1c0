"""Test-time scaling (paper §3.3), the model-independent parts.

* ``perturb``: n perturbations θ_j of a batch of RVLS2M region masks on the ``g×g`` grid
  (Eq. 12's ``g(M_region, θ_j)``): k jitter, one-cell shift, dilation, erosion, cell
  dropout. Seeded and deterministic; ``j = 0`` is the unperturbed mask and perturbation
  ``j`` does not depend on ``n``.
* Mask selectors over the ``m×n`` candidates of one image: ``oracle`` (Eq. 13 — uses the
  ground truth, so it is only an *upper bound*, never a clinical result), and the
  ground-truth-free ``consensus``, ``score`` and ``vote``.
* ``vote_diagnosis``: majority vote over the m parsed diagnoses, with the agreement as
  its confidence.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

PERTURBATIONS: tuple[str, ...] = ("k_jitter", "shift", "dilate", "erode", "dropout")
"""Kinds of θ_j, applied in this order cyclically for j = 1, 2, ..."""

SELECTORS: tuple[str, ...] = ("oracle", "consensus", "score", "vote")
GT_FREE_SELECTORS: tuple[str, ...] = ("consensus", "score", "vote")

# One-cell shifts (dy, dx): down, up, right, left.
_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _generator(seed: int, j: int) -> torch.Generator:
    digest = hashlib.sha256(f"sim4seg-tts:{int(seed)}:{int(j)}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def topk_cells(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The ``k[b]`` best cells of each item: ``(B, gh, gw)`` scores, ``(B,)`` int → ``(B, gh, gw)`` bool.

    ``torch.topk`` on the flattened grid, as RVLS2M's ``region_mask(tau="topk")`` does.
    """
    b, gh, gw = scores.shape
    k = k.to(scores.device).clamp(1, gh * gw)
    flat = scores.reshape(b, gh * gw)
    idx = flat.topk(int(k.max()), dim=1).indices                                  # (B, kmax)
    keep = torch.arange(idx.shape[1], device=scores.device)[None, :] < k[:, None]  # (B, kmax)
    out = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, keep)
    return out.reshape(b, gh, gw)


def shift(mask: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Move item ``b`` by ``(dy[b], dx[b])`` cells (each in {-1, 0, 1}); cells leaving the grid are dropped.

    ``(B, gh, gw)`` bool → ``(B, gh, gw)`` bool.
    """
    padded = F.pad(mask[:, None].float(), (1, 1, 1, 1))[:, 0]                      # (B, gh+2, gw+2)
    b, gh, gw = mask.shape
    rows = torch.arange(gh, device=mask.device)[None, :] + 1 - dy.to(mask.device)[:, None]  # (B, gh)
    cols = torch.arange(gw, device=mask.device)[None, :] + 1 - dx.to(mask.device)[:, None]  # (B, gw)
    bi = torch.arange(b, device=mask.device)[:, None, None]
    return padded[bi, rows[:, :, None], cols[:, None, :]] > 0.5


def dilate(mask: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """3×3 max-pool dilation, ``steps`` times: ``(B, gh, gw)`` bool → same."""
    x = mask[:, None].float()
    for _ in range(steps):
        x = F.max_pool2d(x, 3, stride=1, padding=1)
    return x[:, 0] > 0.5


def erode(mask: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """3×3 erosion (min-pool; outside the grid does not erode), ``steps`` times."""
    x = mask[:, None].float()
    for _ in range(steps):
        x = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return x[:, 0] > 0.5


def _keep_one(out: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Where a perturbation emptied a non-empty mask, keep the original's best-scoring cell."""
    b, gh, gw = mask.shape
    flat = scores.reshape(b, -1).masked_fill(~mask.reshape(b, -1), float("-inf"))
    best = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.argmax(1, keepdim=True), True)
    lost = (~out.reshape(b, -1).any(1)) & mask.reshape(b, -1).any(1)
    return torch.where(lost[:, None, None], best.reshape(b, gh, gw), out)


def perturb(scores: torch.Tensor, mask: torch.Tensor, n: int, *, k: int, seed: int,
            kinds: Sequence[str] = PERTURBATIONS, jitter: int | None = None,
            drop: float = 0.25) -> torch.Tensor:
    """n region masks per item: ``(B, gh, gw)`` scores and bool mask → ``(n, B, gh, gw)`` bool.

    ``out[0]`` is ``mask``. For ``j >= 1`` the kind is ``kinds[(j-1) % len(kinds)]`` and its
    random draws come from ``(seed, j)`` alone (independent of ``n`` and of the batch's device):

    * ``k_jitter``: the top-``(k+δ)`` cells of ``scores``, δ uniform in ±``jitter`` without 0
      (default ``jitter = max(1, k // 4)``), per item;
    * ``shift``: the mask moved by exactly one cell up/down/left/right (random per item);
    * ``dilate`` / ``erode``: 3×3 max-pool dilation / erosion, repeated ``c + 1`` times in
      the kinds' c-th cycle so that later cycles differ;
    * ``dropout``: each selected cell dropped with probability ``drop``.

    A perturbation never empties a non-empty mask: the best-scoring original cell is kept.
    """
    if scores.shape != mask.shape or scores.dim() != 3:
        raise ValueError(f"scores and mask must both be (B, gh, gw); got {tuple(scores.shape)} and {tuple(mask.shape)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    bad = [kind for kind in kinds if kind not in PERTURBATIONS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty list of {PERTURBATIONS}, got {list(kinds)}")
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    mask = mask.bool()
    b, gh, gw = mask.shape
    dev = mask.device
    jit = max(1, k // 4) if jitter is None else int(jitter)
    if jit < 1:
        raise ValueError(f"jitter must be >= 1, got {jitter}")
    outs = [mask]
    for j in range(1, n):
        kind = kinds[(j - 1) % len(kinds)]
        cycle = (j - 1) // len(kinds)
        gen = _generator(seed, j)
        if kind == "k_jitter":
            mag = torch.randint(1, jit + 1, (b,), generator=gen)
            sign = torch.randint(0, 2, (b,), generator=gen) * 2 - 1
            out = topk_cells(scores, (k + sign * mag).to(dev))
        elif kind == "shift":
            d = torch.tensor(_SHIFTS)[torch.randint(0, len(_SHIFTS), (b,), generator=gen)]  # (B, 2)
            out = shift(mask, d[:, 0], d[:, 1])
        elif kind == "dilate":
            out = dilate(mask, cycle + 1)
        elif kind == "erode":
            out = erode(mask, cycle + 1)
        else:
            out = mask & (torch.rand((b, gh, gw), generator=gen) >= drop).to(dev)
        outs.append(_keep_one(out, mask, scores))
    return torch.stack(outs)


# ---------------------------------------------------------------- mask selectors


def _as_bool(x) -> torch.Tensor:
    """A torch bool tensor from a tensor or an array-like (no copy for a bool tensor)."""
    return (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))).bool()


def _flat(cands) -> torch.Tensor:
    c = _as_bool(cands)
    if c.dim() != 3 or c.shape[0] < 1:
        raise ValueError(f"candidates must be (N, H, W) with N >= 1, got {tuple(c.shape)}")
    return c.reshape(c.shape[0], -1)


def _ious(inter: torch.Tensor, area_a: torch.Tensor, area_b: torch.Tensor) -> torch.Tensor:
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def pairwise_iou(cands) -> torch.Tensor:
    """IoU of every pair of candidates: ``(N, H, W)`` bool → ``(N, N)`` float64 (both empty = 1)."""
    c = _flat(cands)
    dtype = torch.float32 if c.shape[1] < 2**24 else torch.float64  # exact integer counts
    x = c.to(dtype)
    inter = (x @ x.T).double()
    area = c.sum(1).double()
    return _ious(inter, area[:, None], area[None, :])


def iou_to(cands, gt) -> torch.Tensor:
    """IoU of each candidate with ``gt``: ``(N, H, W)``, ``(H, W)`` → ``(N,)`` float64."""
    c = _flat(cands)
    g = _as_bool(gt).reshape(-1).to(c.device)
    if g.numel() != c.shape[1]:
        raise ValueError(f"ground truth has {g.numel()} pixels, candidates have {c.shape[1]}")
    inter = (c & g).sum(1).double()
    return _ious(inter, c.sum(1).double(), g.sum().double())


def select_oracle(cands, gt) -> int:
    """UPPER BOUND ONLY — uses the ground truth. Eq. 13 maximises the mean of gIoU and cIoU;
    for one sample both equal its IoU, so this is the candidate of highest IoU with ``gt``
    (first on ties)."""
    return int(iou_to(cands, gt).argmax())


def select_consensus(cands) -> int:
    """The medoid: highest mean IoU to the *other* candidates (first on ties; 0 if N = 1)."""
    p = pairwise_iou(cands)
    n = p.shape[0]
    if n == 1:
        return 0
    return int(((p.sum(1) - p.diagonal()) / (n - 1)).argmax())


def select_score(cands, pred_iou) -> int:
    """The candidate with the highest predicted IoU (SAM's ``iou_scores``; first on ties)."""
    n = _flat(cands).shape[0]
    s = torch.as_tensor(np.asarray(pred_iou) if not isinstance(pred_iou, torch.Tensor) else pred_iou).reshape(-1)
    if s.numel() != n:
        raise ValueError(f"pred_iou has {s.numel()} values for {n} candidates")
    return int(s.double().argmax())


def pixel_vote(cands) -> torch.Tensor:
    """Pixel-wise strict majority of the candidates: ``(N, H, W)`` → ``(H, W)`` bool (> N/2 votes)."""
    c = _as_bool(cands)
    if c.dim() != 3 or c.shape[0] < 1:
        raise ValueError(f"candidates must be (N, H, W) with N >= 1, got {tuple(c.shape)}")
    return c.sum(0) * 2 > c.shape[0]


def select(name: str, cands, *, gt=None, pred_iou=None) -> tuple[torch.Tensor, int | None]:
    """Apply selector ``name`` → ``(mask (H, W) bool, index of the chosen candidate or None for vote)``."""
    c = _as_bool(cands)
    if name == "oracle":
        if gt is None:
            raise ValueError("the oracle selector needs the ground truth (it is an upper bound only)")
        i = select_oracle(c, gt)
    elif name == "consensus":
        i = select_consensus(c)
    elif name == "score":
        if pred_iou is None:
            raise ValueError("the score selector needs the predicted IoUs")
        i = select_score(c, pred_iou)
    elif name == "vote":
        return pixel_vote(c), None
    else:
        raise ValueError(f"unknown selector {name!r}; choose one of {SELECTORS}")
    return c[i], i


# ---------------------------------------------------------------- diagnosis vote


@dataclass(frozen=True)
class DiagnosisVote:
    label: str | None
    """Most frequent parsed label (``None`` if no answer parsed)."""
    confidence: float
    """Share of the m answers that agree with ``label`` (unparseable answers count in m)."""
    counts: dict[str, int]
    """Votes per label, in order of first occurrence."""


def vote_diagnosis(labels: Sequence[str | None]) -> DiagnosisVote:
    """Majority vote over m parsed labels (``None`` = unparseable, never wins); ties → first seen."""
    if not labels:
        raise ValueError("vote_diagnosis needs at least one answer")
    counts = Counter(label for label in labels if label is not None)
    if not counts:
        return DiagnosisVote(None, 0.0, {})
    order = {label: i for i, label in reversed(list(enumerate(labels))) if label is not None}
    ordered = dict(sorted(counts.items(), key=lambda kv: order[kv[0]]))
    best = max(ordered, key=lambda label: (ordered[label], -order[label]))
    return DiagnosisVote(best, ordered[best] / len(labels), ordered)
