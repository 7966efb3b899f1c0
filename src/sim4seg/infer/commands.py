"""``sim4seg predict``, ``sim4seg sweep tau|tts`` and ``sim4seg evaluate`` (predictions, a checkpoint or a baseline)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


TTS_OPTIONS = ("m", "n", "selector", "temperature", "top_p", "seed", "max_new_tokens")
"""The ``TTSConfig`` fields ``predict`` takes as options (generated from the dataclass)."""


def _tts(**options):
    from sim4seg._config import from_options
    from sim4seg.infer.tts import TTSConfig

    return from_options(TTSConfig, options)


def _frame_arg(value: str | None, flag: str) -> int | str | None:
    from sim4seg.errors import InputError

    if value is None or value == "all":
        return value
    try:
        k = int(value)
    except ValueError:
        raise InputError(f"{flag} takes a number or 'all', got {value!r}") from None
    if k < 0:
        raise InputError(f"{flag} must be >= 0, got {k}")
    return k


def predict(
    checkpoint: str,
    out: str,
    image: list[str] | None,
    images: list[str] | None,
    query: list[str] | None,
    frame: str | None,
    nifti_axis: int,
    nifti_index: str | None,
    manifest: str | None,
    split: str,
    subset: str | None,
    m: int,
    n: int,
    selector: str,
    temperature: float,
    top_p: float,
    seed: int,
    max_new_tokens: int,
    no_rvls2m: bool,
    overlays: int,
    limit: int | None,
    batch_size: int = 1,
) -> int:
    """Segment and diagnose: one IMAGE with one or more --query, encoded once (OUT/<name>_mask.png, _overlay.png,
    .json); many images (--image repeated, --images DIR|GLOB|LIST.txt, every frame or slice of a volume) into
    OUT/predictions.jsonl, one line per image, resumable, an unreadable image recorded as failed; or every sample
    of a --manifest split into OUT/predictions.jsonl (resumable; the format `evaluate` reads; under `accelerate
    launch` each process predicts its shard). Reads JPEG, PNG,
    BMP, TIFF, DICOM (--frame for multi-frame files) and NIfTI (--nifti-axis, --nifti-index)."""
    from sim4seg.errors import InputError
    from sim4seg.infer.predictor import Predictor, write_result

    files = bool(image or images)
    if files == (manifest is not None):
        raise InputError("give either --image / --images (with --query) or --manifest")
    if nifti_axis not in (0, 1, 2):
        raise InputError(f"--nifti-axis must be 0, 1 or 2, got {nifti_axis}")
    frame_k, index_k = _frame_arg(frame, "--frame"), _frame_arg(nifti_index, "--nifti-index")
    if files and not query:
        raise InputError("--image / --images need at least one --query")
    tts = _tts(
        m=m, n=n, selector=selector, temperature=temperature, top_p=top_p, seed=seed, max_new_tokens=max_new_tokens
    )
    if files and tts.upper_bound:
        raise InputError(f"the {selector} selector needs a ground truth: use it with --manifest (an upper bound only)")
    use = False if no_rvls2m else None
    from sim4seg.infer.batch import default_device

    predictor = Predictor.from_checkpoint(checkpoint, tts=tts, device=default_device())
    if subset is not None:
        predictor.check_subset(subset)
    if manifest is not None:
        from sim4seg.infer.batch import is_main_process, predict_split

        t0 = time.perf_counter()
        path = predict_split(
            predictor, manifest, split, out, overlays=overlays, limit=limit, use_rvls2m=use, batch_size=batch_size
        )
        if not is_main_process():
            return 0
        print(
            f"predictions: {path} ({time.perf_counter() - t0:.1f}s); score them with "
            f"`sim4seg evaluate --manifest {manifest} --split {split} --predictions {path} --out OUT`"
        )
        return 0
    from sim4seg.infer.files import collect, expand, predict_files

    units = expand(collect(image, images), frame=frame_k, axis=nifti_axis, index=index_k)
    units = units[:limit] if limit is not None else units
    if len(units) == 1 and not images:
        import re

        from sim4seg.data.io import read_image

        u = units[0]
        predictor.set_image(read_image(u.path, frame=u.frame, axis=u.axis, index=u.index))
        stem = re.sub(r"\.nii$", "", Path(u.path).stem) + re.sub(r"[^\w.-]+", "_", "_" + u.id.partition("#")[2]).rstrip(
            "_"
        )
        for i, q in enumerate(query):
            pred = predictor.predict(q, subset=subset, use_rvls2m=use)
            name = stem if len(query) == 1 else f"{stem}_q{i}"
            paths = write_result(pred, predictor.image, out, name, {"image": str(u.path), "query": q})
            print(
                f"[{i}] {pred.answer!r}"
                + (f"  (TRUNCATED at --max-new-tokens {max_new_tokens})" if pred.truncated else "")
            )
            agreement = "single answer: no agreement" if pred.confidence is None else f"agreement {pred.confidence:.2f}"
            unc = "" if pred.uncertainty_mean is None else f"; mean pixel uncertainty {pred.uncertainty_mean:.3f}"
            print(
                f"    diagnosis: {pred.diagnosis} ({agreement}); [SEG] produced: {pred.seg}; "
                f"mask area {int(pred.mask.sum())} px{unc}; {pred.timings['predict_s']:.2f}s"
            )
            print(f"    wrote {', '.join(str(p) for p in paths.values())}")
        return 0
    t0 = time.perf_counter()
    c = predict_files(predictor, units, query, out, subset=subset, overlays=overlays, use_rvls2m=use)
    print(
        f"{c['images']} image(s): {c['ok']} prediction(s) written, {c['failed']} failed, {c['skipped_done']} "
        f"already done (skipped) in {time.perf_counter() - t0:.1f}s; wrote {c['path']}"
    )
    if c["failed"]:
        print(f'failed images are listed in {c["path"]} with "status": "failed" and the reason')
    return 0


def sweep(
    kind: str, checkpoint: str, manifest: str, split: str, out: str, limit: int | None, selector: str, seed: int
) -> int:
    """Sweep τ (top-k ∈ {12,24,36,48} on a 16×16 grid; grid ∈ {8,16,32,64} with top-36) or TTS (m, n ∈ {1,2,4,8})
    on a trained checkpoint; write OUT/<kind>_sweep.csv and .png (the paper's Figures 6 and 7)."""
    from sim4seg._atomic import write_json
    from sim4seg.eval.report import pct, write_tau_sweep, write_tts_sweep
    from sim4seg.infer.predictor import Predictor
    from sim4seg.infer.sweep import sweep_tau, sweep_tts
    from sim4seg.infer.tts import SELECTORS

    predictor = Predictor.from_checkpoint(checkpoint)
    if kind == "tau":
        rows, summaries = sweep_tau(predictor, manifest, split, limit=limit)
        csv, png = write_tau_sweep(out, rows)
    else:
        rows, summaries = sweep_tts(predictor, manifest, split, selector=selector, seed=seed, limit=limit)
        csv, png = write_tts_sweep(out, rows)
        if SELECTORS[selector].needs_gt:
            print(f"NOTE: the {selector} selector reads the ground truth; its gIoU/cIoU are an UPPER BOUND only")
    write_json(Path(out) / f"{kind}_sweep_metrics.json", summaries)
    for r in sorted(rows, key=lambda r: (r["param"], r["value"])):
        vals = "  ".join(f"{k} {pct(r[k])}" for k in ("giou", "ciou", "acc") if k in r)
        print(f"{r['param']}={r['value']:<3} {vals}")
    print(f"wrote {csv}, {png}")
    return 0


def evaluate(
    manifest: str,
    split: str,
    predictions: str | None,
    baseline: str | None,
    out: str,
    method: str | None,
    checkpoint: str | None = None,
    m: int = 1,
    n: int = 1,
    selector: str = "consensus",
    no_rvls2m: bool = False,
    batch_size: int = 1,
    subsets: list[str] | None = None,
    modalities: list[str] | None = None,
    overlays: int = 0,
) -> int:
    """Score PREDICTIONS (JSONL: id, mask, answer), a CHECKPOINT (predicted first, into OUT/predictions/,
    resumable; sharded under `accelerate launch`) or a trivial baseline against a split of MANIFEST (or only
    its --subsets / --modalities); write OUT/metrics.json, metrics.md, metrics.csv, per_sample.jsonl, (for
    predictions) uncertainty.json with the calibration of the diagnosis confidence (ECE; reliability.png) and
    the correlation of mean pixel uncertainty with 1-IoU, and the pictures: per_subset.png (gIoU/cIoU/Acc per
    subset), confusion_<subset>.png (diagnoses) and, with --overlays K, OUT/overlays/<subset>_{worst,best}.png."""
    from sim4seg._atomic import write_jsonl
    from sim4seg.errors import InputError
    from sim4seg.eval.calibration import uncertainty_report
    from sim4seg.eval.evaluate import evaluate_baseline, evaluate_predictions
    from sim4seg.eval.report import markdown, uncertainty_lines, write_metrics, write_uncertainty

    if sum(x is not None for x in (predictions, baseline, checkpoint)) != 1:
        raise InputError("give exactly one of --predictions, --checkpoint or --baseline")
    if overlays < 0:
        raise InputError(f"--overlays must be >= 0, got {overlays}")
    pictures = _can_plot(overlays)
    t0 = time.perf_counter()
    only = None
    if subsets or modalities:
        from sim4seg.data.schema import read_info
        from sim4seg.data.selection import resolve_subsets

        only = resolve_subsets(
            read_info(manifest), subsets=subsets, modalities=modalities, where=manifest, what="--subsets / --modalities"
        )
    if checkpoint is not None:
        from sim4seg.infer.batch import is_main_process, predict_checkpoint

        predictions, name = predict_checkpoint(
            checkpoint,
            manifest,
            split,
            Path(out) / "predictions",
            m=m,
            n=n,
            selector=selector,
            use_rvls2m=False if no_rvls2m else None,
            batch_size=batch_size,
            subsets=only,
        )
        if not is_main_process():  # rank 0 scores the merged predictions
            return 0
        name = method or name
    if predictions is not None:
        ev = evaluate_predictions(manifest, split, predictions, subsets=only)
        name = name if checkpoint is not None else method or Path(predictions).stem
    else:
        ev = evaluate_baseline(manifest, split, baseline, subsets=only)
        name = method or f"baseline ({baseline})"
    summary = ev.summary()
    write_metrics(out, summary, name, ev.info.subsets)
    write_jsonl(Path(out) / "per_sample.jsonl", ev.rows)
    drawn = []
    if pictures:
        from sim4seg.eval.figures import evaluation_pictures

        drawn = evaluation_pictures(manifest, split, ev.rows, summary, predictions, out, overlays, name)
    print(markdown([(name, summary)], ev.info.subsets))
    wrote = "metrics.json, metrics.md, metrics.csv, per_sample.jsonl"
    if baseline is None:
        unc = uncertainty_report(ev.rows)
        wrote += ", " + ", ".join(p.name for p in write_uncertainty(out, unc))
        print("\n".join(uncertainty_lines(unc)))
    print(
        f"scored {summary['overall']['n']} sample(s) of {split!r} in {time.perf_counter() - t0:.1f}s; "
        f"wrote {out}/{wrote}"
    )
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
    from sim4seg._config import add_options
    from sim4seg.data.subsets import SPLITS
    from sim4seg.eval.evaluate import BASELINES
    from sim4seg.infer.tts import SELECTORS, TTSConfig

    p = sub.add_parser(
        "predict",
        help="segment + diagnose an image (or a manifest split) with a checkpoint",
        description=predict.__doc__,
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="Sim4Seg checkpoint directory")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--image",
        action="append",
        default=None,
        metavar="FILE",
        help="JPEG / PNG / BMP / TIFF / DICOM / NIfTI image (repeatable)",
    )
    p.add_argument(
        "--images",
        action="append",
        default=None,
        metavar="DIR|GLOB|LIST.txt",
        help="many images: a folder (searched recursively), a quoted glob ('scans/**/*.dcm') or a .txt "
        "file of paths, one a line (repeatable); results in OUT/predictions.jsonl, resumable",
    )
    p.add_argument("--query", action="append", default=None, help="question about the image (repeatable)")
    p.add_argument(
        "--subset",
        default=None,
        help="subset whose label set the diagnosis is parsed into (the checkpoint's or the paper's)",
    )
    g = p.add_argument_group("volumes and multi-frame files")
    g.add_argument(
        "--frame",
        default=None,
        metavar="K|all",
        help="frame of a multi-frame DICOM, or 'all' (one prediction per frame); required for such files",
    )
    g.add_argument(
        "--nifti-axis",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="NIfTI slicing axis in RAS+ orientation: 0 sagittal, 1 coronal, 2 axial (default 2)",
    )
    g.add_argument(
        "--nifti-index",
        default=None,
        metavar="K|all",
        help="NIfTI slice along --nifti-axis, or 'all'; required for a volume of several slices",
    )
    p.add_argument("--manifest", default=None, metavar="DIR", help="predict every sample of a split instead")
    p.add_argument("--split", default="test", choices=SPLITS, help="split with --manifest (default test)")
    p.add_argument("--limit", type=int, default=None, help="the first N samples (or images) only")
    p.add_argument(
        "--overlays", type=int, default=0, help="with --manifest or many images: overlay PNGs for the first N"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="with --manifest: images per forward (greedy: one batched generate; same results as 1)",
    )
    _tts_args(p)
    p.add_argument("--no-rvls2m", action="store_true", help="switch RVLS2M off (ablation)")
    p.set_defaults(handler=predict)

    sweeps = sub.add_parser(
        "sweep",
        help="τ or test-time-scaling sweep on a checkpoint (Figures 6 and 7); "
        "`sweep seeds`: an ablation over training seeds",
        description=sweep.__doc__,
    )
    ssub = sweeps.add_subparsers(dest="sweep_command", metavar="KIND", required=True)
    for kind, text in (
        ("tau", "τ sweep: top-k cells and grid size (Figure 6)"),
        ("tts", "test-time scaling sweep: m answers, n masks (Figure 7)"),
    ):
        p = ssub.add_parser(kind, help=text, description=sweep.__doc__)
        p.add_argument("--checkpoint", required=True, metavar="CKPT")
        p.add_argument("--manifest", required=True, metavar="DIR")
        p.add_argument("--split", default="test", choices=SPLITS)
        p.add_argument("--out", required=True, metavar="DIR")
        p.add_argument("--limit", type=int, default=None, help="the first N samples only")
        p.add_argument(
            "--selector", default="consensus", choices=list(SELECTORS), help="TTS mask selector (default consensus)"
        )
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(handler=sweep, kind=kind)

    p = sub.add_parser(
        "evaluate", help="score predictions (or a baseline) with gIoU, cIoU, Dice and Acc", description=evaluate.__doc__
    )
    p.add_argument("--manifest", required=True, metavar="DIR", help="M3DS directory (with dataset_info.json)")
    p.add_argument("--split", default="test", choices=SPLITS, help="split to score (default test)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--predictions",
        metavar="P.jsonl",
        help='predictions JSONL: one {"id", "mask" (PNG path relative to this file), "answer"} per line',
    )
    src.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="a Sim4Seg checkpoint directory: predict the split first (OUT/predictions/, resumable)",
    )
    src.add_argument(
        "--baseline",
        choices=BASELINES,
        help="score a trivial baseline instead: empty mask, full-image mask, or the majority training label",
    )
    p.add_argument("--out", required=True, metavar="OUT", help="output directory")
    p.add_argument("--method", default=None, help="method name in the tables (default: the predictions file name)")
    p.add_argument(
        "--subsets",
        nargs="+",
        default=None,
        metavar="SUBSET",
        help="score only these subsets of the split (e.g. the ones a model was trained without)",
    )
    p.add_argument(
        "--modalities",
        nargs="+",
        default=None,
        metavar="MODALITY",
        help="score only subsets of these modalities (xray, dermoscopy, endoscopy, ultrasound, fundus)",
    )
    g = p.add_argument_group("with --checkpoint: test-time scaling")
    add_options(g, TTSConfig, only=("m", "n", "selector"), choices={"selector": list(SELECTORS)})
    g.add_argument("--no-rvls2m", action="store_true", help="switch RVLS2M off at inference (the ablation)")
    g.add_argument("--batch-size", type=int, default=1, help="images per forward (default 1)")
    p.add_argument(
        "--overlays",
        type=int,
        default=0,
        metavar="K",
        help="also draw the K worst and K best samples per subset by IoU as labelled overlay sheets "
        "(OUT/overlays/<subset>_{worst,best}.png; default 0: none)",
    )
    p.set_defaults(handler=evaluate)


def _tts_args(p: argparse.ArgumentParser) -> None:
    from sim4seg._config import add_options
    from sim4seg.infer.tts import SELECTORS, TTSConfig

    add_options(
        p.add_argument_group("test-time scaling"), TTSConfig, only=TTS_OPTIONS, choices={"selector": list(SELECTORS)}
    )
