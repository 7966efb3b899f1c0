"""Resumable training checkpoints: written atomically, found, loaded, rotated; the final export.

A checkpoint directory ``checkpoint-000120`` holds what ``accelerate``'s ``save_state`` writes
(optimizer, RNG states of every process, the accumulation counter; under DeepSpeed its own
sharded checkpoint) — with the model reduced to its *trainable* weights and persistent
buffers (``model.safetensors``): frozen weights come back from the model builder, so a
7B-parameter LVLM is not rewritten every few hundred steps. Beside them are
``trainer_state.json`` (step, epoch, data position, scheduler, validations) and the recipe.
Everything is written into ``.checkpoint-000120.tmp`` and renamed when complete, so a run
killed while saving leaves the previous checkpoint intact. Nothing is unpickled on load:
weights are safetensors and the rest goes through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import zipfile
from collections import OrderedDict
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

from sim4seg.errors import InputError
from sim4seg.model.keymaps import strip_wrapper
from sim4seg.model.weights import WEIGHTS
from sim4seg.train.recipe import CONFIG_NAME, Config
from sim4seg.train.state import TrainState

log = logging.getLogger(__name__)

STATE_NAME = "trainer_state.json"
_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def saved_keys(model: nn.Module) -> set[str]:
    """State-dict keys a checkpoint keeps: trainable parameters and buffers (not frozen weights)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    keep, seen = set(), set()
    for k, v in model.state_dict(keep_vars=True).items():
        if k in params and not params[k].requires_grad:
            continue
        alias = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if alias not in seen:  # tied / shared tensors are saved once (safetensors refuses aliases)
            seen.add(alias)
            keep.add(k)
    return keep


def trainable_state_dict(model: nn.Module, state_dict: dict | None = None) -> OrderedDict:
    keep = saved_keys(model)
    sd = model.state_dict() if state_dict is None else state_dict
    return OrderedDict((k, v) for k, v in ((strip_wrapper(k), v) for k, v in sd.items()) if k in keep)


def load_trainable(model: nn.Module, path: Path, device: str | torch.device = "cpu") -> None:
    """Load ``trainable_state_dict`` weights; every trainable key must be present, nothing unknown."""
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path), device=str(device))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read weights: {e}", path) from None
    missing = sorted(saved_keys(model) - set(sd))
    unexpected = sorted(set(sd) - set(model.state_dict()))
    if missing or unexpected:
        raise InputError(
            f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]} "
            "(was it written for another recipe?)",
            path,
        )
    model.load_state_dict(sd, strict=False)


def register_hooks(accelerator) -> None:
    """Make ``save_state`` / ``load_state`` keep only the trainable weights of each model.

    Not under DeepSpeed: its engine writes and reads its own (ZeRO-sharded) model and optimizer
    states, which ``accelerate`` hands to it; the hooks would have nothing to filter.
    """
    if is_deepspeed(accelerator):
        return

    def save_hook(models, weights, output_dir):
        for i, model in enumerate(models[: len(weights)]):
            weights[i] = trainable_state_dict(accelerator.unwrap_model(model), weights[i])

    def load_hook(models, input_dir):
        for i, model in enumerate(models):
            name = WEIGHTS if i == 0 else f"model_{i}.safetensors"
            load_trainable(accelerator.unwrap_model(model), Path(input_dir) / name, accelerator.device)
        models.clear()  # loaded here: accelerate must not load them again

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def is_deepspeed(accelerator) -> bool:
    return str(accelerator.distributed_type).endswith("DEEPSPEED")


