"""Mask losses of Eq. 10: binary cross-entropy and Dice on mask logits at the original image size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel BCE. logits, target: (H, W) (or any equal shapes) → scalar float32."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice: ``1 − (2Σpt + s)/(Σp + Σt + s)`` with ``p = σ(logits)``; an empty target asks for an empty mask."""
    p = logits.float().sigmoid().flatten()
    t = target.float().flatten()
    return 1.0 - (2.0 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


def text_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token CE over the positions whose label is not -100. logits (B, T, V), labels (B, T)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    if not bool((shift_labels != -100).any()):
        return shift_logits.sum() * 0.0
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100
    )
