"""What a checkpoint directory holds, read without building the model (``sim4seg model info``).

Backbones from ``lvlm/config.json`` and ``sam/config.json``, parameter counts from the
safetensors header, RVLS2M and what trained from ``sim4seg_config.json``, and — for a model
written by ``sim4seg train`` — the recipe (``config.yaml``) and the training record
(``training.json``: when, on which subsets and label sets, from which data, final metrics).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sim4seg.errors import InputError
from sim4seg.model.checkpoint import TRAINING_FILE, read_training
from sim4seg.model.config import CONFIG_FILE, Sim4SegConfig
from sim4seg.model.weights import WEIGHTS


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg}", path, e.lineno) from None


def _parameters(path: Path) -> dict:
    """``{"total", "lora", "dtypes"}`` from the safetensors header (no tensor is read)."""
    from safetensors import safe_open

    if not path.is_file():
        return {}
    total = lora = 0
    dtypes: set[str] = set()
    try:
        with safe_open(str(path), "pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                n = 1
                for d in sl.get_shape():
                    n *= d
                total += n
                lora += n if "lora_" in k else 0
                dtypes.add(str(sl.get_dtype()))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the weights' header: {e}", path) from None
    return {"total": total, "lora": lora, "dtypes": sorted(dtypes)}


def _lvlm(cfg: dict) -> dict:
    text, vision = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
    return {
        "type": cfg.get("model_type"),
        "name": cfg.get("_name_or_path") or None,
        "text": {
            "type": text.get("model_type"),
            "layers": text.get("num_hidden_layers"),
            "hidden": text.get("hidden_size"),
            "vocab": text.get("vocab_size"),
        },
        "vision": {
            "type": vision.get("model_type"),
            "image_size": vision.get("image_size"),
            "patch": vision.get("patch_size"),
            "layers": vision.get("num_hidden_layers", vision.get("depth")),
            "merge": vision.get("spatial_merge_size"),
        },
    }


def _sam(cfg: dict) -> dict:
    vision = cfg.get("vision_config") or {}
    hiera = vision.get("backbone_config")
    if isinstance(hiera, dict):  # SAM2: a Hiera backbone (four stages) under an FPN neck
        stride = hiera.get("patch_stride") or [None]
        return {
            "type": cfg.get("model_type"),
            "name": cfg.get("_name_or_path") or None,
            "image_size": (cfg.get("prompt_encoder_config") or {}).get("image_size"),
            "patch": stride[0],
            "layers": sum(hiera.get("blocks_per_stage") or []) or None,
            "hidden": (hiera.get("embed_dim_per_stage") or [None])[-1],
        }
    return {
        "type": cfg.get("model_type"),
        "name": cfg.get("_name_or_path") or None,
        "image_size": vision.get("image_size"),
        "patch": vision.get("patch_size"),
        "layers": vision.get("num_hidden_layers"),
        "hidden": vision.get("hidden_size"),
    }


def checkpoint_info(directory: str | os.PathLike) -> dict:
    """Everything ``model info`` shows, as one JSON-able dict."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError("checkpoint directory not found", d)
    if not (d / CONFIG_FILE).is_file():
        raise InputError(
            f"not a Sim4Seg checkpoint directory ({CONFIG_FILE} missing; a training run's model is "
            "in its final/ folder)",
            d,
        )
    config = Sim4SegConfig.load(d)
    recipe = None
    if (d / "config.yaml").is_file():
        import yaml

        try:
            recipe = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise InputError(f"invalid YAML: {e}", d / "config.yaml") from None
    return {
        "path": str(d),
        "lvlm": _lvlm(_json(d / "lvlm" / "config.json")),
        "sam": _sam(_json(d / "sam" / "config.json")),
        "parameters": _parameters(d / WEIGHTS),
        "sim4seg": config.to_json(),
        "recipe": recipe,
        "training": read_training(d),
    }


def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else "?"


