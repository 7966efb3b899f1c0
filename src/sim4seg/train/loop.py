"""The training loop (paper §3.2, §4.1) on ``accelerate``: one process, DDP, or DeepSpeed ZeRO.

The model *is* the task (open_clip style): any ``nn.Module`` whose ``forward(batch)`` (or
``forward(**batch)``) returns the losses — a mapping or an output object with a ``loss`` and,
optionally, other ``loss*`` terms that are logged. ``train(config)`` builds Sim4Seg and the M3DS
datasets from the recipe; tests pass a toy task and toy datasets instead.

A run writes to ``train.output_dir``::

    config.yaml               the resolved recipe
    log.jsonl                 one row per logging step (step, epoch, lr, loss terms, samples/s) and per validation
    tb/                       the same as TensorBoard scalars
    learning_curve.png        the loss terms against the step, drawn at the end of the run (a resumed run: all of it)
    checkpoint-000120/        resumable: trainable weights, optimizer, RNG (accelerate), trainer_state.json
    final/                    the trained model (``model.safetensors`` of the trainable weights + configs)

Exact resume: a checkpoint holds the trainable weights, the optimizer, the scheduler, every
process's RNG states and the data position (epoch, micro-batches consumed). Data order is a
pure function of ``(seed, epoch)`` and the loaders draw from their own generators, so a killed
run resumed from its last checkpoint reaches the same weights, bit for bit, as one never
killed. Datasets must be deterministic per index (augmentations seeded by index and epoch).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sim4seg.errors import InputError
from sim4seg.train import checkpoints as ckpt
from sim4seg.train import task
from sim4seg.train.logs import LOG_NAME, RunLogger, Window
from sim4seg.train.recipe import CONFIG_NAME, Config
from sim4seg.train.state import TrainData, TrainState

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    state: TrainState
    last_logs: dict


@dataclass
class ValidationContext:
    """What a validator gets: the prepared model and validation loader, and where the run is."""

    model: nn.Module
    dataloader: Any
    accelerator: Any
    epoch: int
    step: int


Validator = Callable[[ValidationContext], dict]


class Callback:
    """Hooks called on every process; override what you need."""

    def on_step_end(self, state: TrainState, logs: dict) -> None:
        """After each optimizer step (``logs`` holds the window's mean losses on logging steps, else ``{}``)."""

    def on_validation(self, state: TrainState, metrics: dict) -> None:
        """After each validation."""

    def on_checkpoint(self, state: TrainState, path: Path) -> None:
        """After a checkpoint is complete on disk."""


class EpochShuffle(torch.utils.data.Sampler[int]):
    """Each index once per epoch, in an order fixed by ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


# ---------------------------------------------------------------------------- the task contract


def forward_task(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """Run the task on a batch; return its scalar loss terms (``loss`` first)."""
    inner = getattr(model, "module", model)
    out = model(**batch) if isinstance(batch, Mapping) and _takes_kwargs(inner) else model(batch)
    if isinstance(out, Mapping):
        items = out.items()
    else:
        items = ((k, getattr(out, k)) for k in dir(out) if k.startswith("loss") and not k.startswith("_"))
    terms = {k: v for k, v in items if k.startswith("loss") and isinstance(v, torch.Tensor) and v.numel() == 1}
    if "loss" not in terms:
        raise InputError(
            f"{type(inner).__name__}.forward must return a 'loss' (got {sorted(terms) or type(out).__name__})"
        )
    return {"loss": terms.pop("loss"), **dict(sorted(terms.items()))}


def _takes_kwargs(module: nn.Module) -> bool:
    """``forward(**batch)`` when forward needs more than one argument (e.g. ``Sim4SegModel``), else ``forward(batch)``."""
    import inspect

    params = [
        p
        for p in inspect.signature(module.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return sum(p.default is inspect.Parameter.empty for p in params) > 1


def batch_size_of(batch: Any) -> int:
    """The leading dimension of the batch's first tensor (1 if it holds none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        if isinstance(v, torch.Tensor) and v.ndim:
            return int(v.shape[0])
    for v in values:
        if isinstance(v, (list, tuple)):
            return len(v)
    return 1


def validation_loss(ctx: ValidationContext) -> dict:
    """Default validator: the mean of each loss term over the validation set (all processes)."""
    sums: dict[str, float] = {}
    n = 0
    ctx.model.eval()
    with torch.no_grad():
        for batch in ctx.dataloader:
            terms = forward_task(ctx.model, batch)
            bs = batch_size_of(batch)
            # one row per example, so gather_for_metrics can drop the padding of the last batch
            rows = torch.stack([t.detach().float().reshape(()) for t in terms.values()]).expand(bs, -1).contiguous()
            rows = ctx.accelerator.gather_for_metrics(rows)
            for k, col in zip(terms, rows.sum(0).tolist()):
                sums[k] = sums.get(k, 0.0) + col
            n += int(rows.shape[0])
    ctx.model.train()
    return {k: v / max(n, 1) for k, v in sums.items()} | {"n": n}


# ---------------------------------------------------------------------------- optimizer and schedule


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters: weight matrices decayed, biases and norm scales (ndim < 2) not."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise InputError("the model has no trainable parameters (check model.trainable in the recipe)")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, *, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """The learning-rate multiplier for optimizer step ``step`` (0-based): linear warm-up, then decay."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - (1.0 - min_ratio) * progress


def warmup_steps(config: Config, total: int) -> int:
    o = config.optim
    if o.warmup_ratio is not None:
        return int(round(o.warmup_ratio * total))
    return min(o.warmup_steps or 0, max(total - 1, 0))


# ---------------------------------------------------------------------------- setup


def make_accelerator(config: Config):
    """An ``Accelerator`` for the recipe: precision, accumulation, DeepSpeed (checked clearly)."""
    from accelerate import Accelerator, DataLoaderConfiguration

    t, o = config.train, config.optim
    if t.precision == "bf16" and not torch.cuda.is_available():
        raise InputError("train.precision=bf16 needs a GPU and none is available; use --set train.precision=no")
    kwargs: dict[str, Any] = {}
    if t.deepspeed:
        import importlib.util

        path = Path(t.deepspeed)
        if not path.is_file():
            raise InputError("DeepSpeed config not found (train.deepspeed)", path)
        if importlib.util.find_spec("deepspeed") is None:
            raise InputError(
                "train.deepspeed is set but the deepspeed package is not installed "
                "(DS_BUILD_OPS=0 pip install -c constraints.txt -e '.[deepspeed]')",
                path,
            )
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON: {e.msg}", path, e.lineno) from None
        if not torch.cuda.is_available() and int(os.environ.get("LOCAL_RANK", -1)) < 0:
            raise InputError(
                "DeepSpeed without a GPU runs under a launcher: accelerate launch --config_file "
                "configs/accelerate/deepspeed-cpu-2proc.yaml -m sim4seg train ... (or torchrun)",
                path,
            )
        from accelerate.utils import DeepSpeedPlugin

        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(
            hf_ds_config=str(path), gradient_accumulation_steps=o.grad_accum, gradient_clipping=o.max_grad_norm
        )
        init_deepspeed_on_cpu()
    # cpu=True on a machine without CUDA: several processes there run DDP over gloo (accelerate turns
    # DeepSpeed off with cpu=True, so a DeepSpeed run keeps cpu=False and uses the group started above)
    if t.deepspeed and not torch.cuda.is_available():
        from accelerate.utils import InitProcessGroupKwargs

        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    return Accelerator(
        cpu=not (torch.cuda.is_available() or t.deepspeed),
        gradient_accumulation_steps=o.grad_accum,
        mixed_precision=t.precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=False, even_batches=True),
        **kwargs,
    )


