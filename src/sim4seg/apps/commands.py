"""``sim4seg demo``: the main job, end to end on the CPU."""

from __future__ import annotations

import argparse
import logging
import time


def demo(out: str, config: str | None, overrides: list[str] | None, tts_m: int, tts_n: int, no_sweeps: bool,
         no_ablation: bool) -> int:
    """The main job: synthesize a small M3DS, train the tiny Sim4Seg on the CPU, evaluate it without and with
    RVLS2M and with test-time scaling beside trivial baselines; write the checkpoint, metrics, plots and
    example overlays to OUT. Exit status 1 if the model stays below the bar (gIoU 0.5, Acc 0.8)."""
    from sim4seg.apps.demo import run_demo, verdict_line

    logging.getLogger("accelerate").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    res = run_demo(out, recipe=config, overrides=overrides or [], tts_m=tts_m, tts_n=tts_n, sweeps=not no_sweeps,
                   ablation=not no_ablation)
    print(res.tables)
    print(verdict_line(res.model, res.passed))
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in res.timings.items()))
    print(f"wrote {out}/: train/final/ (the checkpoint), eval/*/metrics.json, plots/, examples/, results.md "
          f"(wall {time.perf_counter() - t0:.1f}s)")
    return 0 if res.passed else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: synthesize, train the tiny model on CPU, evaluate, plot",
                       description=demo.__doc__)
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out; rerun to resume)")
    p.add_argument("--config", default=None, metavar="YAML", help="recipe (default: configs/demo.yaml)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=None, metavar="KEY=VALUE",
                   help="override recipe values, e.g. --set optim.epochs=4")
    p.add_argument("--tts-m", type=int, default=4, help="sampled answers in the TTS evaluation (default 4)")
    p.add_argument("--tts-n", type=int, default=4, help="region-mask perturbations in the TTS evaluation (default 4)")
    p.add_argument("--no-sweeps", action="store_true", help="skip the τ and TTS sweeps")
    p.add_argument("--no-ablation", action="store_true", help="skip training the second model without RVLS2M")
    p.set_defaults(handler=demo)
