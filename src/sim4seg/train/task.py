"""The default training task: Sim4Seg built from the recipe, on M3DS datasets built from the recipe."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from sim4seg.errors import InputError
from sim4seg.train.recipe import Config
from sim4seg.train.state import TrainData

log = logging.getLogger(__name__)


def build_model(config: Config):
    """``(model, processor)``: ``model.init_from``'s checkpoint, the tiny random model or a named preset, with what
    trains set by the recipe."""
    from sim4seg.model import presets, tiny

    m = config.model
    dtype = getattr(torch, m.dtype)
    if m.init_from:  # fine-tune: the checkpoint's weights, the recipe's trainable policy, a new run
        from sim4seg.model.checkpoint import load_for_finetuning

        log.info("initialising from the Sim4Seg checkpoint %s", m.init_from)
        return load_for_finetuning(m.init_from, config.sim4seg_config(), dtype=dtype)
    if m.preset == "tiny":
        model, processor = tiny.build_tiny(config.sim4seg_config(), spec=m.tiny, seed=config.train.seed)
        return model.to(dtype), processor
    return presets.from_preset(m.preset, config.sim4seg_config(), lvlm=m.lvlm, sam=m.sam, dtype=dtype)


@dataclass
class CheckedData:
    """The recipe's data, read and checked (``check_data``) before any model is built."""

    root: Path
    train: list
    """The training split's samples of the recipe's subsets (``sim4seg.data.schema.Sample``)."""
    val: list | None
    """The validation samples (``data.max_val_samples`` applied), or ``None`` without ``data.val_split``."""


def _answers_present(samples: list, fmt: str, path: Path) -> None:
    missing = [s.id for s in samples if not s.answers.get(fmt)]
    if missing:
        hint = (
            ("generate them with `sim4seg cot generate` and `sim4seg cot apply`, or set data.answer_format=diagnosis")
            if fmt == "cot"
            else "rebuild the manifest"
        )
        raise InputError(
            f"{len(missing)} of {len(samples)} sample(s) have no {fmt!r} answer (first: {missing[0]}); {hint}", path
        )


def check_data(config: Config, accelerator=None) -> CheckedData:
    """Everything about the data that can fail, checked before the model is built (a 7B model is 14 GB to load).

    The manifest exists (or a synthetic one is written first, ``data.synthetic.n``), the training
    split is non-empty, every listed subset is in the manifest (subsets present but not listed are
    named in a warning), every sample has an answer in ``data.answer_format`` (e.g. ``cot``), and
    ``data.mix`` names only subsets trained on.
    """
    from contextlib import nullcontext

    from sim4seg.data.dataset import select_subsets
    from sim4seg.data.schema import read_info, read_split

    d = config.data
    if not d.manifest:
        raise InputError("data.manifest is not set: name an M3DS directory (or one to synthesize into)")
    root = Path(d.manifest)
    first = accelerator.main_process_first() if accelerator is not None else nullcontext()
    with first:
        if not (root / "dataset_info.json").is_file():
            if not d.synthetic.n:
                raise InputError(
                    "no M3DS manifest here (dataset_info.json not found); build one with "
                    "`sim4seg data synth` or set data.synthetic.n to write a synthetic one",
                    root,
                )
            if accelerator is None or accelerator.is_main_process:
                from sim4seg.data.synthetic import synthesize

                log.info("writing a synthetic M3DS of %d samples to %s", d.synthetic.n, root)
                s = d.synthetic
                synthesize(root, s.n, s.seed, subsets=d.subsets, size_range=(s.min_size, s.max_size))
    info = read_info(root)
    subsets = selected_subsets(d, root)
    path = root / f"{d.train_split}.jsonl"
    train = select_subsets(read_split(root, d.train_split, info), subsets, list(info.subsets), where=path)
    if not train:
        raise InputError(
            f"the {d.train_split!r} split has no samples"
            + (f" of {subsets}" if subsets else "")
            + f" ({path.name} missing or empty)",
            root,
        )
    _answers_present(train, d.answer_format, path)
    if d.mix is not None:
        absent = sorted(set(d.mix) - {s.subset for s in train})
        if absent:
            raise InputError(
                f"data.mix names subset(s) with no training samples: {absent}; trained on: "
                f"{sorted({s.subset for s in train})}",
                path,
            )
    val = None
    if d.val_split:
        vpath = root / f"{d.val_split}.jsonl"
        val = select_subsets(read_split(root, d.val_split, info), subsets, list(info.subsets), where=vpath)
        val = val[: d.max_val_samples] if d.max_val_samples is not None else val
        _answers_present(val, d.answer_format, vpath)
    log.info(
        "data: %d training sample(s) of %s (%s answers), %s validation sample(s), from %s",
        len(train),
        ", ".join(sorted({s.subset for s in train})),
        d.answer_format,
        "no" if val is None else len(val),
        root,
    )
    return CheckedData(root, train, val)


