"""Run a protocol (one run after another, each resumable), list its runs as shell commands, collect.

``OUT/runs/<run>/`` holds a run: ``recipe.yaml`` (the resolved training recipe), ``train/`` (the
ordinary training output; ``train/final`` the model), ``eval/<item>/`` (``metrics.json`` and the
predictions) and ``sweeps/<item>/``, plus ``commands.sh`` with the equivalent ``sim4seg train`` /
``sim4seg evaluate`` command lines. A finished run (its model and every item's result present) is
skipped; an interrupted one resumes (training from its last checkpoint, predictions from the last
finished sample).
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from sim4seg.errors import InputError
from sim4seg.paper.protocols import PROTOCOLS, RUNS, Item, Protocol, Run, item

log = logging.getLogger(__name__)

TINY_RECIPE = Path(__file__).with_name("tiny.yaml")
FULL_RECIPE = Path(__file__).resolve().parents[3] / "configs" / "sim4seg-7b.yaml"


@dataclass(frozen=True)
class Scale:
    """Settings that differ between the paper's scale and the toy scale."""

    tiny: bool
    recipe: Path
    """Base training recipe."""
    manifest: Path
    base: Path | None
    """The zero-shot model's checkpoint (the converted LISA); with ``tiny``, written untrained if unset."""
    overrides: tuple[str, ...] = ()
    """``key=value`` applied to every training recipe (after the run's own)."""
    tts_m: int = 4
    tts_n: int = 4
    max_new_tokens: int = 768
    sweep_values: tuple[int, ...] = (1, 2, 4, 8)
    limit: int | None = None
    """Sweep only the first N samples of the test split (toy scale; evaluations score the whole split)."""
    samples: int | None = None
    """Toy scale: samples of the synthetic M3DS."""

    @property
    def cot_format(self) -> str:
        # The synthetic M3DS has no chains of thought: at toy scale the CoT runs use diagnosis answers.
        return "diagnosis" if self.tiny else "cot"


def make_scale(
    out: Path,
    tiny: bool,
    recipe: str | None,
    manifest: str | None,
    base: str | None,
    overrides: list[str] | None,
    steps: int | None,
    samples: int | None,
) -> Scale:
    if samples is not None and (not tiny or samples < 10):
        raise InputError("--samples is for --tiny and needs at least 10 (one per subset; 60 gives each a test sample)")
    if steps is not None and steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    if tiny:
        over = tuple(overrides or ()) + ((f"train.max_steps={steps}",) if steps else ())
        return Scale(
            True,
            Path(recipe) if recipe else TINY_RECIPE,
            Path(manifest) if manifest else out / "m3ds",
            Path(base) if base else None,
            over,
            tts_m=2,
            tts_n=2,
            max_new_tokens=24,
            sweep_values=(1, 2),
            limit=24,
            samples=samples,
        )
    if manifest is None:
        raise InputError("give --manifest (the M3DS directory), or --tiny for the toy scale")
    over = tuple(overrides or ()) + ((f"train.max_steps={steps}",) if steps else ())
    return Scale(False, Path(recipe) if recipe else FULL_RECIPE, Path(manifest), Path(base) if base else None, over)


def run_dir(out: Path, run: str) -> Path:
    return out / "runs" / run


