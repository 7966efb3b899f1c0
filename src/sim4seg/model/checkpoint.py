"""Checkpoints: our directory format, LoRA merge, reading foreign weights, official SAM conversion.

LISA checkpoints are converted by ``sim4seg.model.lisa``.

A Sim4Seg checkpoint directory::

    sim4seg_config.json        Sim4SegConfig (model_type "sim4seg")
    model.safetensors          every weight (LoRA included, shared tensors stored once)
    lvlm/config.json           the LVLM's transformers config
    sam/config.json            the SamModel's config
    processor/                 tokenizer (with [SEG]) + image processor + chat template
    adapter/                   the LoRA weights alone (adapter_model.safetensors + adapter_config.json)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from sim4seg._atomic import atomic_open, write_json
from sim4seg.errors import InputError
from sim4seg.model import keymaps
from sim4seg.model.config import CONFIG_FILE, Sim4SegConfig

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
LLAVA_TYPES = ("llava", "llava_next", "vipllava")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
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
    except Exception as e:   # network, auth, offline cache miss: name the cause, not a traceback
        raise InputError(f"{what}: not a local path, and the hub could not provide it ({type(e).__name__}: {e})",
                         src) from None


def save(model, processor, directory: str | os.PathLike) -> Path:
    """Write ``model`` and ``processor`` as a checkpoint directory; return it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.config.save(d)
    model.lvlm.config.save_pretrained(d / "lvlm")
    model.sam.config.save_pretrained(d / "sam")
    processor.save_pretrained(d / "processor")
    sd, aliases, seen = {}, {}, {}
    for k, v in model.state_dict().items():
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if ptr in seen and v.numel():
            aliases[k] = seen[ptr]
        else:
            seen[ptr], sd[k] = k, v
    _save_tensors(sd, d / WEIGHTS, {"aliases": json.dumps(aliases), "format": "sim4seg"})
    lora = {k: v for k, v in sd.items() if "lora_" in k}
    if lora:
        t = model.config.trainable
        _save_tensors(lora, d / "adapter" / "adapter_model.safetensors")
        write_json(d / "adapter" / "adapter_config.json", {"peft_type": "LORA", "r": t.lora_r, "lora_alpha": t.lora_alpha,
                                                           "lora_dropout": t.lora_dropout, "target_modules": t.lora_targets})
    return d


def _empty_model(directory: Path, config: Sim4SegConfig, processor):
    from transformers import AutoConfig, AutoModelForImageTextToText, SamConfig, SamModel

    from sim4seg.model.sim4seg import Sim4SegModel

    lvlm_cfg = AutoConfig.from_pretrained(directory / "lvlm")
    if lvlm_cfg.model_type not in LLAVA_TYPES:
        raise InputError(f"the LVLM is {lvlm_cfg.model_type!r}, not a LLaVA-family model {LLAVA_TYPES}", directory / "lvlm")
    sam_cfg = SamConfig.from_pretrained(directory / "sam")
    if sam_cfg.model_type != "sam":
        raise InputError(f"the segmenter is {sam_cfg.model_type!r}, not SAM", directory / "sam")
    lvlm = AutoModelForImageTextToText.from_config(lvlm_cfg)
    sam = SamModel(sam_cfg)
    seg_id = processor.tokenizer.convert_tokens_to_ids(config.seg_token)
    return Sim4SegModel(lvlm, sam, config, seg_token_id=seg_id)


def load(directory: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
         trainable: bool = False):
    """A checkpoint directory → ``(model, processor)``; eval mode unless ``trainable``."""
    from transformers import AutoProcessor

    from sim4seg.model.builders import apply_trainable

    d = Path(directory)
    if not (d / CONFIG_FILE).is_file():
        raise InputError(f"not a Sim4Seg checkpoint directory ({CONFIG_FILE} missing)", d)
    config = Sim4SegConfig.load(d)
    processor = AutoProcessor.from_pretrained(d / "processor")
    model = _empty_model(d, config, processor)
    sd = read_state_dict(d / WEIGHTS)
    from safetensors import safe_open

    with safe_open(d / WEIGHTS, "pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for k, src in aliases.items():
        sd[k] = sd[src]
    config.trainable.lora = any("lora_" in k for k in sd)      # the structure the weights have
    apply_trainable(model, config.trainable)        # injects the LoRA structure the weights expect
    problems = keymaps.check_against(sd, model.state_dict(), [])
    if problems:
        raise InputError("weights do not fit the model: " + "; ".join(problems[:20]), d / WEIGHTS)
    model.load_state_dict(sd, strict=True)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    return model.to(device=device, dtype=dtype), processor


def merge_lora(model) -> int:
    """Fold every LoRA layer into its base weight and remove it; return how many were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())
            merged += 1
    model.config.trainable.lora = False
    return merged


def merge(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    model, processor = load(src, trainable=False)
    n = merge_lora(model)
    log.info("merged %d LoRA layers", n)
    return save(model, processor, dst)


# ---------------------------------------------------------------------------- foreign checkpoints


def convert_sam_file(src: str | os.PathLike, dst: str | os.PathLike, *, base: str | os.PathLike) -> Path:
    """Official SAM ``.pth`` → a HF ``SamModel`` directory, with the config of ``base`` (hub id or path)."""
    from transformers import SamConfig, SamModel

    sd, unexpected = keymaps.convert_sam(keymaps.strip_prefixes(read_state_dict(src)))
    model = SamModel(SamConfig.from_pretrained(base))
    problems = keymaps.check_against(sd, model.state_dict(), unexpected)
    if problems:
        raise InputError("SAM weights do not fit: " + "; ".join(problems[:20]), src)
    model.load_state_dict(sd, strict=True)
    model.save_pretrained(dst)
    return Path(dst)
