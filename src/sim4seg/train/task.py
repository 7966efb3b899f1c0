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
    subsets = selected_subsets(d, root)
    encoder = ExampleEncoder.for_model(model, processor)
    train = M3DSDataset(root, d.train_split, encoder, answer_format=d.answer_format, subsets=subsets)
    if not len(train):
        raise InputError(f"the {d.train_split!r} split has no samples" + (f" of {subsets}" if subsets else ""), root)
    val = None
    if d.val_split:
        val = M3DSDataset(root, d.val_split, encoder, answer_format=d.answer_format, subsets=subsets)
        if d.max_val_samples is not None:
            val = M3DSDataset(root, d.val_split, encoder, answer_format=d.answer_format,
                              samples=val.samples[: d.max_val_samples])
    sampler = None
    if d.mix is not None or d.samples_per_epoch is not None:
        sampler = SubsetMixSampler([s.subset for s in train.samples], d.mix,
                                   num_samples=d.samples_per_epoch or len(train), seed=config.train.seed)
    return TrainData(train, val, Collator(processor.tokenizer.pad_token_id), sampler)


def selected_subsets(d, root: Path) -> list[str] | None:
    """``data.subsets`` less ``data.exclude_subsets`` / ``data.exclude_modalities``, checked against the manifest."""
    if d.exclude_subsets is None and d.exclude_modalities is None:
        return d.subsets
    from sim4seg.data.schema import read_info
    from sim4seg.data.selection import resolve_subsets

    return resolve_subsets(read_info(root), subsets=d.subsets, exclude_subsets=d.exclude_subsets,
                           exclude_modalities=d.exclude_modalities, where=root, what="the recipe's data selection")


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
