"""``sim4seg demo``: the main job, end to end on the CPU.

1. synthesize a small M3DS (the recipe's ``data.synthetic``) into ``OUT/m3ds``;
2. train the tiny model with ``train.loop.train`` (``OUT/train``: logs, resumable checkpoints; the trained
   model as a checkpoint directory in ``OUT/train/final``) and, at the same time in a worker process, a
   second one without RVLS2M (``OUT/train-no-rvls2m``: the paper's ablation row);
3. score the trivial baselines (empty mask, full mask, majority label) and the model on the test
   split — without RVLS2M (switched off at inference), with it, and with test-time scaling
   (``OUT/eval/<name>/metrics.json`` etc., predictions and masks beside them), two evaluations at a time;
4. the τ and TTS sweeps and the learning curve as CSV + PNG (``OUT/plots``), labelled example overlays
   (``OUT/examples/examples.png``), the main evaluation's pictures (``OUT/eval/sim4seg``: per-subset bars,
   confusion matrices, the 2 worst / best samples per subset), and every table in ``OUT/results.md``.

The figures are reproducible run to run on one machine: seeded data and training, deterministic
kernels (``torch.use_deterministic_algorithms``) and a fixed intra-op thread count (``THREADS``) in every
process; ``JOBS`` single-threaded processes use the cores instead of threads.

A killed demo rerun with the same ``--out`` resumes: training from its last checkpoint, each
prediction file from its last finished sample.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_RECIPE = Path(__file__).resolve().parents[3] / "configs" / "demo.yaml"
BAR = {"giou": 0.5, "acc": 0.8}
"""What the demo must reach on the synthetic test split to count as having learned."""
THREADS = 1
"""Intra-op threads the demo runs with (fixed: the same count gives the same figures). One: the tiny model's
matrices are too small to gain from a second thread, and two threads spin-wait at every barrier when another
process holds a core (measured at up to 11 s per training step on a shared 2-core machine, against 0.3 s)."""


@dataclass
class DemoResult:
    results: list[tuple[str, dict]]
    """``(method, metrics.json dict)`` in table order."""
    model: dict
    """The main row's overall metrics (RVLS2M on, greedy)."""
    passed: bool
    timings: dict[str, float] = field(default_factory=dict)
    tables: str = ""


def _recipe(out: Path, recipe: str | os.PathLike | None, overrides: list[str]):
    from sim4seg.errors import InputError
    from sim4seg.train.recipe import load_config

    path = Path(recipe) if recipe else DEFAULT_RECIPE
    if not path.is_file():
        raise InputError("demo recipe not found (give --config configs/demo.yaml from the repository)", path)
    base = [f"data.manifest={out / 'm3ds'}", f"train.output_dir={out / 'train'}"]
    return load_config(path, base + list(overrides))


def train_model(cfg, out: Path) -> Path:
    """Train (resuming a killed run) unless ``OUT/train/final`` already holds the trained checkpoint; return it."""
    from sim4seg.model.config import CONFIG_FILE
    from sim4seg.train import checkpoints as ckpt
    from sim4seg.train.loop import train

    run_dir = Path(cfg.train.output_dir)
    final = run_dir / "final"
    if (final / CONFIG_FILE).is_file():
        log.info("reusing the trained model in %s", final)
        return final
    resume = "auto" if ckpt.find(run_dir, "auto") is not None else None
    return train(cfg, resume=resume).final_dir


def example_ids(root: Path, split: str, per_subset: int) -> list[str]:
    from sim4seg.data.schema import iter_split

    seen: dict[str, int] = {}
    out = []
    for s in iter_split(root, split):
        if seen.get(s.subset, 0) < per_subset:
            seen[s.subset] = seen.get(s.subset, 0) + 1
            out.append(s.id)
    return out


def example_sheet(root: Path, ids: list[str], preds: Path, rows: list[dict], out: Path) -> Path:
    """``examples.png``: a labelled row per example — image, ground truth (green), prediction (red), with the
    id, the true and predicted diagnosis and the IoU (``rows``: the evaluator's per-sample rows)."""
    from sim4seg.data.io import read_image, read_mask
    from sim4seg.data.schema import iter_split
    from sim4seg.eval.figures import overlay_sheet

    by_id = {s.id: s for s in iter_split(root, "test")}
    row = {r["id"]: r for r in rows}
    samples = [
        {
            "id": sid,
            "image": read_image(root / by_id[sid].image),
            "gt": read_mask(root / by_id[sid].mask),
            "pred": read_mask(preds / "masks" / f"{sid}.png"),
            "label": row[sid]["label"],
            "parsed": row[sid]["parsed"],
            "iou": row[sid]["iou"],
        }
        for sid in ids
    ]
    return overlay_sheet(
        samples, "Sim4Seg (RVLS2M, greedy): the first test samples of each subset", out / "examples.png"
    )


