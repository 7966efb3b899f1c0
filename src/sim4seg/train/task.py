"""The default training task: Sim4Seg built from the recipe, on M3DS datasets built from the recipe."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from sim4seg.train.recipe import Config
from sim4seg.errors import InputError
from sim4seg.train.state import TrainData

log = logging.getLogger(__name__)


def build_model(config: Config):
    """``(model, processor)``: the tiny random model or a named preset, with what trains set by the recipe."""
    from sim4seg.model import presets, tiny

    m = config.model
    dtype = getattr(torch, m.dtype)
    if m.preset == "tiny":
        model, processor = tiny.build_tiny(config.sim4seg_config(), spec=m.tiny,
                                               seed=config.train.seed)
        return model.to(dtype), processor
    return presets.from_preset(m.preset, config.sim4seg_config(), lvlm=m.lvlm, sam=m.sam, dtype=dtype)


def build_data(config: Config, model, processor, accelerator):
    """M3DS train / val datasets, their collator and (with ``data.mix``) the subset-mixing sampler."""
    from sim4seg.data.dataset import Collator, ExampleEncoder, M3DSDataset, SubsetMixSampler

    d = config.data
    if not d.manifest:
        raise InputError("data.manifest is not set: name an M3DS directory (or one to synthesize into)")
    root = Path(d.manifest)
    with accelerator.main_process_first():
        if not (root / "dataset_info.json").is_file():
            if not d.synthetic.n:
                raise InputError("no M3DS manifest here (dataset_info.json not found); build one with "
                                 "`sim4seg data synth` or set data.synthetic.n to write a synthetic one", root)
            if accelerator.is_main_process:
                from sim4seg.data.synthetic import synthesize

                log.info("writing a synthetic M3DS of %d samples to %s", d.synthetic.n, root)
                s = d.synthetic
                synthesize(root, s.n, s.seed, subsets=d.subsets, size_range=(s.min_size, s.max_size))
    encoder = ExampleEncoder.for_model(model, processor)
    train = M3DSDataset(root, d.train_split, encoder, answer_format=d.answer_format, subsets=d.subsets)
    if not len(train):
        raise InputError(f"the {d.train_split!r} split has no samples" + (f" of {d.subsets}" if d.subsets else ""), root)
    val = None
    if d.val_split:
        val = M3DSDataset(root, d.val_split, encoder, answer_format=d.answer_format, subsets=d.subsets)
        if d.max_val_samples is not None:
            val = M3DSDataset(root, d.val_split, encoder, answer_format=d.answer_format,
                              samples=val.samples[: d.max_val_samples])
    sampler = None
    if d.mix is not None or d.samples_per_epoch is not None:
        sampler = SubsetMixSampler([s.subset for s in train.samples], d.mix,
                                   num_samples=d.samples_per_epoch or len(train), seed=config.train.seed)
    return TrainData(train, val, Collator(processor.tokenizer.pad_token_id), sampler)


def build(config: Config, accelerator, datasets=None):
    """``(model, data, save)``: the model, its data (unless given) and how to write the trained model.

    ``save(model, directory)`` writes a Sim4Seg checkpoint directory (``sim4seg.model.checkpoint``),
    which ``checkpoint.load`` and the predictor read.
    """
    from sim4seg.model import checkpoint

    model, processor = build_model(config)
    if datasets is None:
        datasets = build_data(config, model, processor, accelerator)
    return model, datasets, lambda m, directory: checkpoint.save(m, processor, directory)


def training_record(config: Config, datasets, state, last_logs: dict) -> dict:
    """What ``training.json`` keeps beside the trained weights (``sim4seg model info`` prints it): when, on which
    subsets and label sets, from which manifest, how long, and the last training / validation figures."""
    import datetime

    from sim4seg import __version__

    record: dict = {
        "format": 1,
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sim4seg_version": __version__,
        "model": {"preset": config.model.preset, "lvlm": config.model.lvlm, "sam": config.model.sam,
                  "dtype": config.model.dtype},
        "steps": state.global_step, "epochs_completed": state.epoch, "samples_seen": state.samples_seen,
        "data": {"manifest": config.data.manifest, "train_split": config.data.train_split,
                 "val_split": config.data.val_split, "answer_format": config.data.answer_format},
        "subsets": {},
        "metrics": {"train": {k: v for k, v in last_logs.items() if k not in ("epoch",)},
                    "validations": list(state.validations)},
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
    record["data"].update(manifest=str(Path(root).resolve()), build=info.build,
                          train_counts={k: dict(sorted(v.items())) for k, v in sorted(counts.items())},
                          n_train=len(samples), n_val=len(datasets.val) if datasets.val is not None else 0)
    record["subsets"] = {name: info.subsets[name].to_json() for name in sorted(counts)}
    return record
