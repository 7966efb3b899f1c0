"""Weight files: reading state dicts (safetensors, or ``torch.load(weights_only=True)``), shard
indexes, hub ids resolved into the local cache, and atomic safetensors writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from sim4seg._atomic import atomic_open
from sim4seg.errors import InputError

WEIGHTS = "model.safetensors"
"""The weights file of a Sim4Seg checkpoint directory and of a training checkpoint."""


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    with atomic_open(path, "wb") as f:
        f.write(data)


WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_GLOBS = ("model*.safetensors", "pytorch_model*.bin", "*.safetensors", "*.bin", "*.pth")


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory: the shards its index lists, else the first glob that matches.

    Named globs come first so that e.g. ``training_args.bin`` beside ``pytorch_model.bin`` is not read.
    """
    for name in WEIGHT_INDEXES:
        index = directory / name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as e:
                raise InputError(f"not a weight index ({type(e).__name__}: {e})", index) from None
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing:
                raise InputError(f"shards listed in {name} are missing: {', '.join(missing)}", directory)
            return [directory / s for s in shards]
    for pattern in WEIGHT_GLOBS:
        files = sorted(directory.glob(pattern))
        if files:
            return files
    raise InputError("no *.safetensors, *.bin or *.pth weights found", directory)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """safetensors, or ``.pth`` / ``.bin`` through ``torch.load(weights_only=True)``; a directory: all shards."""
    path = Path(path)
    if path.is_dir():
        out: dict[str, torch.Tensor] = {}
        for f in weight_files(path):
            out.update(read_state_dict(f))
        return out
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or pickled objects beyond plain tensors
        raise InputError(f"cannot read weights ({type(e).__name__}: {e})", path) from None
    sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError("not a state dict of tensors", path)
    return sd


def resolve_source(src: str | os.PathLike, patterns: list[str], *, what: str) -> Path:
    """A local path as is; otherwise a Hugging Face hub id, fetched (only ``patterns``) into the HF cache.

    Honours ``HF_HUB_OFFLINE`` / ``HF_HUB_CACHE``: offline, a repo already in the cache resolves without network.
    """
    path = Path(src)
    if path.exists():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(str(src), allow_patterns=patterns))
    except HFValidationError:
        raise InputError(f"{what}: no such file or directory, and not a hub id", src) from None
    except Exception as e:  # network, auth, offline cache miss: name the cause, not a traceback
        raise InputError(
            f"{what}: not a local path, and the hub could not provide it ({type(e).__name__}: {e})", src
        ) from None
