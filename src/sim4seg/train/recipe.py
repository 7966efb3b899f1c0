"""Training recipes: dataclass configs loaded from YAML, with ``--set key.sub=value`` overrides.

A recipe has four sections::

    model:  which weights (``tiny`` or a preset of ``sim4seg.model.presets``) and the model's own
            config (``Sim4SegConfig``: [SEG], max_length, RVLS2M, Eq. 10's loss weights, what trains)
    data:   the M3DS manifest (or a synthetic one to write first), answer format, subset mixing
    optim:  AdamW and the learning-rate schedule (defaults: the paper's recipe)
    train:  output directory, seed, precision, checkpoints, logs, DeepSpeed

Every section validates itself in ``__post_init__``; ``load_config`` (``sim4seg._config``'s
loader) turns any problem (an unknown key, a value of the wrong type or range) into an
``InputError`` naming the key and the file. ``Config.save`` writes the resolved recipe (after
overrides) beside the checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import yaml

from sim4seg._atomic import write_text
from sim4seg._config import from_dict, load_yaml, to_dict
from sim4seg.model.config import Sim4SegConfig, TinySpec

PRECISIONS = ("no", "bf16")
SCHEDULES = ("linear", "cosine", "constant")
ANSWER_FORMATS = ("plain", "diagnosis", "cot")
MODEL_DTYPES = ("float32", "bfloat16")
CONFIG_NAME = "config.yaml"


@dataclass
class ModelConfig(Sim4SegConfig):
    """Which model to build: the model's own config (``Sim4SegConfig``) plus where its weights come from."""

    preset: str = "tiny"
    """``tiny`` (random, CPU-sized) or a named preset of ``sim4seg.model.presets.PRESETS`` (e.g. ``lisa-7b``)."""
    lvlm: str | None = None
    """Local path (or hub id) replacing the preset's LVLM / LISA checkpoint."""
    sam: str | None = None
    """Local path (or hub id) replacing the preset's SAM."""
    init_from: str | None = None
    """A Sim4Seg checkpoint directory to start a new run from (fresh optimizer and schedule; preset ignored)."""
    dtype: str = "float32"
    """Dtype the weights are loaded in: ``float32`` or ``bfloat16``."""
    tiny: TinySpec = field(default_factory=TinySpec)
    """Sizes used when ``preset`` is ``tiny``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.preset:
            raise ValueError("model.preset must name a preset (or 'tiny')")
        if self.dtype not in MODEL_DTYPES:
            raise ValueError(f"model.dtype must be one of {MODEL_DTYPES}, got {self.dtype!r}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"model.max_length must be >= 8, got {self.max_length}")


@dataclass
class SyntheticConfig:
    """A synthetic M3DS written to ``data.manifest`` first when that directory holds none."""

    n: int = 0
    """Samples to synthesize (0: never synthesize; the manifest must exist)."""
    seed: int = 0
    """Seed of the synthetic images."""
    min_size: int = 64
    """Smallest image side in pixels."""
    max_size: int = 96
    """Largest image side in pixels."""

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"data.synthetic.n must be >= 0, got {self.n}")
        if not 16 <= self.min_size <= self.max_size:
            raise ValueError(f"data.synthetic needs 16 <= min_size <= max_size, got {self.min_size}, {self.max_size}")


@dataclass
class DataConfig:
    """Where the examples come from and how they are drawn."""

    manifest: str | None = None
    """M3DS directory (``dataset_info.json`` + ``{train,val,test}.jsonl``)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """Write a synthetic M3DS to ``manifest`` first if it has none."""
    answer_format: str = "diagnosis"
    """``plain`` (It is [SEG].), ``diagnosis`` (+ the diagnosis) or ``cot`` (+ the chain of thought)."""
    subsets: list[str] | None = None
    """Subsets to train on (default: all in the manifest)."""
    exclude_subsets: list[str] | None = None
    """Subsets left out of training and validation (the paper's Table 6: tested on what was left out)."""
    exclude_modalities: list[str] | None = None
    """Modalities (``xray``, ``dermoscopy``, ...) left out of training and validation (Table 5)."""
    mix: dict[str, float] | None = None
    """Relative sampling rate per subset (draws with replacement); unset: each sample once per epoch."""
    samples_per_epoch: int | None = None
    """Examples drawn per epoch with ``mix`` (default: the size of the training split)."""
    train_split: str = "train"
    """Split trained on."""
    val_split: str | None = "val"
    """Split validated on each epoch (``null``: no validation data)."""
    max_val_samples: int | None = None
    """Validate on the first N samples of ``val_split`` only."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the training process)."""
    cache_mb: float = 0
    """Keep encoded training / validation examples in memory up to this many MiB per dataset and process
    (and per DataLoader worker),
    so that epochs after the first skip image decoding and preprocessing. For small datasets (the demo); 0: off."""

    def __post_init__(self) -> None:
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"data.answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}")
        if self.mix is not None and (
            any(r < 0 for r in self.mix.values()) or not any(r > 0 for r in self.mix.values())
        ):
            raise ValueError(f"data.mix rates must be >= 0 with at least one > 0, got {self.mix}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ValueError(f"data.samples_per_epoch must be >= 1, got {self.samples_per_epoch}")
        if self.max_val_samples is not None and self.max_val_samples < 1:
            raise ValueError(f"data.max_val_samples must be >= 1, got {self.max_val_samples}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.cache_mb < 0:
            raise ValueError(f"data.cache_mb must be >= 0, got {self.cache_mb}")
        if self.subsets is not None and not self.subsets:
            raise ValueError("data.subsets must name at least one subset (or be null for all)")


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule. Defaults: the paper's recipe (§4.1)."""

    lr: float = 3e-4
    """Peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay, applied to weight matrices (biases and norm scales are not decayed)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW β1, β2."""
    eps: float = 1e-8
    """AdamW ε."""
    batch_size: int = 2
    """Examples per process per micro-batch."""
    grad_accum: int = 10
    """Micro-batches per optimizer step (effective batch = batch_size × grad_accum × processes)."""
    epochs: int = 4
    """Passes over the training data."""
    warmup_steps: int | None = 100
    """Optimizer steps of linear warm-up (LISA's recipe: 100)."""
    warmup_ratio: float | None = None
    """Warm-up as a share of all optimizer steps (instead of ``warmup_steps``)."""
    schedule: str = "linear"
    """Decay after warm-up: ``linear``, ``cosine`` or ``constant``."""
    min_lr_ratio: float = 0.0
    """Learning rate at the end of the decay, as a share of ``lr``."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this (``null``: no clipping)."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            raise ValueError(f"optim.eps must be > 0, got {self.eps}")
        for name in ("batch_size", "grad_accum", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"optim.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("set optim.warmup_steps or optim.warmup_ratio, not both (set the other to null)")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"optim.max_grad_norm must be > 0 or null, got {self.max_grad_norm}")


@dataclass
class TrainConfig:
    """The run: where it writes, how it checkpoints and logs, on what hardware."""

    output_dir: str = "runs/sim4seg"
    """Checkpoints, logs, the resolved config and the final model go here."""
    seed: int = 0
    """Seed of model initialisation, data order and dropout."""
    precision: str = "no"
    """``no`` (fp32; ``false`` and ``fp32`` mean the same) or ``bf16`` (autocast)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (the model's ``gradient_checkpointing_enable``)."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every N optimizer steps (0: only at the end of each epoch)."""
    keep_last: int = 2
    """Resumable checkpoints kept (older ones are deleted)."""
    log_every: int = 10
    """Write a JSONL / TensorBoard log row every N optimizer steps."""
    validate: bool = True
    """Validate at the end of each epoch."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (the schedule is laid out for the shorter run)."""
    deepspeed: str | None = None
    """DeepSpeed JSON config (e.g. ``configs/deepspeed/zero2.json``); needs the ``deepspeed`` package."""
    progress: bool = True
    """Show a tqdm progress bar on the main process."""

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("train.output_dir must be set")
        if self.precision in ("false", "fp32"):  # `precision: false` / `--set train.precision=no`
            self.precision = "no"
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("keep_last", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"train.max_steps must be >= 1 or null, got {self.max_steps}")


@dataclass
class Config:
    """A training recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model, its own config and what trains."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and validation data."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Run settings."""

    def sim4seg_config(self) -> Sim4SegConfig:
        """The model's own config (saved beside its weights)."""
        return self.model.model_config()

    def to_dict(self) -> dict:
        return to_dict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved recipe as YAML (atomically)."""
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML recipe and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    return load_yaml(Config, path, overrides)


def config_from_dict(raw: dict, source: str | os.PathLike | None = None) -> Config:
    """Build and validate a ``Config``; any problem is an ``InputError`` naming the key and ``source``."""
    return from_dict(Config, raw, source)
