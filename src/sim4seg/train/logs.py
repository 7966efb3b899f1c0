"""Training logs: loss terms averaged over a logging window and over processes; JSONL rows and TensorBoard."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"


class Window:
    """Running sums of the loss terms between two logging steps, reduced over processes when read."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.sums: dict[str, float] = {}
        self.batches = 0
        self.samples = 0
        self.step_samples = 0
        self.t0 = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], bs: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.batches += 1
        self.samples += bs
        self.step_samples += bs

    def samples_total(self) -> int:
        n = self.step_samples * self.accelerator.num_processes  # even_batches: every process sees as many
        self.step_samples = 0
        return n

    def flush(self) -> dict:
        keys = list(self.sums)
        vec = torch.tensor(
            [self.sums[k] for k in keys] + [self.batches, self.samples],
            dtype=torch.float64,
            device=self.accelerator.device,
        )
        vec = self.accelerator.reduce(vec, reduction="sum")
        *sums, batches, samples = vec.tolist()
        elapsed = time.perf_counter() - self.t0
        row = {k: s / max(batches, 1) for k, s in zip(keys, sums)} | {"samples_per_s": samples / max(elapsed, 1e-9)}
        self.sums, self.batches, self.samples, self.t0 = {}, 0, 0, time.perf_counter()
        return row


class RunLogger:
    """JSONL rows and TensorBoard scalars, written by the main process only."""

    def __init__(self, out: Path, main: bool, step: int):
        self.main, self.path, self.tb = main, out / LOG_NAME, None
        if main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"), purge_step=step + 1 if step else None)
            except ImportError:  # tensorboard is an optional extra
                log.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")

    def write(self, row: dict, kind: str) -> None:
        if not self.main:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, **row}) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k if "/" in k else f"{kind}/{k}", v, row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