def verdict_line(o: dict, passed: bool) -> str:
    """The line the demo prints (and ``results.md`` ends with) on the main row against the bar."""
    return (
        f"Sim4Seg (RVLS2M, greedy) on the synthetic test split: gIoU {100 * o['giou']:.2f}%, "
        f"cIoU {100 * o['ciou']:.2f}%, Acc {100 * o['acc']:.2f}% — bar gIoU {100 * BAR['giou']:.0f}% and "
        f"Acc {100 * BAR['acc']:.0f}%: {'LEARNED' if passed else 'BELOW THE BAR'}"
    )


def run_demo(
    out: str | os.PathLike,
    *,
    recipe: str | os.PathLike | None = None,
    overrides: list[str] = (),
    tts_m: int = 4,
    tts_n: int = 4,
    sweeps: bool = True,
    progress: bool = True,
    ablation: bool = True,
) -> DemoResult:
    """The whole demo (see the module docstring); returns the tables and whether the bar was met.

    ``ablation``: also train a second model without RVLS2M (the paper's Table 3 ablation).
    """
    with fixed_threads():
        return _run(Path(out), recipe, list(overrides), tts_m, tts_n, sweeps, progress, ablation)


@contextlib.contextmanager
def fixed_threads(threads: int | None = None):
    """Run the block with ``threads`` (default ``THREADS``) intra-op threads and deterministic kernels.

    A fixed thread count (reductions split the same way every run) and deterministic kernels make the
    figures the same on every run on one machine. One intra-op thread by default (why: ``THREADS``).
    """
    import torch

    saved = _fix_threads(THREADS if threads is None else threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


def _fix_threads(threads: int) -> tuple[int, bool]:
    """Set ``threads`` intra-op threads and deterministic kernels; return the previous settings."""
    import torch

    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_flush_denormal(True)  # tiny weights near zero: avoid the CPU's slow denormal path
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return saved


JOBS = 2
"""Processes the demo runs at once (the two trainings, then the evaluations): one per core of the 2-core machine
it is sized for. Each is single-threaded and deterministic, so the figures do not depend on which runs where."""


def _init_worker(level: int) -> None:
    """A demo worker process: the parent's log level, ``THREADS`` intra-op threads and deterministic kernels."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _fix_threads(THREADS)  # for the worker's whole life


def _train_job(out: Path, recipe, overrides: list[str]) -> Path:
    return train_model(_recipe(out, recipe, overrides), out)


def _eval_job(out: Path, root: Path, key: str, ckpt: Path, tcfg, rv, examples: list[str]) -> tuple[str, dict]:
    """One evaluation row: predict the test split into ``OUT/eval/KEY`` (resuming), score it, write its metrics;
    the main row (``sim4seg``) also writes the example sheet and the evaluation's pictures."""
    from sim4seg.eval.evaluate import evaluate_predictions
    from sim4seg.eval.report import write_metrics
    from sim4seg.infer.batch import method_name, predict_split
    from sim4seg.infer.predictor import Predictor

    t = time.perf_counter()
    predictor = Predictor.from_checkpoint(ckpt)
    predictor.tts = tcfg
    d = out / "eval" / key
    main = key == "sim4seg"
    preds = predict_split(
        predictor, root, "test", d / "predictions", use_rvls2m=rv, progress=False, overlays=examples if main else 0
    )
    ev = evaluate_predictions(root, "test", preds)
    name = method_name(tcfg.m, tcfg.n, tcfg.selector, rv)
    if rv is False:
        name += " (trained without)" if key == "no-rvls2m-trained" else " (off at inference)"
    write_metrics(d, ev.summary(), name, ev.info.subsets)
    if main:
        from sim4seg.eval.figures import evaluation_pictures

        ex = out / "examples"
        ex.mkdir(parents=True, exist_ok=True)
        for p in sorted((d / "predictions" / "overlays").glob("*.png")):
            shutil.copyfile(p, ex / p.name)
        example_sheet(root, examples, d / "predictions", ev.rows, ex)
        evaluation_pictures(root, "test", ev.rows, ev.summary(), preds, d, 2, name)
    log.info("evaluated %s in %.1f s", key, time.perf_counter() - t)
    return name, ev.summary()


def _sweep_job(out: Path, root: Path, ckpt: Path, which: str, short: int) -> None:
    """The τ sweep (Figure 6) or the TTS sweep (Figure 7) of the trained model, as CSV + PNG in ``OUT/plots``."""
    from sim4seg.eval.report import write_tau_sweep, write_tts_sweep
    from sim4seg.infer.predictor import Predictor
    from sim4seg.infer.sweep import sweep_tau, sweep_tts
    from sim4seg.infer.tts import TTSConfig

    t = time.perf_counter()
    predictor = Predictor.from_checkpoint(ckpt)
    predictor.tts = TTSConfig(max_new_tokens=short)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    if which == "tau":
        write_tau_sweep(plots, sweep_tau(predictor, root, "test", progress=False)[0])
    else:
        write_tts_sweep(plots, sweep_tts(predictor, root, "test", ms=(1, 2, 4, 8), ns=(1, 2, 4, 8), progress=False)[0])
    log.info("swept %s in %.1f s", which, time.perf_counter() - t)


def _run(
    out: Path, recipe, overrides: list[str], tts_m: int, tts_n: int, sweeps: bool, progress: bool, ablation: bool
) -> DemoResult:
    import multiprocessing

    from sim4seg.eval.evaluate import evaluate_baseline
    from sim4seg.eval.report import markdown, write_metrics
    from sim4seg.infer.tts import TTSConfig
    from sim4seg.train.task import check_data

    t0 = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    timings: dict[str, float] = {}
    if not progress:
        overrides = overrides + ["train.progress=false"]
    cfg = _recipe(out, recipe, overrides)
    check_data(cfg)  # writes the synthetic M3DS once, before two trainings read it
    pool = multiprocessing.get_context("spawn").Pool(JOBS, _init_worker, (log.getEffectiveLevel(),))
    try:
        ablation_job = None
        if ablation:  # trains in a worker while this process trains the main model (with the progress bar)
            off = [
                "model.rvls2m.train=false",
                "model.rvls2m.infer=false",
                f"train.output_dir={out / 'train-no-rvls2m'}",
            ]
            ablation_job = pool.apply_async(_train_job, (out, recipe, overrides + off + ["train.progress=false"]))
        ckpt_dir = train_model(cfg, out)
        timings["synthesize_and_train_s"] = time.perf_counter() - t0
        ablation_dir = ablation_job.get() if ablation_job is not None else None
        timings["trainings_s"] = time.perf_counter() - t0
        root = Path(cfg.data.manifest)

        t1 = time.perf_counter()
        short = 64  # the demo trains the short 'diagnosis' answers (~20 tokens), not chains of thought
        examples = example_ids(root, "test", 2)
        runs = [("no-rvls2m-trained", ablation_dir, TTSConfig(max_new_tokens=short), False)] if ablation_dir else []
        runs += [
            ("no-rvls2m", ckpt_dir, TTSConfig(max_new_tokens=short), False),
            ("sim4seg", ckpt_dir, TTSConfig(max_new_tokens=short), None),
        ]
        runs += [
            (
                f"tts-{tts_m}x{tts_n}-{sel}",
                ckpt_dir,
                TTSConfig(m=tts_m, n=tts_n, selector=sel, max_new_tokens=short),
                None,
            )
            for sel in ("consensus", "oracle")
        ]
        sweep_jobs = (
            [pool.apply_async(_sweep_job, (out, root, ckpt_dir, w, short)) for w in ("tts", "tau")] if sweeps else []
        )
        eval_jobs = [
            pool.apply_async(_eval_job, (out, root, key, ck, tcfg, rv, examples)) for key, ck, tcfg, rv in runs
        ]
        results: list[tuple[str, dict]] = []
        for kind in ("empty", "full", "majority"):
            ev = evaluate_baseline(root, "test", kind)
            name = f"baseline: {kind}" + {"empty": " mask", "full": " mask", "majority": " label"}[kind]
            write_metrics(out / "eval" / f"baseline-{kind}", ev.summary(), name, ev.info.subsets)
            results.append((name, ev.summary()))
        rows = {key: job.get() for (key, *_), job in zip(runs, eval_jobs)}
        results += rows.values()
        model_row = rows["sim4seg"][1]["overall"]
        for job in sweep_jobs:
            job.get()
        timings["evaluations_and_sweeps_s"] = time.perf_counter() - t1
    except BaseException:  # a failed job, a failure here or Ctrl-C: stop the workers now, not after their queue
        pool.terminate()
        raise
    finally:
        pool.close()
        pool.join()

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    from sim4seg.eval.figures import learning_curve

    learning_curve(
        Path(cfg.train.output_dir) / "log.jsonl",
        plots / "learning_curve.png",
        "training loss (tiny Sim4Seg, synthetic M3DS)",
    )

    from sim4seg.data.schema import read_info

    tables = markdown(results, read_info(root).subsets)
    passed = bool(
        model_row["giou"] is not None
        and model_row["acc"] is not None
        and model_row["giou"] >= BAR["giou"]
        and model_row["acc"] >= BAR["acc"]
    )
    timings["total_s"] = time.perf_counter() - t0
    from sim4seg._atomic import write_json, write_text

    write_text(out / "results.md", tables + "\n" + verdict_line(model_row, passed) + "\n")
    import torch

    environment = {
        "threads": torch.get_num_threads(),
        "processes": JOBS,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "loadavg_start": load_start,
    }
    write_json(
        out / "summary.json",
        {
            "model": model_row,
            "bar": BAR,
            "passed": passed,
            "timings": timings,
            "environment": environment,
            "checkpoint": str(ckpt_dir),
            "recipe": str(recipe or DEFAULT_RECIPE),
        },
    )
    return DemoResult(results, model_row, passed, timings, tables)