def init_deepspeed_on_cpu() -> None:
    """Without CUDA, start DeepSpeed's process group over gloo (accelerate would ask for a GPU backend).

    Launched by ``torchrun`` / ``accelerate launch`` (``LOCAL_RANK`` set); a single process needs none.
    """
    if torch.cuda.is_available() or int(os.environ.get("LOCAL_RANK", -1)) < 0:
        return
    import importlib

    import deepspeed

    ds_torch = importlib.import_module("deepspeed.comm.torch")  # (the attribute deepspeed.comm.torch is torch)

    if not deepspeed.comm.is_initialized():
        # DeepSpeed's CPU backend would JIT-compile (C++, minutes) a shared-memory kernel used only by
        # inference all-reduces; training's collectives go through gloo, so skip building it
        ds_torch.build_shm_op = lambda: None
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)


@contextlib.contextmanager
def _built_whole(accelerator):
    """Build the model whole, outside ``deepspeed.zero.Init``, even under ZeRO-3.

    accelerate registers the ZeRO-3 config with transformers, which then creates every model partitioned
    at construction; the builders edit the model afterwards (token embeddings resized, LoRA, weights
    loaded), which a partitioned model refuses. Each process holds one full copy until
    ``accelerator.prepare`` partitions it (host memory: one model per process).
    """
    if ckpt.zero_stage(accelerator) != 3:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        accelerator.state.deepspeed_plugin.set_deepspeed_weakref()


