"""The demo's training epoch with and without ``data.cache_mb``: what decoding and preprocessing cost per epoch.

Both arms train the demo recipe (``configs/demo.yaml``: the tiny model, every part trains) for two epochs on
the same synthetic M3DS, in this process, one intra-op thread, in alternating order ``REPEATS`` times. The
first epoch fills the cache; the second reads from it. Printed: each arm's median step time in the second
epoch (wall time per step, data loading included, from the loop's own per-step ``samples_per_s``; full
batches only, so the epoch-end checkpoint and the short last batch do not count) and their ratio; the
baseline (no cache) is measured in the same run.
Run: ``python benchmarks/bench_data_cache.py``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sim4seg.data.synthetic import synthesize
from sim4seg.train.loop import train
from sim4seg.train.recipe import load_config

REPO = Path(__file__).resolve().parents[1]
REPEATS = 3


def second_epoch_steps(root: Path, out: Path, cache_mb: int) -> list[float]:
    """Train two epochs; return the second epoch's step times in seconds (full batches)."""
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            f"data.manifest={root}",
            f"train.output_dir={out}",
            f"data.cache_mb={cache_mb}",
            "optim.epochs=2",
            "train.log_every=1",
            "train.progress=false",
        ],
    )
    train(cfg)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("kind") == "train" and 1 < r["epoch"] < 2]  # epoch: fractional, from 0
    return [cfg.optim.batch_size / r["samples_per_s"] for r in steps[1:]]


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "m3ds"
        subsets = ["fracatlas", "isic2017", "kvasir_seg", "busi", "tn3k"]
        synthesize(root, 800, 0, subsets=subsets, size_range=(64, 96))
        times: dict[int, list[float]] = {0: [], 256: []}
        t0 = time.perf_counter()
        for i in range(REPEATS):
            for mb in (0, 256) if i % 2 == 0 else (256, 0):
                times[mb] += second_epoch_steps(root, Path(tmp) / f"run-{i}-{mb}", mb)
        off, on = statistics.median(times[0]), statistics.median(times[256])
        n = len(times[0])
        print(
            f"demo recipe, batch 16, second epoch: median step time over {n} steps per arm ({REPEATS} runs each, "
            f"{time.perf_counter() - t0:.0f} s in all)"
        )
        print(f"  no cache        {1000 * off:6.0f} ms   (baseline)")
        print(f"  cache_mb 256    {1000 * on:6.0f} ms   ({on / off:.2f}x the baseline, {off / on:.2f}x faster)")


if __name__ == "__main__":
    main()
