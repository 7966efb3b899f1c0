"""Throughput of ``sim4seg data build`` on a generated 2,000-image source tree.

Half the tree is a Kvasir-SEG layout (JPEG images + lossy JPEG masks, thresholded), half
a BFD YOLO-seg layout (JPEG images + normalised polygons, rasterized), 512x448 pixels.
Each configuration runs as a fresh ``sim4seg data build`` process into an empty output
folder; the baseline is 1 worker in the same run. Prints images/s, the speed-up of 2
workers over 1, a resumed re-run (nothing left to do), and the peak resident memory of
the largest process (``wait4`` rusage; workers included).

    python benchmarks/bench_build.py [--n 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

W, H = 512, 448


def generate(base: Path, n: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    kv = base / "Kvasir-SEG"
    bfd = base / "BoneFractureYolo8"
    (kv / "images").mkdir(parents=True)
    (kv / "masks").mkdir()
    names = [
        "elbow positive",
        "fingers positive",
        "forearm fracture",
        "humerus fracture",
        "humerus",
        "shoulder fracture",
        "wrist positive",
    ]
    for f in ("train", "valid", "test"):
        (bfd / f / "images").mkdir(parents=True)
        (bfd / f / "labels").mkdir(parents=True)
    (bfd / "data.yaml").write_text(f"nc: 7\nnames: {names!r}\n")
    noise = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    for i in range(n):
        img = Image.fromarray(np.roll(noise, i * 7, axis=1))
        cx, cy, r = rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.7) * H, rng.uniform(30, 90)
        if i % 2 == 0:
            img.save(kv / "images" / f"k{i:05d}.jpg", quality=90)
            mask = Image.new("RGB", (W, H))
            ImageDraw.Draw(mask).ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 255, 255))
            mask.save(kv / "masks" / f"k{i:05d}.jpg", quality=90)
        else:
            split = ("train", "train", "train", "valid", "test")[i % 5]
            img.save(bfd / split / "images" / f"b{i:05d}_jpg.rf.{i:x}.jpg", quality=90)
            k = int(rng.integers(3, 9))
            t = np.sort(rng.uniform(0, 2 * np.pi, k))
            pts = " ".join(f"{(cx + r * np.cos(a)) / W:.5f} {(cy + r * np.sin(a)) / H:.5f}" for a in t)
            (bfd / split / "labels" / f"b{i:05d}_jpg.rf.{i:x}.txt").write_text(f"{int(rng.integers(7))} {pts}\n")
    return {"kvasir_seg": kv, "bfd": bfd}


def run_build(sources: dict[str, Path], out: Path, workers: int) -> tuple[float, int]:
    """Seconds and peak RSS (MiB) of one ``sim4seg data build`` process."""
    cmd = [sys.executable, "-m", "sim4seg.apps.cli", "data", "build", "--out", str(out), "--workers", str(workers)]
    for name, p in sources.items():
        cmd += ["--source", f"{name}={p}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"build failed with status {proc.returncode}: {' '.join(cmd)}")
    return seconds, usage.ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images in the generated tree (default 2000)")
    ap.add_argument("--keep", default=None, help="generate into this folder and keep it")
    args = ap.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench_build_"))
    try:
        t0 = time.perf_counter()
        sources = generate(base / "src", args.n)
        print(f"generated {args.n} images ({W}x{H}) in {time.perf_counter() - t0:.1f}s")
        results = {}
        for workers in (1, 2):
            out = base / f"out{workers}"
            load = os.getloadavg()[0]
            seconds, rss = run_build(sources, out, workers)
            results[workers] = seconds
            print(
                f"workers={workers}: {seconds:6.1f}s  {args.n / seconds:7.1f} images/s  peak RSS {rss} MiB"
                f"  (load average before: {load:.2f} on {os.cpu_count()} CPUs)"
            )
        print(f"speed-up 2 workers / 1 worker: {results[1] / results[2]:.2f}x")
        seconds, rss = run_build(sources, base / "out2", 2)
        print(
            f"resumed re-run (all done): {seconds:.1f}s  {args.n / seconds:.0f} images/s  "
            f"({results[2] / seconds:.1f}x faster than building)  peak RSS {rss} MiB"
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
