"""Checking a torch device the caller asked for, before anything is loaded onto it."""

from __future__ import annotations

import torch

from sim4seg.errors import InputError


def check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, or an ``InputError`` saying why it cannot be used on this machine.

    Without the check, ``device="cuda"`` on a machine without CUDA ends in torch's bare
    ``AssertionError`` ("Torch not compiled with CUDA enabled") after the weights were read.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {str(device)!r} (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(
                f"device {str(device)!r} was requested but CUDA is not available ({why}); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {str(device)!r} was requested but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"device {str(device)!r} was requested but MPS is not available; use device='cpu'")
    return dev
