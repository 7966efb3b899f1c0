"""Training-step time on full-size X-ray JPEGs (2880×2304) vs the same images stored with ``--max-side 1024``.

A folder of full-size X-ray-like JPEGs (the synthetic M3DS's FracAtlas drawing, upscaled, with
film-grain noise so that the JPEGs are as large as real radiographs: ~1–2 MB) and their masks is
imported twice with ``sim4seg data import`` — as it is, and with ``--max-side 1024`` — and the tiny
Sim4Seg (``configs/tiny-cpu.yaml``) takes training steps on each: the data loading of a batch
(``M3DSDataset.__getitem__``: decode image and mask, resize to the model's inputs, tokenize, and
collate) and the forward + backward + AdamW step. The median over the steps is printed for both
parts and the ratio full / downscaled. The one-off cost of the downscaling import is printed too.

Run: ``python benchmarks/bench_max_side.py [--n 8] [--steps 8]``. One intra-op thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sim4seg.data.dataset import Collator, ExampleEncoder, M3DSDataset
from sim4seg.data.importer import import_folder
from sim4seg.data.schema import load_split, read_split
from sim4seg.data.subsets import SPLITS
from sim4seg.data.synthetic import synthesize
from sim4seg.train.recipe import load_config
from sim4seg.train.task import build_model

FULL = (2304, 2880)  # (H, W) of a typical digitised radiograph


def make_folder(root: Path, n: int) -> Path:
    syn = root / "syn"
    synthesize(syn, n, seed=0, subsets=["fracatlas"], size_range=(230, 288))
    src = root / "xrays"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,label"]
    samples = [s for split in ("train", "val", "test") for s in load_split(syn, split)[1]]
    for i, s in enumerate(samples):
        img = Image.open(syn / s.image).convert("L").resize(FULL[::-1], Image.BICUBIC)
        arr = np.asarray(img, np.float32) + rng.normal(0, 6, FULL).astype(np.float32)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(src / "images" / f"xr{i:03d}.jpg", quality=92)
        Image.open(syn / s.mask).resize(FULL[::-1], Image.NEAREST).save(src / "masks" / f"xr{i:03d}.png")
        rows.append(f"xr{i:03d}.jpg,{'no fracture' if s.diagnosis == 'no fracture' else 'fracture'}")
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    return src


def step_times(root: Path, model, processor, batch_size: int, steps: int) -> tuple[float, float]:
    """Median (data loading, forward + backward + step) seconds of a training step on ``root``'s samples."""
    samples = [s for split in SPLITS for s in read_split(root, split)]
    ds = M3DSDataset(
        root, "train", ExampleEncoder.for_model(model, processor), answer_format="diagnosis", samples=samples
    )
    collate = Collator(processor.tokenizer.pad_token_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    load_t, step_t = [], []
    for k in range(steps + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        batch = collate([ds[(k * batch_size + j) % len(ds)] for j in range(batch_size)])
        t1 = time.perf_counter()
        out = model(**{key: v for key, v in batch.items() if key != "meta"})
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if k:
            load_t.append(t1 - t0)
            step_t.append(t2 - t1)
    return statistics.median(load_t), statistics.median(step_t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="full-size images (default 8)")
    ap.add_argument("--steps", type=int, default=8, help="timed training steps per variant (default 8)")
    ap.add_argument("--max-side", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml")
    model, processor = build_model(cfg)
    model.train()
    bs = 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        src = make_folder(tmp, args.n)
        mb = sum(p.stat().st_size for p in (src / "images").iterdir()) / args.n / 2**20
        print(
            f"{args.n} X-ray-like JPEGs of {FULL[1]}x{FULL[0]} px ({mb:.2f} MB each) written in "
            f"{time.perf_counter() - t0:.1f}s"
        )
        times = {}
        for name, side in (("full size", None), (f"--max-side {args.max_side}", args.max_side)):
            out = tmp / f"m3ds-{side}"
            t0 = time.perf_counter()
            import_folder(
                out,
                src / "images",
                src / "masks",
                labels_csv=src / "labels.csv",
                subset="xr",
                modality="xray",
                target="fracture",
                no_finding="no fracture",
                max_side=side,
            )
            t_import = time.perf_counter() - t0
            load, step = step_times(out, model, processor, bs, args.steps)
            times[name] = (load, step)
            print(
                f"{name:<16} import {t_import:6.2f}s | per training step (batch {bs}): data loading {load:.3f}s, "
                f"forward+backward+step {step:.3f}s, total {load + step:.3f}s"
            )
        (lf, sf), (ld, sd) = times.values()
        print(
            f"speed-up with --max-side {args.max_side}: data loading {lf / ld:.1f}x, "
            f"whole training step {(lf + sf) / (ld + sd):.1f}x"
        )


if __name__ == "__main__":
    main()