def enable_gradient_checkpointing(model: nn.Module) -> bool:
    """Call the model's ``gradient_checkpointing_enable`` (or that of its outermost submodules that have one)."""
    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
        return True
    done: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(d + ".") for d in done) or not getattr(m, "supports_gradient_checkpointing", False):
            continue
        # transformers: activation_checkpointing_enable (v5), gradient_checkpointing_enable (older)
        enable = getattr(m, "activation_checkpointing_enable", None) or getattr(
            m, "gradient_checkpointing_enable", None
        )
        if enable is None:
            continue
        try:
            enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        except TypeError:
            enable()
        done.append(name)
    return bool(done)


def _loader(dataset, config: Config, collate_fn, sampler, seed: int):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.optim.batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=config.data.num_workers,
        persistent_workers=config.data.num_workers > 0,  # workers keep their data.cache_mb cache across epochs
        drop_last=False,
        generator=torch.Generator().manual_seed(seed),
    )


# ---------------------------------------------------------------------------- the loop


def _learning_curve(out: Path) -> None:
    """``learning_curve.png`` from ``log.jsonl`` (the whole run, a resumed one included); skipped without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("matplotlib is not installed: no learning_curve.png")
        return
    from sim4seg.eval.figures import learning_curve

    learning_curve(out / LOG_NAME, out / "learning_curve.png", f"training loss ({out.name})")


def train(
    config: Config,
    *,
    model_factory: Callable[[Config], nn.Module] | None = None,
    datasets: TrainData | None = None,
    validator: Validator | None = None,
    callbacks: Sequence[Callback] = (),
    resume: str | None = None,
) -> TrainResult:
    """Train the task the recipe describes; ``resume`` is ``"auto"`` (latest checkpoint, if any) or a path."""
    from accelerate.utils import set_seed

    t, o = config.train, config.optim
    out = Path(t.output_dir)
    accelerator = make_accelerator(config)
    set_seed(t.seed)
    if model_factory is not None and datasets is None:
        raise InputError("a custom model_factory needs its datasets (train(..., datasets=TrainData(...)))")
    with _built_whole(accelerator):
        if model_factory is None:
            model, datasets, save_model = task.build(config, accelerator, datasets)
        else:
            model, save_model = model_factory(config), None
    if t.gradient_checkpointing and not enable_gradient_checkpointing(model):
        log.warning(
            "train.gradient_checkpointing is on but %s has no gradient_checkpointing_enable", type(model).__name__
        )
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    sampler = datasets.sampler or EpochShuffle(len(datasets.train), t.seed)
    train_dl = _loader(datasets.train, config, datasets.collate_fn, sampler, t.seed)
    val_dl = None
    if datasets.val is not None and len(datasets.val) and t.validate:
        val_dl = _loader(
            datasets.val, config, datasets.collate_fn, EpochShuffle(len(datasets.val), shuffle=False), t.seed
        )
    model, optimizer, train_dl = accelerator.prepare(model, optimizer, train_dl)
    if val_dl is not None:
        val_dl = accelerator.prepare(val_dl)

    steps_per_epoch = math.ceil(len(train_dl) / o.grad_accum)
    total = o.epochs * steps_per_epoch if t.max_steps is None else min(t.max_steps, o.epochs * steps_per_epoch)
    warm = warmup_steps(config, total)
    raw_optimizer = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer inside accelerate's wrapper
    while not isinstance(raw_optimizer, torch.optim.Optimizer) and hasattr(raw_optimizer, "optimizer"):
        raw_optimizer = raw_optimizer.optimizer  # and inside DeepSpeed ZeRO's
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        raw_optimizer, lambda s: lr_factor(s, warmup=warm, total=total, schedule=o.schedule, min_ratio=o.min_lr_ratio)
    )
    state = TrainState(
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        world_size=accelerator.num_processes,
        batch_size=o.batch_size,
        grad_accum=o.grad_accum,
    )
    ckpt.register_hooks(accelerator)

    start = ckpt.find(out, resume) if resume else None
    if resume is None and ckpt.find(out, "auto") is not None:
        raise InputError(
            "output directory already holds checkpoints: continue with --resume auto, or choose another "
            "train.output_dir",
            out,
        )
    if start is not None:
        state = ckpt.load(accelerator, start, state)
        scheduler.load_state_dict(state.scheduler)
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            start,
            state.global_step,
            state.epoch,
            state.batch_in_epoch,
        )
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / CONFIG_NAME)
        ckpt.truncate_log(out / LOG_NAME, state.global_step if start is not None else -1)
    accelerator.wait_for_everyone()
    logger = RunLogger(out, accelerator.is_main_process, state.global_step)
    n_train = sum(p.numel() for p in accelerator.unwrap_model(model).parameters() if p.requires_grad)
    log.info(
        "training %d parameters for %d steps (%d per epoch) on %d process(es)",
        n_train,
        total,
        steps_per_epoch,
        accelerator.num_processes,
    )

    def save() -> None:
        state.scheduler = scheduler.state_dict()
        path = ckpt.save(accelerator, out, state, config, keep_last=t.keep_last)
        for cb in callbacks:
            cb.on_checkpoint(state, path)

    def validate() -> None:
        if val_dl is None:
            return
        ctx = ValidationContext(model, val_dl, accelerator, state.epoch, state.global_step)
        metrics = (validator or validation_loss)(ctx)
        row = {"step": state.global_step, "epoch": state.epoch, **{f"val/{k}": v for k, v in metrics.items()}}
        state.validations.append(row)
        logger.write(row, "val")
        for cb in callbacks:
            cb.on_validation(state, metrics)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=state.global_step,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not (t.progress and accelerator.is_local_main_process),
    )
    window = Window(accelerator)
    last_logs: dict = {}
    validated_at = state.validations[-1]["step"] if state.validations else -1
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    while state.global_step < total and state.epoch < o.epochs:
        sampler.set_epoch(state.epoch)
        loader = accelerator.skip_first_batches(train_dl, state.batch_in_epoch) if state.batch_in_epoch else train_dl
        if hasattr(loader, "set_epoch"):  # accelerate's loaders pass their own epoch count to the sampler
            loader.set_epoch(state.epoch)
        n_batches = len(train_dl)
        for batch in loader:
            with accelerator.accumulate(model):
                terms = forward_task(model, batch)
                accelerator.backward(terms["loss"])
                grad_norm = None
                if accelerator.sync_gradients and o.max_grad_norm is not None:
                    grad_norm = accelerator.clip_grad_norm_(params, o.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batch_in_epoch += 1
            window.add(terms, batch_size_of(batch))
            if not accelerator.sync_gradients:
                continue
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            state.global_step += 1
            state.samples_seen += window.samples_total()
            logs: dict = {}
            if state.global_step % t.log_every == 0 or state.global_step == total:
                logs = {
                    "step": state.global_step,
                    "epoch": state.epoch + state.batch_in_epoch / n_batches,
                    "lr": lr,
                    **window.flush(),
                    "grad_norm": None if grad_norm is None else float(grad_norm),
                }
                logger.write(logs, "train")
                last_logs = logs
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
            bar.update(1)
            for cb in callbacks:
                cb.on_step_end(state, logs)
            end_of_epoch = state.batch_in_epoch >= n_batches
            if state.global_step >= total:
                break
            if t.checkpoint_every and state.global_step % t.checkpoint_every == 0 and not end_of_epoch:
                save()
        if state.batch_in_epoch >= n_batches:  # the epoch is complete
            state.epoch += 1
            state.batch_in_epoch = 0
            validate()
            validated_at = state.global_step
            save()
    bar.close()
    if validated_at != state.global_step:  # a run cut short by max_steps
        validate()
    if not ckpt.find(out, "auto") or ckpt.step_of(ckpt.find(out, "auto")) != state.global_step:
        save()
    final = out / "final"
    ckpt.export(
        accelerator, model, final, config, save_model, record=task.training_record(config, datasets, state, last_logs)
    )
    logger.close()
    if accelerator.is_main_process:
        _learning_curve(out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(out, final, state, last_logs)