def build_data(config: Config, model, processor, accelerator, checked: CheckedData | None = None):
    """M3DS train / val datasets, their collator and (with ``data.mix``) the subset-mixing sampler."""
    from sim4seg.data.dataset import Collator, ExampleEncoder, M3DSDataset, SubsetMixSampler

    d = config.data
    checked = checked or check_data(config, accelerator)
    encoder = ExampleEncoder.for_model(model, processor)
    kw = dict(answer_format=d.answer_format, cache_mb=d.cache_mb)
    train = M3DSDataset(checked.root, d.train_split, encoder, samples=checked.train, **kw)
    val = None
    if checked.val is not None:
        val = M3DSDataset(checked.root, d.val_split, encoder, samples=checked.val, **kw)
    sampler = None
    if d.mix is not None or d.samples_per_epoch is not None:
        sampler = SubsetMixSampler(
            [s.subset for s in train.samples],
            d.mix,
            num_samples=d.samples_per_epoch or len(train),
            seed=config.train.seed,
        )
    return TrainData(train, val, Collator(processor.tokenizer.pad_token_id), sampler)


def selected_subsets(d, root: Path) -> list[str] | None:
    """``data.subsets`` less ``data.exclude_subsets`` / ``data.exclude_modalities``, checked against the manifest."""
    if d.exclude_subsets is None and d.exclude_modalities is None:
        return d.subsets
    from sim4seg.data.schema import read_info
    from sim4seg.data.selection import resolve_subsets

    return resolve_subsets(
        read_info(root),
        subsets=d.subsets,
        exclude_subsets=d.exclude_subsets,
        exclude_modalities=d.exclude_modalities,
        where=root,
        what="the recipe's data selection",
    )


def build(config: Config, accelerator, datasets=None):
    """``(model, data, save)``: the model, its data (unless given) and how to write the trained model.

    ``save(model, directory)`` writes a Sim4Seg checkpoint directory (``sim4seg.model.checkpoint``),
    which ``checkpoint.load`` and the predictor read.
    """
    from sim4seg.model import checkpoint

    checked = check_data(config, accelerator) if datasets is None else None  # before a 14 GB model loads
    model, processor = build_model(config)
    if datasets is None:
        datasets = build_data(config, model, processor, accelerator, checked)
    return model, datasets, lambda m, directory: checkpoint.save(m, processor, directory)


def training_record(config: Config, datasets, state, last_logs: dict) -> dict:
    """What ``training.json`` keeps beside the trained weights (``sim4seg model info`` prints it): when, on which
    subsets and label sets, from which manifest, how long, and the last training / validation figures."""
    import datetime

    from sim4seg._version import __version__

    record: dict = {
        "format": 1,
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sim4seg_version": __version__,
        "model": {
            "preset": config.model.preset,
            "lvlm": config.model.lvlm,
            "sam": config.model.sam,
            "dtype": config.model.dtype,
        },
        "steps": state.global_step,
        "epochs_completed": state.epoch,
        "samples_seen": state.samples_seen,
        "data": {
            "manifest": config.data.manifest,
            "train_split": config.data.train_split,
            "val_split": config.data.val_split,
            "answer_format": config.data.answer_format,
        },
        "subsets": {},
        "metrics": {
            "train": {k: v for k, v in last_logs.items() if k not in ("epoch",)},
            "validations": list(state.validations),
        },
    }
    train = datasets.train
    samples = getattr(train, "samples", None)
    root = getattr(train, "root", None)
    if samples is None or root is None:  # a custom dataset: no label sets to record
        return record
    from sim4seg.data.schema import read_info

    info = read_info(root)
    counts: dict[str, dict[str, int]] = {}
    for s in samples:
        by_label = counts.setdefault(s.subset, {})
        by_label[s.diagnosis] = by_label.get(s.diagnosis, 0) + 1
    record["data"].update(
        manifest=str(Path(root).resolve()),
        build=info.build,
        train_counts={k: dict(sorted(v.items())) for k, v in sorted(counts.items())},
        n_train=len(samples),
        n_val=len(datasets.val) if datasets.val is not None else 0,
    )
    record["subsets"] = {name: info.subsets[name].to_json() for name in sorted(counts)}
    return record
