"""Training recipes: dataclass configs loaded from YAML, with ``--set key.sub=value`` overrides.

A recipe has five sections::

    model:  which model (``tiny`` or a preset of ``sim4seg.model.presets``), what trains, RVLS2M
    data:   the M3DS manifest (or a synthetic one to write first), answer format, subset mixing
    optim:  AdamW and the learning-rate schedule (defaults: the paper's recipe)
    train:  output directory, seed, precision, checkpoints, logs, DeepSpeed
    loss:   Eq. 10's weights

Every section validates itself in ``__post_init__``; ``load_config`` turns any problem (an
unknown key, a value of the wrong type or range) into an ``InputError`` naming the key and
the file. ``Config.save`` writes the resolved recipe (after overrides) beside the checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import yaml

from sim4seg.errors import InputError
from sim4seg.model.config import LossConfig, RVLS2MConfig, Sim4SegConfig, TinySpec, TrainableConfig

PRECISIONS = ("no", "bf16")
SCHEDULES = ("linear", "cosine", "constant")
ANSWER_FORMATS = ("plain", "diagnosis", "cot")
MODEL_DTYPES = ("float32", "bfloat16")
CONFIG_NAME = "config.yaml"


@dataclass
class ModelConfig:
    """Which model to build and what of it trains."""

    preset: str = "tiny"
    """``tiny`` (random, CPU-sized) or a named preset of ``sim4seg.model.presets.PRESETS`` (e.g. ``lisa-7b``)."""
    lvlm: str | None = None
    """Local path (or hub id) replacing the preset's LVLM / LISA checkpoint."""
    sam: str | None = None
    """Local path (or hub id) replacing the preset's SAM."""
    dtype: str = "float32"
    """Dtype the weights are loaded in: ``float32`` or ``bfloat16``."""
    seg_token: str = "[SEG]"
    """The segmentation token added to the tokenizer."""
    max_length: int | None = None
    """Longest tokenized prompt + answer; unset: the LVLM's image tokens + ``text_budget``."""
    text_budget: int = 640
    """Tokens beside the image's when ``max_length`` is derived (template, query, answer)."""
    tiny: TinySpec = field(default_factory=TinySpec)
    """Sizes used when ``preset`` is ``tiny``."""
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    """What trains (LoRA r/α/dropout/targets, ``lm_head``, mask decoder, ϕ, ...)."""
    rvls2m: RVLS2MConfig = field(default_factory=RVLS2MConfig)
    """RVLS2M on/off for training and inference, τ strategy, grid, k."""

    def __post_init__(self) -> None:
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

    def __post_init__(self) -> None:
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"data.answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}")
        if self.mix is not None and (any(r < 0 for r in self.mix.values()) or not any(r > 0 for r in self.mix.values())):
            raise ValueError(f"data.mix rates must be >= 0 with at least one > 0, got {self.mix}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ValueError(f"data.samples_per_epoch must be >= 1, got {self.samples_per_epoch}")
        if self.max_val_samples is not None and self.max_val_samples < 1:
            raise ValueError(f"data.max_val_samples must be >= 1, got {self.max_val_samples}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
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
    """``no`` (fp32) or ``bf16`` (autocast; needs a GPU)."""
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
    """The model and what trains."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and validation data."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Run settings."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Eq. 10's weights λ_txt, λ_mask, λ_bce, λ_dice."""

    def sim4seg_config(self) -> Sim4SegConfig:
        """The model's own config (saved beside its weights)."""
        m = self.model
        return Sim4SegConfig(seg_token=m.seg_token, max_length=m.max_length, text_budget=m.text_budget, rvls2m=dataclasses.replace(m.rvls2m),
                             loss=dataclasses.replace(self.loss), trainable=dataclasses.replace(m.trainable))

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved recipe as YAML (atomically)."""
        from sim4seg._atomic import write_text

        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


# ---------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML recipe and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(e, 'problem', None) or e}", path,
                         None if mark is None else mark.line + 1) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"a recipe is a mapping of sections, got {type(raw).__name__}", path)
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw, source=path)


def config_from_dict(raw: dict, source: str | os.PathLike | None = None) -> Config:
    """Build and validate a ``Config``; any problem is an ``InputError`` naming the key and ``source``."""
    try:
        return _build(Config, raw, "")
    except InputError as e:
        raise InputError(e.problem, source) from None
    except (TypeError, ValueError) as e:
        raise InputError(str(e), source) from None


def apply_override(raw: dict, item: str) -> None:
    """Set ``raw[a][b] = value`` for ``item`` = ``"a.b=value"``; the key path must exist in the schema."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--set expects key.sub=value, got {item!r}")
    parts = key.split(".")
    cls: Any = Config
    for i, part in enumerate(parts):
        if cls is None:  # inside a free-form mapping (data.mix): any key
            break
        hints = _hints(cls)
        if part not in hints:
            where = ".".join(parts[:i]) or "the recipe"
            raise InputError(f"--set {key}: unknown key {part!r} in {where}; known: {', '.join(hints)}")
        tp = _strip_optional(hints[part])
        cls = tp if dataclasses.is_dataclass(tp) else None
        if cls is None and i < len(parts) - 1 and typing.get_origin(tp) is not dict:
            raise InputError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _hints(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _strip_optional(tp):
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _build(cls, raw: Any, prefix: str):
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise InputError(f"{prefix or 'the recipe'} must be a mapping, got {raw!r}")
    hints = _hints(cls)
    unknown = [k for k in raw if k not in hints]
    if unknown:
        where = prefix or "the recipe"
        raise InputError(f"unknown key {_join(prefix, str(unknown[0]))!r} in {where}; known: {', '.join(hints)}")
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError) as e:
        msg = str(e)
        if prefix and not msg.startswith((prefix, prefix.rsplit(".", 1)[-1] + ".")):
            msg = f"{prefix}: {msg}"
        raise InputError(msg) from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except InputError as e:
                errors.append(e)
        raise errors[-1] if errors else InputError(f"{key}: unexpected value {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InputError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise InputError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise InputError(f"{key} must be a string, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputError(f"{key} must have {len(args)} entries, got {list(value)!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{key} must be a mapping, got {value!r}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    return value


def _plain(obj: Any) -> Any:
    """Tuples → lists, recursively (for YAML)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
