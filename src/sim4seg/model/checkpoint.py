"""Checkpoints: our directory format, LoRA merge, official SAM and SAM 2 conversion.

LISA checkpoints are converted by ``sim4seg.model.lisa``.

A Sim4Seg checkpoint directory::

    sim4seg_config.json        Sim4SegConfig (model_type "sim4seg")
    model.safetensors          every weight (LoRA included, shared tensors stored once)
    lvlm/config.json           the LVLM's transformers config
    sam/config.json            the segmenter's config
    sam/preprocessor_config.json   the segmenter's own preprocessing (``SegmenterFrame``: size, mean/std, resample)
    processor/                 tokenizer (with [SEG]) + image processor + chat template
    adapter/                   the LoRA weights alone (adapter_model.safetensors + adapter_config.json)
    training.json              (from ``sim4seg train``) when, on which subsets / label sets and data, final metrics
    config.yaml                (from ``sim4seg train``) the resolved training recipe
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from sim4seg._atomic import write_json
from sim4seg.data.transforms import SegmenterFrame
from sim4seg.errors import InputError
from sim4seg.model import keymaps
from sim4seg.model.backbones import lvlm_adapter, segmenter_adapter
from sim4seg.model.compose import apply_trainable
from sim4seg.model.config import CONFIG_FILE, Sim4SegConfig
from sim4seg.model.sim4seg import Sim4SegModel
from sim4seg.model.weights import WEIGHTS, read_state_dict, save_tensors

log = logging.getLogger(__name__)


def save(model, processor, directory: str | os.PathLike) -> Path:
    """Write ``model`` and ``processor`` as a checkpoint directory; return it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.config.save(d)
    model.lvlm.config.save_pretrained(d / "lvlm")
    model.sam.config.save_pretrained(d / "sam")
    write_json(d / "sam" / SAM_PREPROCESSOR, model.sam_frame.to_processor_config())
    processor.save_pretrained(d / "processor")
    sd, aliases, seen = {}, {}, {}
    for k, v in model.state_dict().items():
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if ptr in seen and v.numel():
            aliases[k] = seen[ptr]
        else:
            seen[ptr], sd[k] = k, v
    save_tensors(sd, d / WEIGHTS, {"aliases": json.dumps(aliases), "format": "sim4seg"})
    lora = {k: v for k, v in sd.items() if "lora_" in k}
    if lora:
        t = model.config.trainable
        save_tensors(lora, d / "adapter" / "adapter_model.safetensors")
        write_json(
            d / "adapter" / "adapter_config.json",
            {
                "peft_type": "LORA",
                "r": t.lora_r,
                "lora_alpha": t.lora_alpha,
                "lora_dropout": t.lora_dropout,
                "target_modules": t.lora_targets,
            },
        )
    return d


SAM_PREPROCESSOR = "preprocessor_config.json"


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; InputError naming the file when it is missing or not JSON."""
    if not path.is_file():
        raise InputError(f"{what} is missing ({path.name} not found)", path.parent)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{what}: invalid JSON ({e.msg})", path, e.lineno) from None
    if not isinstance(d, dict):
        raise InputError(f"{what}: not a JSON object", path)
    return d


def read_frame(directory: Path) -> SegmenterFrame:
    """The segmenter's preprocessing from ``directory/preprocessor_config.json`` (required: never assumed)."""
    path = Path(directory) / SAM_PREPROCESSOR
    return SegmenterFrame.from_processor_config(read_json(path, "the segmenter's processor config"), path)


def _empty_model(directory: Path, config: Sim4SegConfig, processor):
    from transformers import AutoConfig

    lvlm_path, sam_path = directory / "lvlm", directory / "sam"
    la = lvlm_adapter(_lvlm_type(directory), lvlm_path)
    sa = segmenter_adapter(read_json(sam_path / "config.json", "the segmenter config").get("model_type"), sam_path)
    lvlm = la.from_config(AutoConfig.from_pretrained(lvlm_path))
    sam = sa.from_config(sa.config_from_pretrained(sam_path))
    la.check(lvlm, lvlm_path)
    la.check_processor(lvlm, processor, directory / "processor")
    frame = read_frame(sam_path)
    sa.check_frame(sam, frame, sam_path / SAM_PREPROCESSOR)
    seg_id = processor.tokenizer.convert_tokens_to_ids(config.seg_token)
    return Sim4SegModel(
        lvlm, sam, config, seg_token_id=seg_id, sam_frame=frame, image_tokens=la.image_tokens(lvlm, processor)
    )


def _lvlm_type(directory: Path) -> str | None:
    return read_json(directory / "lvlm" / "config.json", "the LVLM config").get("model_type")


def load_processor(directory: str | os.PathLike):
    """A checkpoint's ``processor/``, loaded the way its LVLM's adapter loads processors (InputError naming it)."""
    d = Path(directory)
    if not (d / "processor").is_dir():
        raise InputError("the LVLM's processor is missing (processor/ not found)", d)
    la = lvlm_adapter(_lvlm_type(d), d / "lvlm")
    try:
        return la.load_processor(d / "processor")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"cannot load the LVLM's processor ({type(e).__name__}: {e})", d / "processor") from None