def zero_stage(accelerator) -> int:
    """The DeepSpeed ZeRO stage of the run (0 without DeepSpeed)."""
    if not is_deepspeed(accelerator):
        return 0
    return int(accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


# ---------------------------------------------------------------------------- finding


def step_of(path: Path) -> int:
    m = _PATTERN.match(Path(path).name)
    return int(m.group(1)) if m else -1


def find(out: Path, resume: str) -> Path | None:
    """``resume="auto"``: the latest complete checkpoint in ``out`` (or ``None``); else the checkpoint at that path."""
    if resume == "auto":
        done = [p for p in Path(out).glob("checkpoint-*") if _PATTERN.match(p.name) and (p / STATE_NAME).is_file()]
        return max(done, key=step_of) if done else None
    path = Path(resume)
    if not path.is_dir():
        raise InputError("checkpoint directory not found (--resume)", path)
    if not (path / STATE_NAME).is_file():
        raise InputError(f"not a training checkpoint: {STATE_NAME} not found", path)
    return path


# ---------------------------------------------------------------------------- save / load


def save(accelerator, out: Path, state: TrainState, config: Config, *, keep_last: int) -> Path:
    """Write ``out/checkpoint-{step}`` atomically (all processes call this); rotate old ones."""
    name = f"checkpoint-{state.global_step:06d}"
    final, tmp = out / name, out / f".{name}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    tmp.mkdir(parents=True, exist_ok=True)
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_NAME).write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
        config.save(tmp / CONFIG_NAME)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(out)
        done = sorted((p for p in out.glob("checkpoint-*") if _PATTERN.match(p.name)), key=step_of)
        for old in done[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(accelerator, path: Path, current: TrainState) -> TrainState:
    """Restore weights, optimizer and RNG from ``path``; return its state (checked against ``current``)."""

    try:
        d = json.loads((path / STATE_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg}", path / STATE_NAME, e.lineno) from None
    known = {f.name for f in fields(TrainState)}
    saved = TrainState(**{k: v for k, v in d.items() if k in known})
    for key, what in (
        ("world_size", "processes"),
        ("batch_size", "optim.batch_size"),
        ("grad_accum", "optim.grad_accum"),
        ("steps_per_epoch", "optimizer steps per epoch"),
    ):
        if getattr(saved, key) != getattr(current, key):
            raise InputError(
                f"cannot resume exactly: the checkpoint was written with {what} = {getattr(saved, key)}, "
                f"this run has {getattr(current, key)}; start a new output_dir or restore the setting",
                path,
            )
    try:
        accelerator.load_state(str(path))
    except InputError:
        raise
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        zipfile.BadZipFile,
    ) as e:
        bad = _unreadable_state_file(path)
        raise InputError(
            "refused to load this training state: it is truncated, corrupt or holds something other "
            f"than tensors and plain values (nothing is unpickled; {type(e).__name__}). Resume from "
            "another checkpoint or start a new output_dir",
            bad or path,
        ) from None
    saved.total_steps = current.total_steps
    return saved


def _unreadable_state_file(path: Path) -> Path | None:
    """The first state file in ``path`` that ``torch.load(weights_only=True)`` refuses (or ``None``)."""
    from accelerate.utils.other import load as accelerate_load

    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in (".bin", ".pt", ".pth", ".pkl"):
            try:
                accelerate_load(f, map_location="cpu")
            except Exception:  # noqa: BLE001 - any failure names the file
                return f
    return None


def truncate_log(path: Path, step: int) -> None:
    """Drop the log rows a killed run wrote after the checkpoint it resumes from (``step < 0``: keep all)."""
    if step < 0 or not path.is_file():
        return
    from sim4seg._atomic import write_text

    keep = [
        line
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    write_text(path, "".join(keep))


# ---------------------------------------------------------------------------- export


def export(
    accelerator, model: nn.Module, directory: Path, config: Config, save_model=None, record: dict | None = None
) -> None:
    """Write the trained model to ``directory`` (atomically): ``save_model(model, dir)`` if given, else the
    trainable weights (``model.safetensors``); the recipe beside it, and ``record`` as ``training.json``.

    Under ZeRO-3 each process holds a shard of every parameter: they are gathered (a collective, all
    processes take part) for the time of the export, so the files are the same as without DeepSpeed.
    """
    inner = accelerator.unwrap_model(model)
    if zero_stage(accelerator) == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(inner.parameters()), modifier_rank=None):
            if accelerator.is_main_process:
                _export(inner, inner.state_dict(), directory, config, save_model, record)
        accelerator.wait_for_everyone()
        return
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        _export(inner, state_dict, directory, config, save_model, record)


def _export(
    inner: nn.Module, state_dict: dict, directory: Path, config: Config, save_model, record: dict | None
) -> None:
    tmp = directory.parent / f".{directory.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if save_model is not None:
        save_model(inner, tmp)
    else:
        from safetensors.torch import save_file

        sd = {k: v.detach().to("cpu").contiguous() for k, v in trainable_state_dict(inner, state_dict).items()}
        save_file(sd, str(tmp / WEIGHTS), metadata={"format": "pt"})
    config.save(tmp / CONFIG_NAME)
    if record is not None:
        from sim4seg._atomic import write_json
        from sim4seg.model.checkpoint import TRAINING_FILE

        write_json(tmp / TRAINING_FILE, record)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    log.info("wrote the trained model to %s", directory)
