"""``sim4seg sweep seeds``: the RVLS2M ablation (on / off, in training and inference) over K training seeds.

A single seed can mislead: on a small model the spread between seeds is often larger than the
effect. For each seed s in 0..K-1, both arms train from the same recipe with ``train.seed = s``
(same initialisation and data order in both arms: the arms are paired by seed) and are scored
on the split. The report gives each metric's mean ± SD per arm, the mean ± SD of the per-seed
difference (on − off) and the two-sided p-value of a paired permutation test over seeds
(``sim4seg.eval.stats``). Everything lands in ``OUT``::

    seed-<s>/<arm>/train/       the run (resumable; a finished run is reused on a rerun)
    seed-<s>/<arm>/eval/        predictions + metrics.json
    seeds.json, seeds.md        per-seed metrics and the summary
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ARMS = {
    "rvls2m": ["model.rvls2m.train=true", "model.rvls2m.infer=true"],
    "no-rvls2m": ["model.rvls2m.train=false", "model.rvls2m.infer=false"],
}
"""The two arms and the recipe overrides that make them."""
METRICS = (("giou", "gIoU"), ("ciou", "cIoU"), ("acc", "Acc"))


@dataclass
class SeedsResult:
    per_seed: dict[str, list[dict]]
    """arm → one ``metrics.json`` overall dict per seed, in seed order."""
    summary: dict[str, dict]
    """metric → {"rvls2m": (mean, sd), "no-rvls2m": (mean, sd), "diff": (mean, sd), "p": float}."""
    table: str


def summarize(per_seed: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean ± SD per arm, of the paired difference, and the permutation p-value, per metric (fractions)."""
    from sim4seg.eval.stats import mean_sd, paired_permutation_test

    out = {}
    for key, _ in METRICS:
        on = [m[key] for m in per_seed["rvls2m"]]
        off = [m[key] for m in per_seed["no-rvls2m"]]
        if any(v is None for v in on + off):
            continue
        out[key] = {
            "rvls2m": mean_sd(on),
            "no-rvls2m": mean_sd(off),
            "diff": mean_sd([a - b for a, b in zip(on, off)]),
            "p": paired_permutation_test(on, off),
        }
    return out


def table(summary: dict[str, dict], k: int, split: str) -> str:
    """Markdown: one row per metric, percentages as mean ± SD over the K seeds."""

    def ms(pair):
        return f"{100 * pair[0]:.2f} ± {100 * pair[1]:.2f}"

    lines = [
        f"RVLS2M on vs off over {k} training seeds ({split} split; mean ± SD, %; p: paired permutation test):",
        "",
        "| Metric | with RVLS2M | without | difference (on − off) | p |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in METRICS:
        if key in summary:
            s = summary[key]
            lines.append(
                f"| {label} | {ms(s['rvls2m'])} | {ms(s['no-rvls2m'])} | "
                f"{100 * s['diff'][0]:+.2f} ± {100 * s['diff'][1]:.2f} | {s['p']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def run_seeds(
    out: str | os.PathLike,
    k: int,
    *,
    recipe: str | os.PathLike | None = None,
    overrides: list[str] = (),
    split: str = "test",
    progress: bool = True,
) -> SeedsResult:
    """Train and score both arms for seeds 0..k-1 (see the module docstring)."""
    from sim4seg._atomic import write_json, write_text
    from sim4seg.apps.demo import DEFAULT_RECIPE, fixed_threads, train_model
    from sim4seg.errors import InputError
    from sim4seg.eval.evaluate import evaluate_predictions
    from sim4seg.eval.report import write_metrics
    from sim4seg.infer.batch import predict_split
    from sim4seg.infer.predictor import Predictor
    from sim4seg.train.recipe import load_config

    if k < 2:
        raise InputError(f"--seeds must be >= 2 to measure a spread, got {k}")
    out = Path(out)
    path = Path(recipe) if recipe else DEFAULT_RECIPE
    if not path.is_file():
        raise InputError("recipe not found", path)
    per_seed: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with fixed_threads():
        for seed in range(k):
            for arm, flags in ARMS.items():
                run = out / f"seed-{seed}" / arm
                cfg = load_config(
                    path, list(overrides) + flags + [f"train.seed={seed}", f"train.output_dir={run / 'train'}"]
                )
                if cfg.data.manifest is None:
                    raise InputError("the recipe names no data.manifest: give --set data.manifest=DIR", path)
                log.info("seed %d, %s: training", seed, arm)
                ckpt = train_model(cfg, run)
                predictor = Predictor.from_checkpoint(ckpt)
                preds = predict_split(
                    predictor, cfg.data.manifest, split, run / "eval" / "predictions", progress=progress
                )
                ev = evaluate_predictions(cfg.data.manifest, split, preds)
                write_metrics(run / "eval", ev.summary(), f"{arm} seed {seed}", ev.info.subsets)
                per_seed[arm].append(ev.summary()["overall"])
    summary = summarize(per_seed)
    text = table(summary, k, split)
    write_json(
        out / "seeds.json",
        {
            "seeds": list(range(k)),
            "split": split,
            "recipe": str(path),
            "overrides": list(overrides),
            "per_seed": per_seed,
            "summary": summary,
        },
    )
    write_text(out / "seeds.md", text)
    return SeedsResult(per_seed, summary, text)
