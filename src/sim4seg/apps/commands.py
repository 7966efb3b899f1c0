"""``sim4seg demo`` (the main job, end to end on the CPU) and ``sim4seg sweep seeds`` (an ablation over seeds).

``sweep seeds`` trains, so it lives here rather than beside ``sweep tau|tts`` in ``infer`` (which never
imports ``train``); it joins the ``sweep`` command that ``sim4seg.infer.commands`` registers first.
"""

from __future__ import annotations

import argparse
import logging
import time

from sim4seg._config import add_override_option


def demo(
    out: str,
    config: str | None,
    overrides: list[str] | None,
    tts_m: int,
    tts_n: int,
    no_sweeps: bool,
    no_ablation: bool,
) -> int:
    """The main job: synthesize a small M3DS, train the tiny Sim4Seg on the CPU, evaluate it without and with
    RVLS2M and with test-time scaling beside trivial baselines; write the checkpoint, metrics, plots and
    example overlays to OUT. Exit status 1 if the model stays below the bar (gIoU 0.5, Acc 0.8)."""
    from sim4seg.apps.demo import run_demo, verdict_line

    logging.getLogger("accelerate").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    res = run_demo(
        out,
        recipe=config,
        overrides=overrides or [],
        tts_m=tts_m,
        tts_n=tts_n,
        sweeps=not no_sweeps,
        ablation=not no_ablation,
    )
    print(res.tables)
    print(verdict_line(res.model, res.passed))
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in res.timings.items()))
    print(
        f"wrote {out}/: train/final/ (the checkpoint), eval/*/metrics.json, plots/, examples/, results.md "
        f"(wall {time.perf_counter() - t0:.1f}s)"
    )
    return 0 if res.passed else 1


def seeds(out: str, seeds: int, config: str | None, overrides: list[str] | None, split: str) -> int:
    """Train and score the RVLS2M on / off arms (in training and inference) for training seeds 0..K-1 of a
    recipe (default configs/demo.yaml); print each metric's mean ± SD per arm, of the paired difference,
    and a paired permutation p-value; write OUT/seeds.json, OUT/seeds.md. Rerun to resume."""
    from sim4seg.apps.seeds import run_seeds

    logging.getLogger("accelerate").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    res = run_seeds(out, seeds, recipe=config, overrides=overrides or [], split=split)
    print(res.table)
    from sim4seg.eval.report import pct

    for arm, rows in res.per_seed.items():
        print(
            f"{arm:>9} per seed (gIoU / cIoU / Acc): "
            + "; ".join(f"{pct(r['giou'])} / {pct(r['ciou'])} / {pct(r['acc'])}" for r in rows)
        )
    print(f"wrote {out}/seeds.json, seeds.md (wall {time.perf_counter() - t0:.1f}s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the main job: synthesize, train the tiny model on CPU, evaluate, plot", description=demo.__doc__
    )
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out; rerun to resume)")
    p.add_argument("--config", default=None, metavar="YAML", help="recipe (default: configs/demo.yaml)")
    add_override_option(p, "optim.epochs=4")
    p.add_argument("--tts-m", type=int, default=4, help="sampled answers in the TTS evaluation (default 4)")
    p.add_argument("--tts-n", type=int, default=4, help="region-mask perturbations in the TTS evaluation (default 4)")
    p.add_argument("--no-sweeps", action="store_true", help="skip the τ and TTS sweeps")
    p.add_argument("--no-ablation", action="store_true", help="skip training the second model without RVLS2M")
    p.set_defaults(handler=demo)

    from sim4seg.data.subsets import SPLITS

    sweep = sub.choices["sweep"]  # registered by sim4seg.infer.commands (listed before this module in COMMANDS)
    ssub = next(a for a in sweep._actions if isinstance(a, argparse._SubParsersAction))
    p = ssub.add_parser(
        "seeds",
        help="the RVLS2M on/off ablation over K training seeds: mean ± SD, permutation p",
        description=seeds.__doc__,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (rerun to resume)")
    p.add_argument("--seeds", type=int, required=True, metavar="K", help="training seeds 0..K-1 (K >= 2)")
    p.add_argument("--config", default=None, metavar="YAML", help="recipe (default: configs/demo.yaml)")
    add_override_option(p, "data.manifest=m3ds-clutter optim.epochs=6")
    p.add_argument("--split", default="test", choices=SPLITS, help="split to score (default test)")
    p.set_defaults(handler=seeds)
