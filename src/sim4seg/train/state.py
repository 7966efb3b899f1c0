"""What the training loop iterates and where a run is (saved in every checkpoint)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class TrainData:
    """What the loop iterates: datasets, their collate function and the training sampler."""

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset | None = None
    collate_fn: Callable | None = None
    sampler: torch.utils.data.Sampler | None = None
    """Training sampler with ``set_epoch(epoch)``, deterministic in its seed and the epoch (default: ``EpochShuffle``)."""


@dataclass
class TrainState:
    """Where the run is; saved as ``trainer_state.json`` in every checkpoint."""

    global_step: int = 0
    """Optimizer steps taken."""
    epoch: int = 0
    """Current epoch (0-based)."""
    batch_in_epoch: int = 0
    """Micro-batches this process consumed in ``epoch``."""
    samples_seen: int = 0
    """Training examples consumed (all processes)."""
    total_steps: int = 0
    steps_per_epoch: int = 0
    world_size: int = 1
    batch_size: int = 1
    grad_accum: int = 1
    validations: list[dict] = field(default_factory=list)
    scheduler: dict = field(default_factory=dict)