def load(
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trainable: bool = False,
):
    """A checkpoint directory → ``(model, processor)``; eval mode unless ``trainable``."""
    from sim4seg._device import check_device

    device = check_device(device)
    d = Path(directory)
    if not (d / CONFIG_FILE).is_file():
        raise InputError(f"not a Sim4Seg checkpoint directory ({CONFIG_FILE} missing)", d)
    config = Sim4SegConfig.load(d)
    processor = load_processor(d)
    model = _empty_model(d, config, processor)
    sd = read_state_dict(d / WEIGHTS)
    from safetensors import safe_open

    with safe_open(d / WEIGHTS, "pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for k, src in aliases.items():
        sd[k] = sd[src]
    config.trainable.lora = any("lora_" in k for k in sd)  # the structure the weights have
    apply_trainable(model, config.trainable)  # injects the LoRA structure the weights expect
    problems = keymaps.check_against(sd, model.state_dict(), [])
    if problems:
        raise InputError("weights do not fit the model: " + "; ".join(problems[:20]), d / WEIGHTS)
    model.load_state_dict(sd, strict=True)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    return model.to(device=device, dtype=dtype), processor


def load_for_finetuning(
    directory: str | os.PathLike,
    config: Sim4SegConfig,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """A Sim4Seg checkpoint (ours, or one converted from LISA) as the start of a **new** run → ``(model, processor)``.

    The weights are the checkpoint's, with its LoRA folded into the base weights (the same function);
    everything else comes from ``config`` (the recipe's): RVLS2M, losses, ``max_length`` and what
    trains — a fresh LoRA is injected when ``config.trainable.lora``. The architecture is the
    checkpoint's. Optimizer and schedule are the new run's own (nothing of the old run is read).
    """
    model, processor = load(directory, dtype=dtype, device=device, trainable=True)
    if config.seg_token != model.config.seg_token:
        raise InputError(
            f"the recipe's seg_token {config.seg_token!r} differs from the checkpoint's {model.config.seg_token!r}",
            Path(directory) / CONFIG_FILE,
        )
    n = merge_lora(model)
    if n:
        log.info("init_from %s: folded %d LoRA layer(s) into the base weights", directory, n)
    config.token_grid = config.token_grid or model.config.token_grid
    model.config = config
    apply_trainable(model, config.trainable)
    return model, processor


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


def convert_sam2_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    variant: str | None = None,
    image_size: int | None = None,
) -> Path:
    """Official SAM 2 / 2.1 ``.pt`` (facebookresearch/sam2, MedSAM2) → a HF ``Sam2Model`` directory with its
    ``preprocessor_config.json`` (SAM2's square frame at the model's input size).

    The architecture comes from ``base`` (a Sam2 config: hub id or path) or from a published ``variant``
    (``backbones/sam2.py`` ``VARIANTS``) at ``image_size`` px (default 1024; MedSAM2: ``sam2.1-hiera-tiny`` at
    512). The video-memory weights are dropped (``Sam2Model`` segments one image); any other key that does not
    fit is refused with its name.
    """
    from transformers import Sam2Config, Sam2Model

    from sim4seg.model.backbones import sam2

    if (base is None) == (variant is None):
        raise InputError("give exactly one of --base (a Sam2 config) or --variant (a published SAM 2.1 size)")
    if base is not None and image_size is not None:  # Hiera's weights fit any input size: it would pass unseen
        raise InputError("--image-size goes with --variant; with --base the input size is the base config's")
    if variant is not None:
        if variant not in sam2.VARIANTS:
            raise InputError(f"unknown SAM2 variant {variant!r}; known: {', '.join(sam2.VARIANTS)}")
        try:
            config = sam2.config(sam2.VARIANTS[variant], image_size=image_size or 1024)
        except ValueError as e:
            raise InputError(str(e)) from None
    else:
        config = Sam2Config.from_pretrained(base)
    sd, unexpected = keymaps.convert_sam2(keymaps.strip_prefixes(read_state_dict(src)))
    with torch.device("meta"):  # names and shapes first, without allocating a model that may not fit
        problems = keymaps.check_against(sd, Sam2Model(config).state_dict(), unexpected)
    if problems:
        raise InputError("SAM2 weights do not fit: " + "; ".join(problems[:20]), src)
    model = Sam2Model(config)
    model.load_state_dict(sd, strict=True)
    model.save_pretrained(dst)
    side = sam2.Sam2Adapter().image_size(model)
    write_json(Path(dst) / SAM_PREPROCESSOR, SegmenterFrame(size=side, resize="square").to_processor_config())
    return Path(dst)


# ---------------------------------------------------------------------------- the training record

TRAINING_FILE = "training.json"
"""Written by ``sim4seg train`` beside the weights: when and on what the model was trained (``model info``)."""


def read_training(directory: str | os.PathLike) -> dict | None:
    """The checkpoint's training record (``training.json``), or ``None`` for one written without it."""
    path = Path(directory) / TRAINING_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg}", path, e.lineno) from None
    if not isinstance(record, dict) or not isinstance(record.get("subsets", {}), dict):
        raise InputError("a training record is an object with 'subsets' {name: label set}", path)
    return record


def trained_subsets(directory: str | os.PathLike):
    """``{subset: SubsetInfo}`` the checkpoint was trained on (label sets as in its manifest), or ``None`` if unknown."""
    from sim4seg.data.subsets import SubsetInfo

    record = read_training(directory)
    if record is None or not record.get("subsets"):
        return None
    try:
        return {name: SubsetInfo.from_json(name, s) for name, s in record["subsets"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"subsets: {e}", Path(directory) / TRAINING_FILE) from None
