"""``sim4seg convert ...`` and ``sim4seg model ...`` subcommands."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def convert_lisa(
    src: str, dst: str, base: str | None, sam: str, vision_tower: str | None, lora_alpha: float, lora_r: int
) -> int:
    """Convert a LISA checkpoint SRC (config.json + tokenizer + weights, plain or PEFT-wrapped) into a Sim4Seg checkpoint DST."""
    from sim4seg.model.checkpoint import save
    from sim4seg.model.lisa import load_lisa

    model, processor = load_lisa(
        src, base=base, sam=sam, vision_tower=vision_tower, trainable=False, lora_alpha=lora_alpha, lora_r=lora_r
    )
    save(model, processor, dst)
    print(f"wrote Sim4Seg checkpoint {dst} (from LISA {src})")
    return 0


def convert_sam(src: str, dst: str, base: str) -> int:
    """Convert an official SAM .pth SRC into a transformers SamModel directory DST (architecture from BASE)."""
    from sim4seg.model.checkpoint import convert_sam_file

    convert_sam_file(src, dst, base=base)
    print(f"wrote SamModel {dst} (from {src})")
    return 0


def convert_sam2(src: str, dst: str, base: str | None, variant: str | None, image_size: int | None) -> int:
    """Convert an official SAM 2 / 2.1 .pt SRC (facebookresearch/sam2, MedSAM2) into a transformers Sam2Model
    directory DST with its preprocessor_config.json (architecture from --base or --variant; video memory dropped)."""
    from sim4seg.model.checkpoint import convert_sam2_file

    convert_sam2_file(src, dst, base=base, variant=variant, image_size=image_size)
    print(f"wrote Sam2Model {dst} (from {src})")
    return 0


def merge(src: str, dst: str) -> int:
    """Fold the LoRA adapters of checkpoint SRC into its weights; write a plain checkpoint DST."""
    from sim4seg.model.checkpoint import merge as merge_ckpt

    merge_ckpt(src, dst)
    print(f"wrote merged checkpoint {dst}")
    return 0


def build(preset: str, out: str, shrink: bool) -> int:
    """Build PRESET and write it as a Sim4Seg checkpoint to OUT (--shrink: its true geometry on a small random model)."""
    if shrink:
        from sim4seg.model.shrink import write_shrunk

        paths = write_shrunk(preset, out)
    else:
        from sim4seg.model.checkpoint import save
        from sim4seg.model.presets import from_preset

        model, processor = from_preset(preset, trainable=False)
        paths = {"checkpoint": save(model, processor, out)}
    print(f"wrote Sim4Seg checkpoint {paths['checkpoint']} ({preset}{', shrunk' if shrink else ''})")
    if "lvlm" in paths:
        print(
            f"backbones for a training recipe: model.preset={preset} model.lvlm={paths['lvlm']} "
            f"model.sam={paths['sam']}"
        )
    return 0


def presets() -> int:
    """List the named presets for real checkpoints."""
    from sim4seg.model.backbones import LVLM_FAMILIES, SEGMENTER_FAMILIES, variant
    from sim4seg.model.presets import PRESETS

    w = max(map(len, PRESETS))
    for name, p in PRESETS.items():
        lv, sv = variant(LVLM_FAMILIES, p.lvlm_variant)[1], variant(SEGMENTER_FAMILIES, p.sam_variant)[1]
        f = sv.frame
        prep = "mean/std" if f.do_normalize else "[0, 1]"
        stretch = " stretched to the square" if f.resize == "square" else ""
        if hasattr(lv, "image_size"):  # a fixed square frame and grid
            g = lv.image_size // lv.patch
            lvlm = (
                f"{lv.image_size} px{' padded' if lv.pad_to_square else ''}, {lv.image_tokens} image tokens ({g}x{g})"
            )
        else:  # dynamic resolution: a grid per image
            unit = lv.patch * lv.merge
            lvlm = (
                f"dynamic resolution, up to {lv.image_tokens} image tokens (one per {unit}x{unit} px, grid per image)"
            )
        print(
            f"{name:{w}s} lvlm={p.lvlm}  sam={p.sam or '(in the LISA checkpoint)'}\n{'':{w}s} {p.note}\n"
            f"{'':{w}s} {lvlm}; {sv.name} {f.size} px{stretch} ({prep}, {_resample_name(f.resample)}), "
            "prompt frame 256x256"
        )
    return 0


def info(checkpoint: str, json_: bool) -> int:
    """Show what checkpoint CKPT is: backbones, parameters, RVLS2M, what trained, and (for `sim4seg train` output)
    when and on which data, the label set of every subset it was trained on, the recipe and the final metrics."""
    from sim4seg.model.info import checkpoint_info, describe

    data = checkpoint_info(checkpoint)
    if json_:
        import json

        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(describe(data))
    return 0


def _resample_name(code: int) -> str:
    from sim4seg.data.transforms import RESAMPLE

    return RESAMPLE[code]


def register(sub: argparse._SubParsersAction) -> None:
    conv = sub.add_parser("convert", help="convert LISA / official SAM / SAM 2 checkpoints into this project's formats")
    csub = conv.add_subparsers(dest="convert_command", metavar="FORMAT", required=True)
    p = csub.add_parser("lisa", help=convert_lisa.__doc__, description=convert_lisa.__doc__)
    p.add_argument("src", help="LISA checkpoint directory or hub id (e.g. xinlai/LISA-7B-v1)")
    p.add_argument("dst", help="output Sim4Seg checkpoint directory")
    p.add_argument("--sam", default="facebook/sam-vit-huge", help="HF SAM config matching LISA's SAM (hub id or path)")
    p.add_argument(
        "--vision-tower",
        default=None,
        help="CLIP hub id or local path replacing config.json's mm_vision_tower (e.g. an offline copy)",
    )
    p.add_argument(
        "--base",
        default=None,
        help="take the LLaVA config + processor from this HF LLaVA model instead of LISA's config.json",
    )
    p.add_argument("--lora-alpha", type=float, default=16, help="LoRA alpha of PEFT-wrapped weights (LISA: 16)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank of PEFT-wrapped weights (LISA: 8)")
    p.set_defaults(handler=convert_lisa)
    p = csub.add_parser("sam", help=convert_sam.__doc__, description=convert_sam.__doc__)
    p.add_argument("src", help="official SAM / MedSAM .pth file")
    p.add_argument("dst", help="output SamModel directory")
    p.add_argument("--base", default="facebook/sam-vit-huge", help="SamModel config of the same size (hub id or path)")
    p.set_defaults(handler=convert_sam)
    p = csub.add_parser("sam2", help=convert_sam2.__doc__, description=convert_sam2.__doc__)
    p.add_argument("src", help="official SAM 2 / 2.1 or MedSAM2 .pt file")
    p.add_argument("dst", help="output Sam2Model directory")
    p.add_argument("--base", default=None, help="Sam2Model config of the same size (hub id or path)")
    p.add_argument(
        "--variant",
        default=None,
        help="a published size instead of --base: sam2.1-hiera-tiny | -small | -base-plus | -large",
    )
    p.add_argument(
        "--image-size", type=int, default=None, help="input side with --variant (default 1024; MedSAM2: 512)"
    )
    p.set_defaults(handler=convert_sam2)

    model = sub.add_parser("model", help="inspect and transform Sim4Seg checkpoints")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    p = msub.add_parser("merge", help=merge.__doc__, description=merge.__doc__)
    p.add_argument("src", help="Sim4Seg checkpoint with LoRA adapters")
    p.add_argument("dst", help="output checkpoint directory")
    p.set_defaults(handler=merge)
    p = msub.add_parser(
        "info",
        help="show a checkpoint's backbones, label sets, training recipe, data and metrics",
        description=info.__doc__,
    )
    p.add_argument("checkpoint", metavar="CKPT", help="Sim4Seg checkpoint directory (a training run's final/)")
    p.add_argument("--json", dest="json_", action="store_true", help="print everything as JSON")
    p.set_defaults(handler=info)

    p = msub.add_parser("build", help=build.__doc__, description=build.__doc__)
    p.add_argument("preset", help="a named preset (sim4seg model presets)")
    p.add_argument("--out", required=True, metavar="DIR", help="output checkpoint directory")
    p.add_argument(
        "--shrink",
        action="store_true",
        help="the preset's processors, image sizes, token counts, chat template, special tokens and SAM "
        "frame on a small random model (nothing downloaded)",
    )
    p.set_defaults(handler=build)
    p = msub.add_parser("presets", help=presets.__doc__, description=presets.__doc__)
    p.set_defaults(handler=presets)
