"""RVLS2M: batched loop-free functions vs a per-cell Python loop like the released code's.

Setting of the issue: n = 576 tokens (24 x 24), 16 x 16 grid, batch 8, 1024 x 1024 images, top-36.
Two baselines, measured in the same run. The minimal one upsamples each similarity map to the image (via 336 x 336, as released), loops
over the cells (``.mean().item()``), sorts them and paints the 256 x 256 prompt. The second is the branch the released training code actually runs,
which also paints a full-resolution map of cell means, finding each cell's mean by a linear search. Also prints RVLS2M's share of the tiny
model's teacher-forced forward. Run: ``python benchmarks/bench_rvls2m.py``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from sim4seg.model import rvls2m

B, N, D, SIZE, GRID, TOPK = 8, 576, 256, (1024, 1024), 16, 36


def loop_reference(image_emb, seg_emb):
    """The released code's path per item: map → 336 → (no pad: square) → image size, per-cell ``.mean().item()``, sort."""
    prompts = []
    for b in range(image_emb.shape[0]):
        sim = (image_emb[b] @ seg_emb[b]).softmax(0)
        side = int(sim.numel() ** 0.5)
        sm = F.interpolate(sim.reshape(1, 1, side, side), (336, 336), mode="bilinear")
        up = F.interpolate(sm, SIZE, mode="bilinear")[0, 0]
        ch, cw = SIZE[0] // GRID, SIZE[1] // GRID
        cells = [
            (up[i * ch : (i + 1) * ch, j * cw : (j + 1) * cw].mean().item(), i, j)
            for i in range(GRID)
            for j in range(GRID)
        ]
        prompt = torch.zeros(256, 256)
        for _, i, j in sorted(cells, key=lambda c: c[0], reverse=True)[:TOPK]:
            prompt[i * 16 : (i + 1) * 16, j * 16 : (j + 1) * 16] = 1.0
        prompts.append(prompt)
    return torch.stack(prompts)


def released_path(image_emb, seg_emb):
    """The branch the released training code runs per item (``similarity4seg``): the map is moved to NumPy, each
    cell's mean is computed in a Python loop, the cells are sorted, a full-resolution map of cell means is painted
    with a linear search over the cell list for every cell, and the top cells are painted into the prompt."""
    prompts = []
    for b in range(image_emb.shape[0]):
        sim = (image_emb[b] @ seg_emb[b]).softmax(0)
        side = int(sim.numel() ** 0.5)
        sm = F.interpolate(sim.reshape(1, 1, side, side), (336, 336), mode="bilinear")
        up = F.interpolate(sm, SIZE, mode="bilinear")[0, 0].numpy()
        ch, cw = SIZE[0] // GRID, SIZE[1] // GRID
        cells = [
            (float(np.mean(up[i * ch : (i + 1) * ch, j * cw : (j + 1) * cw])), i, j)
            for i in range(GRID)
            for j in range(GRID)
        ]
        cells.sort(key=lambda c: c[0], reverse=True)
        cell_means = np.zeros_like(up)
        for i in range(GRID):
            for j in range(GRID):
                cell_means[i * ch : (i + 1) * ch, j * cw : (j + 1) * cw] = next(
                    v for v, r, c in cells if r == i and c == j
                )
        prompt = torch.zeros(256, 256)
        for _, i, j in cells[:TOPK]:
            prompt[i * 16 : (i + 1) * 16, j * 16 : (j + 1) * 16] = 1.0
        prompts.append(prompt)
    return torch.stack(prompts)


def batched(image_emb, seg_emb):
    scores = rvls2m.region_scores(image_emb, seg_emb, (24, 24), SIZE, grid=GRID)
    return rvls2m.to_sam_prompt(rvls2m.region_mask(scores, k=TOPK), SIZE)[:, 0]


def best_of(fn, *args, repeat=5, calls=1):
    """Best of ``repeat`` blocks, each the mean of ``calls`` back-to-back calls (sub-millisecond calls need a block)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        times.append((time.perf_counter() - t) / calls)
    return min(times), out


def model_share():
    from sim4seg.data.dataset import Collator, ExampleEncoder
    from sim4seg.model.tiny import build_tiny

    model, processor = build_tiny(seed=0)
    model.eval()
    enc = ExampleEncoder.for_model(model, processor)
    rng = np.random.default_rng(0)
    items = [
        enc.encode(
            rng.integers(0, 256, (200, 300, 3), dtype=np.uint8),
            "Segment the lesion.",
            "It is [SEG].",
            rng.random((200, 300)) > 0.5,
        )
        for _ in range(B)
    ]
    batch = Collator(processor.tokenizer.pad_token_id)(items)
    spent = {"rvls2m": 0.0}
    region = model.region

    def timed_region(*a, **k):
        t = time.perf_counter()
        out = region(*a, **k)
        spent["rvls2m"] += time.perf_counter() - t
        return out

    model.region = timed_region
    with torch.no_grad():
        model(**batch)  # warm-up
        spent["rvls2m"] = 0.0
        t = time.perf_counter()
        for _ in range(5):
            model(**batch)
        total = time.perf_counter() - t
    return spent["rvls2m"] / total, total / 5


def main() -> None:
    torch.manual_seed(0)
    image_emb, seg_emb = torch.randn(B, N, D), torch.randn(B, D)
    t_loop, ref = best_of(loop_reference, image_emb, seg_emb, repeat=3)
    t_released, ref_released = best_of(released_path, image_emb, seg_emb, repeat=3)
    batched(image_emb, seg_emb)  # warm-up
    t_fast, out = best_of(batched, image_emb, seg_emb, calls=100)
    agree = float((ref == out).float().mean())
    print(f"RVLS2M, batch {B}, n={N}, grid {GRID}x{GRID}, top-{TOPK}, images {SIZE[0]}x{SIZE[1]}")
    print(f"  per-cell loop reference : {t_loop * 1e3:9.2f} ms")
    print(
        f"  released training path  : {t_released * 1e3:9.2f} ms  (adds the cell-mean map with a linear search per cell)"
    )
    print(f"  batched (this package)  : {t_fast * 1e3:9.2f} ms  (mean of 100 calls)")
    print(f"  speed-up vs minimal loop: {t_loop / t_fast:9.1f}x")
    print(f"  speed-up vs released    : {t_released / t_fast:9.1f}x   (goal >= 100x)")
    assert torch.equal(ref, ref_released)
    print(f"  prompt pixels agreeing with the reference: {agree * 100:.2f}% (it interpolates twice, via 336)")
    share, per_forward = model_share()
    print(
        f"  tiny model forward (batch {B}, 200x300 images): {per_forward * 1e3:.1f} ms, RVLS2M share {share * 100:.1f}%"
    )


if __name__ == "__main__":
    main()
