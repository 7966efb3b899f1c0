"""``sim4seg evaluate``: score a predictions file (or a trivial baseline) on an M3DS split."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def evaluate(manifest: str, split: str, predictions: str | None, baseline: str | None, out: str,
             method: str | None, checkpoint: str | None = None, m: int = 1, n: int = 1,
             selector: str = "consensus", no_rvls2m: bool = False) -> int:
    """Score PREDICTIONS (JSONL: id, mask, answer), a CHECKPOINT (predicted first, into OUT/predictions/,
    resumable) or a trivial baseline against a split of MANIFEST; write OUT/metrics.json, metrics.md,
    metrics.csv and per_sample.jsonl."""
    from sim4seg._atomic import write_jsonl
    from sim4seg.errors import InputError
    from sim4seg.eval.evaluate import evaluate_baseline, evaluate_predictions
    from sim4seg.eval.report import markdown, write_metrics

    if sum(x is not None for x in (predictions, baseline, checkpoint)) != 1:
        raise InputError("give exactly one of --predictions, --checkpoint or --baseline")
    t0 = time.perf_counter()
    if checkpoint is not None:
        from sim4seg.engine.batch import predict_checkpoint

        predictions, name = predict_checkpoint(checkpoint, manifest, split, Path(out) / "predictions", m=m, n=n,
                                               selector=selector, use_rvls2m=False if no_rvls2m else None)
        name = method or name
    if predictions is not None:
        ev = evaluate_predictions(manifest, split, predictions)
        name = name if checkpoint is not None else method or Path(predictions).stem
    else:
        ev = evaluate_baseline(manifest, split, baseline)
        name = method or f"baseline ({baseline})"
    summary = ev.summary()
    write_metrics(out, summary, name, ev.info.subsets)
    write_jsonl(Path(out) / "per_sample.jsonl", ev.rows)
    print(markdown([(name, summary)], ev.info.subsets))
    print(f"scored {summary['overall']['n']} sample(s) of {split!r} in {time.perf_counter() - t0:.1f}s; "
          f"wrote {out}/metrics.json, metrics.md, metrics.csv, per_sample.jsonl")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from sim4seg.data.subsets import SPLITS
    from sim4seg.eval.evaluate import BASELINES

    p = sub.add_parser("evaluate", help="score predictions (or a baseline) with gIoU, cIoU, Dice and Acc",
                       description=evaluate.__doc__)
    p.add_argument("--manifest", required=True, metavar="DIR", help="M3DS directory (with dataset_info.json)")
    p.add_argument("--split", default="test", choices=SPLITS, help="split to score (default test)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", metavar="P.jsonl",
                     help="predictions JSONL: one {\"id\", \"mask\" (PNG path relative to this file), \"answer\"} per line")
    src.add_argument("--checkpoint", metavar="CKPT",
                     help="a Sim4Seg checkpoint directory: predict the split first (OUT/predictions/, resumable)")
    src.add_argument("--baseline", choices=BASELINES,
                     help="score a trivial baseline instead: empty mask, full-image mask, or the majority training label")
    p.add_argument("--out", required=True, metavar="OUT", help="output directory")
    p.add_argument("--method", default=None, help="method name in the tables (default: the predictions file name)")
    from sim4seg.engine.tts import SELECTORS

    g = p.add_argument_group("with --checkpoint")
    g.add_argument("--m", type=int, default=1, help="test-time scaling: sampled answers per image (default 1: greedy)")
    g.add_argument("--n", type=int, default=1, help="test-time scaling: region-mask perturbations per answer (default 1)")
    g.add_argument("--selector", default="consensus", choices=SELECTORS,
                   help="mask selector over the m×n candidates (oracle reads the ground truth: an upper bound only)")
    g.add_argument("--no-rvls2m", action="store_true", help="switch RVLS2M off at inference (the ablation)")
    p.set_defaults(handler=evaluate)
