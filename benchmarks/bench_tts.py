"""Test-time scaling cost: m×n ∈ {1×1, 4×1, 8×4} per image, relative to 1×1, on the tiny model.

Per image: ``set_image`` (CLIP + SAM image encoder, once) and ``predict`` (one ``generate`` call for
the m answers, RVLS2M, n perturbations, m×n masks decoded in batches against the cached SAM
embedding, selection). For contrast, the same 8×4 done naively — image re-encoded and one
``generate`` per answer, one decoder call per candidate — measured in the same run.

Run: ``python benchmarks/bench_tts.py [--checkpoint DIR]``. Without a checkpoint the tiny model of
``configs/demo.yaml`` is trained for 60 steps on a synthetic M3DS first (it must emit [SEG] and EOS).
One intra-op thread (stable timings on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sim4seg.data.schema import load_split
from sim4seg.infer import tts
from sim4seg.infer.predictor import Predictor

SETTINGS = ((1, 1), (4, 1), (8, 4))


def quick_checkpoint(work: Path) -> Path:
    from sim4seg.train.loop import train
    from sim4seg.train.recipe import load_config

    recipe = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    cfg = load_config(
        recipe,
        [
            f"data.manifest={work / 'm3ds'}",
            "data.synthetic.n=200",
            f"train.output_dir={work / 'run'}",
            "train.max_steps=60",
            "train.progress=false",
            "optim.warmup_steps=5",
        ],
    )
    return train(cfg).final_dir


def naive_8x4(p: Predictor, image, query: str, m: int = 8, n: int = 4) -> None:
    """The same work without sharing: per answer, re-encode the image and generate alone; decode each candidate alone."""
    model = p.model
    for i in range(m):
        p.set_image(image)
        ids = p.prompt_ids(query)
        cfg = tts.TTSConfig(m=1, greedy_first=False, seed=i, max_new_tokens=p.tts.max_new_tokens)
        gen = tts.sample_answers(model, ids, torch.ones_like(ids), p.encoding, cfg)
        tts.candidate_masks(model, p.encoding, gen, n, decode_batch=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else quick_checkpoint(Path(tmp))
        root = Path(args.checkpoint).parent.parent / "m3ds" if args.checkpoint else Path(tmp) / "m3ds"
        _, samples = load_split(root, "test")
        samples = samples[: args.images]
        p = Predictor.from_checkpoint(ckpt, tts=tts.TTSConfig(max_new_tokens=48))

        def per_image(m: int, n: int) -> tuple[float, float, float]:
            p.tts = tts.TTSConfig(m=m, n=n, max_new_tokens=48)
            times, tokens, cands = [], [], []
            for s in samples:
                t0 = time.perf_counter()
                p.set_image(root / s.image)
                pred = p.predict(s.query)
                times.append(time.perf_counter() - t0)
                tokens.append(sum(len(p.tokenizer(a)["input_ids"]) for a in pred.tts["answers"]) / m)
                cands.append(pred.tts["candidates"])
            return statistics.mean(times), statistics.mean(tokens), statistics.mean(cands)

        per_image(1, 1)  # warm-up
        results = {}
        for m, n in SETTINGS:
            runs = [per_image(m, n) for _ in range(args.repeats)]
            results[(m, n)] = (min(r[0] for r in runs), runs[0][1], runs[0][2])
        naive = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for s in samples:
                naive_8x4(p, root / s.image, s.query)
            naive.append((time.perf_counter() - t0) / len(samples))
    base = results[(1, 1)][0]
    print(f"tiny Sim4Seg, {len(samples)} test images, best of {args.repeats}; per image (encode + answer + masks):")
    for (m, n), (t, tok, c) in results.items():
        print(
            f"  m×n = {m}×{n}: {1000 * t:7.1f} ms  = {t / base:4.2f}× 1×1   ({c:.0f} candidate masks, "
            f"{tok:.1f} tokens per answer)"
        )
    print(
        f"  8×4 naive (re-encode, generate per answer, decode per mask): {1000 * min(naive):7.1f} ms = "
        f"{min(naive) / base:4.2f}× 1×1"
    )
    goal = results[(8, 4)][0] / base
    print(f"goal 8×4 within 2.5× of 1×1: {'met' if goal <= 2.5 else 'NOT met'} ({goal:.2f}×)")


if __name__ == "__main__":
    main()