def recipe_overrides(run: Run, scale: Scale, out: Path) -> list[str]:
    import yaml

    items = []
    for key, value in run.recipe.items():
        if key == "data.answer_format" and value == "cot":
            value = scale.cot_format
        items.append(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    items += [f"data.manifest={scale.manifest}", f"train.output_dir={run_dir(out, run.name) / 'train'}"]
    if scale.tiny and scale.samples:
        items.append(f"data.synthetic.n={scale.samples}")
    return items + list(scale.overrides)


def write_recipe(run: Run, scale: Scale, out: Path) -> Path:
    """``OUT/runs/<run>/recipe.yaml``: the base recipe with the run's overrides, resolved and validated."""
    from sim4seg.train.recipe import load_config

    if not scale.recipe.is_file():
        raise InputError(
            "base recipe not found (give --recipe configs/sim4seg-7b.yaml from the repository)", scale.recipe
        )
    cfg = load_config(scale.recipe, recipe_overrides(run, scale, out))
    path = run_dir(out, run.name) / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(path)
    return path


def ensure_manifest(scale: Scale) -> None:
    """Toy scale: write the synthetic M3DS (all ten subsets) unless it exists."""
    if (scale.manifest / "dataset_info.json").is_file() or not scale.tiny:
        return
    from sim4seg.data.synthetic import synthesize
    from sim4seg.train.recipe import load_config

    s = load_config(scale.recipe, list(scale.overrides)).data.synthetic
    n = scale.samples or s.n
    log.info("writing a synthetic M3DS of %d samples to %s", n, scale.manifest)
    synthesize(scale.manifest, n, s.seed, size_range=(s.min_size, s.max_size))


def base_checkpoint(scale: Scale, out: Path) -> Path:
    """The zero-shot model: ``--base``, or at toy scale the untrained tiny model written once."""
    from sim4seg.model.config import CONFIG_FILE

    if scale.base is not None:
        if not (scale.base / CONFIG_FILE).is_file():
            raise InputError(
                f"not a Sim4Seg checkpoint directory ({CONFIG_FILE} missing); convert LISA with "
                "`sim4seg convert lisa SRC DST`",
                scale.base,
            )
        return scale.base
    if not scale.tiny:
        raise InputError(
            "the zero-shot rows need --base: a Sim4Seg checkpoint converted from LISA-7B "
            "(`sim4seg convert lisa SRC DST`)"
        )
    final = run_dir(out, "lisa-zero-shot") / "model"
    if not (final / CONFIG_FILE).is_file():
        from sim4seg.model import checkpoint
        from sim4seg.train.recipe import load_config
        from sim4seg.train.task import build_model

        model, processor = build_model(load_config(scale.recipe, list(scale.overrides)))
        checkpoint.save(model, processor, final)
    return final


def train_run(run: Run, scale: Scale, out: Path) -> Path:
    """Train the run's model (resuming a killed run) unless ``train/final`` holds it; return that directory."""
    from sim4seg.model.config import CONFIG_FILE
    from sim4seg.train import checkpoints as ckpt
    from sim4seg.train.loop import train
    from sim4seg.train.recipe import load_config

    d = run_dir(out, run.name) / "train"
    if (d / "final" / CONFIG_FILE).is_file():
        return d / "final"
    cfg = load_config(write_recipe(run, scale, out))
    return train(cfg, resume="auto" if ckpt.find(d, "auto") is not None else None).final_dir


def item_result(out: Path, run: str, it: Item) -> Path:
    d = run_dir(out, run)
    if it.kind == "eval":
        return d / "eval" / it.name / "metrics.json"
    return d / "sweeps" / it.name / f"{it.kind}_sweep_metrics.json"


def _predictor(checkpoint: Path, scale: Scale, it: Item):
    from sim4seg.infer.predictor import Predictor
    from sim4seg.infer.tts import TTSConfig

    m, n = (scale.tts_m, scale.tts_n) if it.tts else (1, 1)
    return Predictor.from_checkpoint(
        checkpoint, tts=TTSConfig(m=m, n=n, selector=it.selector, max_new_tokens=scale.max_new_tokens)
    )


def _subsets(scale: Scale, it: Item) -> list[str] | None:
    if it.subsets is None and it.modalities is None:
        return None
    from sim4seg.data.schema import read_info
    from sim4seg.data.selection import resolve_subsets

    return resolve_subsets(
        read_info(scale.manifest),
        subsets=it.subsets,
        modalities=it.modalities,
        where=scale.manifest,
        what=f"the held-out {it.subsets or it.modalities}",
    )


def run_item(checkpoint: Path, scale: Scale, out: Path, run: str, it: Item) -> None:
    from sim4seg._atomic import write_json
    from sim4seg.eval.evaluate import evaluate_predictions
    from sim4seg.eval.report import write_metrics, write_tau_sweep, write_tts_sweep
    from sim4seg.infer.batch import method_name, predict_split
    from sim4seg.infer.sweep import sweep_tau, sweep_tts

    predictor = _predictor(checkpoint, scale, it)
    result = item_result(out, run, it)
    if it.kind == "eval":
        only = _subsets(scale, it)
        preds = predict_split(
            predictor,
            scale.manifest,
            "test",
            result.parent / "predictions",
            use_rvls2m=it.rvls2m,
            subsets=only,
            progress=False,
        )
        ev = evaluate_predictions(scale.manifest, "test", preds, subsets=only)
        t = predictor.tts
        write_metrics(result.parent, ev.summary(), method_name(t.m, t.n, t.selector, it.rvls2m), ev.info.subsets)
    elif it.kind == "tau":
        rows, summaries = sweep_tau(predictor, scale.manifest, "test", limit=scale.limit, progress=False)
        write_tau_sweep(result.parent, rows)
        write_json(result, summaries)
    else:
        rows, summaries = sweep_tts(
            predictor,
            scale.manifest,
            "test",
            ms=scale.sweep_values,
            ns=scale.sweep_values,
            selector=it.selector,
            limit=scale.limit,
            progress=False,
        )
        write_tts_sweep(result.parent, rows)
        write_json(result, summaries)


def execute(protocol: Protocol, scale: Scale, out: Path, only_run: str | None = None) -> list[tuple[str, str, float]]:
    """Run the protocol's runs one after another; return ``(run, "done" | "skipped", seconds)`` per run."""
    import torch

    runs = [only_run] if only_run else list(protocol.runs)
    ensure_manifest(scale)
    report = []
    threads = torch.get_num_threads()
    if scale.tiny:  # the tiny model's ops gain nothing from more threads (see apps.demo.run_demo)
        torch.set_num_threads(1)
    try:
        _execute(protocol, scale, out, runs, report)
    finally:
        torch.set_num_threads(threads)
    return report


def _execute(protocol: Protocol, scale: Scale, out: Path, runs: list[str], report: list) -> None:
    for name in runs:
        run = RUNS[name]
        items = [item(name, i) for i in protocol.items[name]]
        todo = [i for i in items if not item_result(out, name, i).is_file()]
        t0 = time.perf_counter()
        if not todo and (run.recipe is None or (run_dir(out, name) / "train" / "final").is_dir()):
            report.append((name, "skipped", 0.0))
            continue
        ckpt = base_checkpoint(scale, out) if run.recipe is None else train_run(run, scale, out)
        write_commands(run, scale, out, ckpt, items)
        for it in todo:
            run_item(ckpt, scale, out, name, it)
        report.append((name, "done", time.perf_counter() - t0))


def write_commands(run: Run, scale: Scale, out: Path, ckpt: Path, items: list[Item]) -> Path:
    """``commands.sh``: the ordinary ``sim4seg`` command lines equivalent to the run."""
    from sim4seg._atomic import write_text

    d = run_dir(out, run.name)
    lines = ["#!/bin/sh", f"# run {run.name}: the equivalent ordinary commands", "set -e"]
    lines += [
        f"# the protocol's evaluations generate at most {scale.max_new_tokens} new tokens per answer "
        "(TTSConfig.max_new_tokens); `sim4seg evaluate` uses its default"
    ]
    if run.recipe is not None:
        lines.append(f"sim4seg train --config {shlex.quote(str(d / 'recipe.yaml'))} --resume auto")
    for it in items:
        if it.kind != "eval":
            lines.append(f"# {it.name}: infer.sweep.sweep_{it.kind}(...) on {ckpt} (see sim4seg.paper.runner)")
            continue
        cmd = [
            "sim4seg",
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--manifest",
            str(scale.manifest),
            "--split",
            "test",
            "--out",
            str(d / "eval" / it.name),
        ]
        if it.rvls2m is False:
            cmd.append("--no-rvls2m")
        if it.tts:
            cmd += ["--m", str(scale.tts_m), "--n", str(scale.tts_n), "--selector", it.selector]
        if it.subsets:
            cmd += ["--subsets", *it.subsets]
        if it.modalities:
            cmd += ["--modalities", *it.modalities]
        lines.append(shlex.join(cmd))
    write_text(d / "commands.sh", "\n".join(lines) + "\n")
    return d / "commands.sh"


def commands(protocol: Protocol, argv_tail: list[str]) -> list[str]:
    """One shell line per run of the protocol (independent: for a scheduler's job array)."""
    return [shlex.join(["sim4seg", "paper", protocol.name, *argv_tail, "--run", r]) for r in protocol.runs]


def protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise InputError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def check_run(p: Protocol, run: str | None) -> None:
    if run is not None and run not in p.runs:
        raise InputError(f"{p.name} has no run {run!r}; its runs: {', '.join(p.runs)}")