def describe(info: dict) -> str:
    """A readable summary of ``checkpoint_info``."""
    lv, sam, p, cfg = info["lvlm"], info["sam"], info["parameters"], info["sim4seg"]
    t, r = cfg["trainable"], cfg["rvls2m"]
    lines = [f"checkpoint {info['path']}"]
    if p:
        lines.append(
            f"  weights: {_n(p['total'])} parameters ({_n(p['lora'])} in LoRA adapters), {', '.join(p['dtypes'])}"
        )
    lines.append(
        f"  LVLM: {lv['type']}"
        + (f" ({lv['name']})" if lv["name"] else "")
        + f" — text {lv['text']['type']}, {lv['text']['layers']} layers, hidden {lv['text']['hidden']}, "
        f"vocabulary {lv['text']['vocab']}; vision {lv['vision']['type']}, "
        + (
            f"{lv['vision']['image_size']} px"
            if lv["vision"]["image_size"] is not None or lv["vision"].get("merge") is None
            else f"dynamic resolution ({lv['vision']['merge']}x{lv['vision']['merge']} merge)"
        )
        + f", patch {lv['vision']['patch']}"
    )
    lines.append(
        f"  segmenter: {sam['type']}"
        + (f" ({sam['name']})" if sam["name"] else "")
        + f" — image encoder {sam['layers']} layers, hidden {sam['hidden']}, {sam['image_size']} px, "
        f"patch {sam['patch']}"
    )
    lines.append(
        f"  RVLS2M: training {'on' if r['train'] else 'off'}, inference {'on' if r['infer'] else 'off'}; "
        f"grid {r['grid']}, τ {r['tau']}"
        + (f" k={r['k']}" if r["tau"] == "topk" else "")
        + f", {r['normalize']} normalisation, {r['pool']} pooling"
    )
    parts = [f"LoRA r={t['lora_r']} α={t['lora_alpha']} on {'/'.join(t['lora_targets'])}"] if t["lora"] else []
    parts += [
        k
        for k in (
            "llm",
            "lm_head",
            "embed_tokens",
            "vision_tower",
            "mm_projector",
            "sam_encoder",
            "prompt_encoder",
            "mask_decoder",
            "projection",
        )
        if t.get(k)
    ]
    lines.append(f"  trained parts: {', '.join(parts) or 'none'}")
    tr = info["training"]
    if tr is None:
        lines.append(
            f"training: no record ({TRAINING_FILE} is written by `sim4seg train`; this checkpoint came from "
            "elsewhere, e.g. `convert lisa` or an older version): label sets unknown"
        )
        return "\n".join(lines)
    m = tr.get("model", {})
    lines.append(
        f"training: {tr.get('trained_at', '?')} with sim4seg {tr.get('sim4seg_version', '?')}; "
        f"{_n(tr.get('steps'))} steps, {_n(tr.get('epochs_completed'))} epoch(s) completed, "
        f"{_n(tr.get('samples_seen'))} samples seen; from preset {m.get('preset')!r}"
        + (f" (LVLM {m['lvlm']})" if m.get("lvlm") else "")
        + (f" (SAM {m['sam']})" if m.get("sam") else "")
    )
    data = tr.get("data", {})
    build = data.get("build") or {}
    how = f" (built by `data {build['command']}`)" if build.get("command") else ""
    lines.append(
        f"  data: {data.get('manifest')}{how}; split {data.get('train_split')!r} "
        f"({_n(data.get('n_train'))} samples), validation {data.get('val_split')!r} "
        f"({_n(data.get('n_val'))}); answer format {data.get('answer_format')!r}"
    )
    subsets = tr.get("subsets") or {}
    counts = data.get("train_counts") or {}
    lines.append(
        f"  label sets of the {len(subsets)} subset(s) trained on:"
        if subsets
        else "  label sets: not recorded (a custom dataset)"
    )
    for name, s in subsets.items():
        c = counts.get(name, {})
        labels = ", ".join(f"{lb} ({c.get(lb, 0)})" for lb in s["labels"])
        lines.append(f"    {name} [{s['modality']}, {sum(c.values())} training samples]: {labels}")
    rec = info["recipe"] or {}
    o, tcfg = rec.get("optim", {}), rec.get("train", {})
    if o:
        lines.append(
            f"  recipe (config.yaml): lr {o.get('lr')}, {o.get('epochs')} epoch(s), batch {o.get('batch_size')}"
            f" × accumulation {o.get('grad_accum')}, {o.get('schedule')} schedule, seed {tcfg.get('seed')}, "
            f"precision {tcfg.get('precision')}"
        )
    met = tr.get("metrics", {})
    last, vals = met.get("train") or {}, met.get("validations") or []
    figures = []
    if "loss" in last:
        figures.append(f"last training loss {last['loss']:.4f} (step {last.get('step')})")
    if vals and "val/loss" in vals[-1]:
        figures.append(f"validation loss {vals[-1]['val/loss']:.4f} (step {vals[-1].get('step')})")
    lines.append(
        "  metrics: "
        + ("; ".join(figures) if figures else "none recorded")
        + " — segmentation / diagnosis scores: `sim4seg evaluate --checkpoint`"
    )
    return "\n".join(lines)
