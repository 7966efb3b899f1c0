"""``sim4seg predict``, ``sim4seg sweep tau|tts`` and ``sim4seg evaluate`` (predictions, a checkpoint or a baseline)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _tts(m: int, n: int, selector: str, temperature: float, top_p: float, seed: int, max_new_tokens: int):
    from sim4seg.infer.tts import TTSConfig
    from sim4seg.errors import InputError

    try:
        return TTSConfig(m=m, n=n, selector=selector, temperature=temperature, top_p=top_p, seed=seed,
                         max_new_tokens=max_new_tokens)
    except ValueError as e:
        raise InputError(str(e)) from None


def predict(checkpoint: str, out: str, image: str | None, query: list[str] | None, manifest: str | None,
            split: str, subset: str | None, m: int, n: int, selector: str, temperature: float, top_p: float,
            seed: int, max_new_tokens: int, no_rvls2m: bool, overlays: int, limit: int | None) -> int:
    """Segment and diagnose: one IMAGE (JPEG/PNG/DICOM) with one or more --query, encoded once; or every
    sample of a --manifest split into OUT/predictions.jsonl (resumable; the format `evaluate` reads)."""
    from sim4seg.infer.predictor import Predictor, write_result
    from sim4seg.errors import InputError

    if (image is None) == (manifest is None):
        raise InputError("give either --image (with --query) or --manifest")
    tts = _tts(m, n, selector, temperature, top_p, seed, max_new_tokens)
    use = False if no_rvls2m else None
    predictor = Predictor.from_checkpoint(checkpoint, tts=tts)
    if manifest is not None:
        from sim4seg.infer.batch import predict_split

        t0 = time.perf_counter()
        path = predict_split(predictor, manifest, split, out, overlays=overlays, limit=limit, use_rvls2m=use)
        print(f"predictions: {path} ({time.perf_counter() - t0:.1f}s); score them with "
              f"`sim4seg evaluate --manifest {manifest} --split {split} --predictions {path} --out OUT`")
        return 0
    if not query:
        raise InputError("--image needs at least one --query")
    if selector == "oracle":
        raise InputError("the oracle selector needs a ground truth: use it with --manifest (an upper bound only)")
    parser = None
    if subset is not None:
        from sim4seg.data.subsets import SUBSETS
        from sim4seg.eval.diagnosis import DiagnosisParser

        if subset not in SUBSETS:
            raise InputError(f"unknown subset {subset!r}; known: {', '.join(SUBSETS)}")
        parser = DiagnosisParser()
    predictor.set_image(image)
    stem = Path(image).stem
    for i, q in enumerate(query):
        pred = predictor.predict(q, subset=subset, parser=parser, use_rvls2m=use)
        name = stem if len(query) == 1 else f"{stem}_q{i}"
        paths = write_result(pred, predictor.image, out, name, {"image": str(image), "query": q})
        print(f"[{i}] {pred.answer!r}")
        print(f"    diagnosis: {pred.diagnosis} (agreement {pred.confidence:.2f}); [SEG] produced: {pred.seg}; "
              f"mask area {int(pred.mask.sum())} px; {pred.timings['predict_s']:.2f}s")
        print(f"    wrote {paths['mask']}, {paths['overlay']}, {paths['json']}")
    return 0


def sweep(kind: str, checkpoint: str, manifest: str, split: str, out: str, limit: int | None, selector: str,
          seed: int) -> int:
    """Sweep τ (top-k ∈ {12,24,36,48} on a 16×16 grid; grid ∈ {8,16,32,64} with top-36) or TTS (m, n ∈ {1,2,4,8})
    on a trained checkpoint; write OUT/<kind>_sweep.csv and .png (the paper's Figures 6 and 7)."""
    from sim4seg._atomic import write_json
    from sim4seg.infer.predictor import Predictor
    from sim4seg.infer.sweep import sweep_tau, sweep_tts
    from sim4seg.eval.report import pct, write_tau_sweep, write_tts_sweep

    predictor = Predictor.from_checkpoint(checkpoint)
    if kind == "tau":
        rows, summaries = sweep_tau(predictor, manifest, split, limit=limit)
        csv, png = write_tau_sweep(out, rows)
    else:
        rows, summaries = sweep_tts(predictor, manifest, split, selector=selector, seed=seed, limit=limit)
        csv, png = write_tts_sweep(out, rows)
        if selector == "oracle":
            print("NOTE: the oracle selector reads the ground truth; its gIoU/cIoU are an UPPER BOUND only")
    write_json(Path(out) / f"{kind}_sweep_metrics.json", summaries)
    for r in sorted(rows, key=lambda r: (r["param"], r["value"])):
        vals = "  ".join(f"{k} {pct(r[k])}" for k in ("giou", "ciou", "acc") if k in r)
        print(f"{r['param']}={r['value']:<3} {vals}")
    print(f"wrote {csv}, {png}")
    return 0


def evaluate(manifest: str, split: str, predictions: str | None, baseline: str | None, out: str,
             method: str | None, checkpoint: str | None = None, m: int = 1, n: int = 1,
             selector: str = "consensus", no_rvls2m: bool = False, overlays: int = 0) -> int:
    """Score PREDICTIONS (JSONL: id, mask, answer), a CHECKPOINT (predicted first, into OUT/predictions/,
    resumable) or a trivial baseline against a split of MANIFEST; write OUT/metrics.json, metrics.md,
    metrics.csv and per_sample.jsonl, and the pictures: per_subset.png (gIoU/cIoU/Acc per subset),
    confusion_<subset>.png (diagnoses) and, with --overlays K, OUT/overlays/<subset>_{worst,best}.png."""
    from sim4seg._atomic import write_jsonl
    from sim4seg.errors import InputError
    from sim4seg.eval.evaluate import evaluate_baseline, evaluate_predictions
    from sim4seg.eval.report import markdown, write_metrics

    if sum(x is not None for x in (predictions, baseline, checkpoint)) != 1:
        raise InputError("give exactly one of --predictions, --checkpoint or --baseline")
    if overlays < 0:
        raise InputError(f"--overlays must be >= 0, got {overlays}")
    pictures = _can_plot(overlays)
    t0 = time.perf_counter()
    if checkpoint is not None:
        from sim4seg.infer.batch import predict_checkpoint

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
    drawn = []
    if pictures:
        from sim4seg.eval.figures import evaluation_pictures

        drawn = evaluation_pictures(manifest, split, ev.rows, summary, predictions, out, overlays, name)
    print(markdown([(name, summary)], ev.info.subsets))
    print(f"scored {summary['overall']['n']} sample(s) of {split!r} in {time.perf_counter() - t0:.1f}s; "
          f"wrote {out}/metrics.json, metrics.md, metrics.csv, per_sample.jsonl")
    if drawn:
        print(f"pictures ({len(drawn)}): " + ", ".join(str(Path(p).relative_to(out)) for p in drawn))
    return 0


def _can_plot(overlays: int) -> bool:
    """Whether matplotlib is there; without it, pictures are skipped (a warning) unless --overlays asked for them."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if overlays:
            from sim4seg.errors import InputError

            raise InputError("--overlays needs matplotlib: pip install -c constraints.txt 'sim4seg[train]'") from None
        log.warning("matplotlib is not installed: no pictures (pip install 'sim4seg[train]')")
        return False
    return True


def register(sub: argparse._SubParsersAction) -> None:
    from sim4seg.data.subsets import SPLITS
    from sim4seg.eval.evaluate import BASELINES
    from sim4seg.infer.tts import SELECTORS

    p = sub.add_parser("predict", help="segment + diagnose an image (or a manifest split) with a checkpoint",
                       description=predict.__doc__)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="Sim4Seg checkpoint directory")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--image", default=None, metavar="FILE", help="JPEG / PNG / DICOM image")
    p.add_argument("--query", action="append", default=None, help="question about the image (repeatable)")
    p.add_argument("--subset", default=None, help="M3DS subset whose label set the diagnosis is parsed into")
    p.add_argument("--manifest", default=None, metavar="DIR", help="predict every sample of a split instead")
    p.add_argument("--split", default="test", choices=SPLITS, help="split with --manifest (default test)")
    p.add_argument("--limit", type=int, default=None, help="with --manifest: the first N samples only")
    p.add_argument("--overlays", type=int, default=0, help="with --manifest: overlay PNGs for the first N samples")
    _tts_args(p, SELECTORS)
    p.add_argument("--no-rvls2m", action="store_true", help="switch RVLS2M off (ablation)")
    p.set_defaults(handler=predict)

    sweeps = sub.add_parser("sweep", help="τ or test-time-scaling sweep on a checkpoint (Figures 6 and 7); "
                            "`sweep seeds`: an ablation over training seeds", description=sweep.__doc__)
    ssub = sweeps.add_subparsers(dest="sweep_command", metavar="KIND", required=True)
    for kind, text in (("tau", "τ sweep: top-k cells and grid size (Figure 6)"),
                       ("tts", "test-time scaling sweep: m answers, n masks (Figure 7)")):
        p = ssub.add_parser(kind, help=text, description=sweep.__doc__)
        p.add_argument("--checkpoint", required=True, metavar="CKPT")
        p.add_argument("--manifest", required=True, metavar="DIR")
        p.add_argument("--split", default="test", choices=SPLITS)
        p.add_argument("--out", required=True, metavar="DIR")
        p.add_argument("--limit", type=int, default=None, help="the first N samples only")
        p.add_argument("--selector", default="consensus", choices=SELECTORS,
                       help="TTS mask selector (default consensus)")
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(handler=sweep, kind=kind)

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
    g = p.add_argument_group("with --checkpoint")
    g.add_argument("--m", type=int, default=1, help="test-time scaling: sampled answers per image (default 1: greedy)")
    g.add_argument("--n", type=int, default=1, help="test-time scaling: region-mask perturbations per answer (default 1)")
    g.add_argument("--selector", default="consensus", choices=SELECTORS,
                   help="mask selector over the m×n candidates (oracle reads the ground truth: an upper bound only)")
    g.add_argument("--no-rvls2m", action="store_true", help="switch RVLS2M off at inference (the ablation)")
    p.add_argument("--overlays", type=int, default=0, metavar="K",
                   help="also draw the K worst and K best samples per subset by IoU as labelled overlay sheets "
                        "(OUT/overlays/<subset>_{worst,best}.png; default 0: none)")
    p.set_defaults(handler=evaluate)


def _tts_args(p: argparse.ArgumentParser, selectors) -> None:
    g = p.add_argument_group("test-time scaling")
    g.add_argument("--m", type=int, default=1, help="sampled answers (default 1: greedy)")
    g.add_argument("--n", type=int, default=1, help="region-mask perturbations per answer (default 1)")
    g.add_argument("--selector", default="consensus", choices=selectors,
                   help="mask selector (oracle reads the ground truth: an upper bound, --manifest only)")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=0.9)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-new-tokens", type=int, default=64)
