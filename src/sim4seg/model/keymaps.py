"""Declarative key maps from foreign checkpoints (official SAM ``.pth``, LISA) to our module names.

A map is an ordered list of ``(pattern, replacement)`` on whole keys: the first pattern that
matches a key renames it; a key no pattern matches is reported as unexpected.
"""

from __future__ import annotations

import re

import torch

Rule = tuple[str, str]


def _prompt_and_decoder_rules(pe: str, md: str, mlp3: str) -> list[Rule]:
    """Rules SAM and SAM 2 share: SAM 2's prompt encoder and mask decoder keep SAM's module names for the mask
    downscaling, the output upscaling, the 3-layer MLPs and the transformer's norms; only their prefixes
    (``pe`` / ``md``: ``prompt_encoder`` / ``mask_decoder``, SAM 2's ``sam_``-prefixed) and the set of
    3-layer MLP heads (``mlp3``, a regex group) differ."""
    return [
        (rf"^{pe}\.mask_downscaling\.0\.(.*)$", r"prompt_encoder.mask_embed.conv1.\1"),
        (rf"^{pe}\.mask_downscaling\.1\.(.*)$", r"prompt_encoder.mask_embed.layer_norm1.\1"),
        (rf"^{pe}\.mask_downscaling\.3\.(.*)$", r"prompt_encoder.mask_embed.conv2.\1"),
        (rf"^{pe}\.mask_downscaling\.4\.(.*)$", r"prompt_encoder.mask_embed.layer_norm2.\1"),
        (rf"^{pe}\.mask_downscaling\.6\.(.*)$", r"prompt_encoder.mask_embed.conv3.\1"),
        (rf"^{pe}\.(no_mask_embed|not_a_point_embed)\.(.*)$", r"prompt_encoder.\1.\2"),
        (rf"^{md}\.output_upscaling\.0\.(.*)$", r"mask_decoder.upscale_conv1.\1"),
        (rf"^{md}\.output_upscaling\.1\.(.*)$", r"mask_decoder.upscale_layer_norm.\1"),
        (rf"^{md}\.output_upscaling\.3\.(.*)$", r"mask_decoder.upscale_conv2.\1"),
        # 3-layer MLPs: layers.0 / layers.1 / layers.2 → proj_in / layers.0 / proj_out
        (rf"^{md}\.{mlp3}\.layers\.0\.(.*)$", r"mask_decoder.\1.proj_in.\2"),
        (rf"^{md}\.{mlp3}\.layers\.1\.(.*)$", r"mask_decoder.\1.layers.0.\2"),
        (rf"^{md}\.{mlp3}\.layers\.2\.(.*)$", r"mask_decoder.\1.proj_out.\2"),
        (
            rf"^{md}\.transformer\.layers\.(\d+)\.norm(\d)\.(.*)$",
            r"mask_decoder.transformer.layers.\1.layer_norm\2.\3",
        ),
        (rf"^{md}\.transformer\.norm_final_attn\.(.*)$", r"mask_decoder.transformer.layer_norm_final_attn.\1"),
    ]


# official segment_anything → transformers.SamModel (module names inside the SAM)
SAM_KEY_MAP: list[Rule] = [
    (r"^image_encoder\.patch_embed\.proj\.(.*)$", r"vision_encoder.patch_embed.projection.\1"),
    (r"^image_encoder\.pos_embed$", r"vision_encoder.pos_embed"),
    (r"^image_encoder\.blocks\.(\d+)\.norm(\d)\.(.*)$", r"vision_encoder.layers.\1.layer_norm\2.\3"),
    (r"^image_encoder\.blocks\.(\d+)\.(attn|mlp)\.(.*)$", r"vision_encoder.layers.\1.\2.\3"),
    (r"^image_encoder\.neck\.0\.(.*)$", r"vision_encoder.neck.conv1.\1"),
    (r"^image_encoder\.neck\.1\.(.*)$", r"vision_encoder.neck.layer_norm1.\1"),
    (r"^image_encoder\.neck\.2\.(.*)$", r"vision_encoder.neck.conv2.\1"),
    (r"^image_encoder\.neck\.3\.(.*)$", r"vision_encoder.neck.layer_norm2.\1"),
    (
        r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$",
        r"prompt_encoder.shared_embedding.positional_embedding",
    ),
    (r"^prompt_encoder\.point_embeddings\.(\d+)\.(.*)$", r"prompt_encoder.point_embed.\1.\2"),
    *_prompt_and_decoder_rules(
        "prompt_encoder", "mask_decoder", r"(output_hypernetworks_mlps\.\d+|iou_prediction_head)"
    ),
    (r"^mask_decoder\.(transformer|iou_token|mask_tokens)\.(.*)$", r"mask_decoder.\1.\2"),
]
SAM_TIED = {"shared_image_embedding.positional_embedding": "prompt_encoder.shared_embedding.positional_embedding"}

# official SAM 2 / 2.1 (facebookresearch/sam2; MedSAM2's .pt files) → transformers.Sam2Model
SAM2_KEY_MAP: list[Rule] = [
    (r"^image_encoder\.trunk\.(pos_embed|pos_embed_window)$", r"vision_encoder.backbone.\1"),
    (r"^image_encoder\.trunk\.patch_embed\.proj\.(.*)$", r"vision_encoder.backbone.patch_embed.projection.\1"),
    (r"^image_encoder\.trunk\.blocks\.(\d+)\.norm(\d)\.(.*)$", r"vision_encoder.backbone.blocks.\1.layer_norm\2.\3"),
    # Hiera's 2-layer MLPs: layers.0 / layers.1 → proj_in / proj_out
    (
        r"^image_encoder\.trunk\.blocks\.(\d+)\.mlp\.layers\.0\.(.*)$",
        r"vision_encoder.backbone.blocks.\1.mlp.proj_in.\2",
    ),
    (
        r"^image_encoder\.trunk\.blocks\.(\d+)\.mlp\.layers\.1\.(.*)$",
        r"vision_encoder.backbone.blocks.\1.mlp.proj_out.\2",
    ),
    (
        r"^image_encoder\.trunk\.blocks\.(\d+)\.(attn\.qkv|attn\.proj|proj)\.(.*)$",
        r"vision_encoder.backbone.blocks.\1.\2.\3",
    ),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.(.*)$", r"vision_encoder.neck.convs.\1.\2"),
    (
        r"^sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$",
        r"prompt_encoder.shared_embedding.positional_embedding",
    ),
    # four (1, D) point embeddings → rows of one (4, D) Embedding (stacked by ``convert_sam2``)
    (r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$", r"prompt_encoder.point_embed.weight.\1"),
    *_prompt_and_decoder_rules(
        "sam_prompt_encoder",
        "sam_mask_decoder",
        r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)",
    ),
    (
        r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.0\.(.*)$",
        r"mask_decoder.transformer.layers.\1.mlp.proj_in.\2",
    ),
    (
        r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.1\.(.*)$",
        r"mask_decoder.transformer.layers.\1.mlp.proj_out.\2",
    ),
    (r"^sam_mask_decoder\.transformer\.(.*)\.out_proj\.(.*)$", r"mask_decoder.transformer.\1.o_proj.\2"),
    (
        r"^sam_mask_decoder\.(transformer|iou_token|mask_tokens|obj_score_token|conv_s0|conv_s1)\.(.*)$",
        r"mask_decoder.\1.\2",
    ),
    (r"^no_mem_embed$", r"no_memory_embedding"),
]
SAM2_VIDEO_ONLY = re.compile(
    r"^(memory_attention|memory_encoder|obj_ptr_proj|obj_ptr_tpos_proj|mask_downsample)\."
    r"|^(maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial)$"
)
"""SAM2's video-memory weights: not part of ``Sam2Model`` (one image at a time), dropped on conversion."""

# LISA (LlavaLlamaForCausalLM + visual_model + text_hidden_fcs) → Sim4SegModel
LISA_KEY_MAP: list[Rule] = [
    (r"^model\.embed_tokens\.(.*)$", r"lvlm.model.language_model.embed_tokens.\1"),
    (r"^model\.layers\.(.*)$", r"lvlm.model.language_model.layers.\1"),
    (r"^model\.norm\.(.*)$", r"lvlm.model.language_model.norm.\1"),
    (r"^lm_head\.(.*)$", r"lvlm.lm_head.\1"),
    (r"^model\.mm_projector\.(weight|bias)$", r"lvlm.model.multi_modal_projector.linear_1.\1"),  # LLaVA v1
    (r"^model\.mm_projector\.0\.(.*)$", r"lvlm.model.multi_modal_projector.linear_1.\1"),  # LLaVA-1.5
    (r"^model\.mm_projector\.2\.(.*)$", r"lvlm.model.multi_modal_projector.linear_2.\1"),
    (r"^model\.vision_tower\.vision_tower\.(.*)$", r"lvlm.model.vision_tower.\1"),
    (r"^model\.text_hidden_fcs\.0\.0\.(weight|bias)$", r"phi.0.\1"),
    (r"^model\.text_hidden_fcs\.0\.2\.(weight|bias)$", r"phi.2.\1"),
]
LISA_SAM_PREFIX = "model.visual_model."
WRAPPER_PREFIXES = ("base_model.model.", "module.", "_orig_mod.")


def strip_wrapper(key: str) -> str:
    """A state-dict key without ``base_model.model.`` / ``module.`` / ``_orig_mod.`` (PEFT, DDP, compile)."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key[len(next(p for p in WRAPPER_PREFIXES if key.startswith(p))) :]
    return key


def strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``strip_wrapper`` on every key of ``sd``."""
    return {strip_wrapper(k): v for k, v in sd.items()}


def rename(key: str, rules: list[Rule]) -> str | None:
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def apply_map(sd: dict[str, torch.Tensor], rules: list[Rule]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename every key; return ``(renamed, unexpected source keys)``."""
    out, unexpected = {}, []
    for k, v in sd.items():
        new = rename(k, rules)
        if new is None:
            unexpected.append(k)
        else:
            out[new] = v
    return out, unexpected


def convert_sam(sd: dict[str, torch.Tensor], prefix: str = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official SAM keys (``image_encoder.*`` ...) → SamModel keys under ``prefix``; plus unexpected keys."""
    out, unexpected = apply_map(sd, SAM_KEY_MAP)
    for tied, source in SAM_TIED.items():
        if source in out:
            out[tied] = out[source]
    return {prefix + k: v for k, v in out.items()}, unexpected


def convert_sam2(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official SAM 2 keys → ``Sam2Model`` keys (video-memory weights dropped); plus unexpected keys."""
    out, unexpected = apply_map({k: v for k, v in sd.items() if not SAM2_VIDEO_ONLY.match(k)}, SAM2_KEY_MAP)
    rows = sorted((int(k.rsplit(".", 1)[1]), k) for k in out if k.startswith("prompt_encoder.point_embed.weight."))
    if rows:
        out["prompt_encoder.point_embed.weight"] = torch.cat([out.pop(k) for _, k in rows])
    for tied, source in SAM_TIED.items():
        if source in out:
            out[tied] = out[source]
    return out, unexpected


def merge_lora_keys(sd: dict[str, torch.Tensor], alpha: float, r: int) -> dict[str, torch.Tensor]:
    """Fold PEFT LoRA pairs into their base weights: ``W += B·A·alpha/r``; drop ``.base_layer``."""
    out = {k.replace(".base_layer.", "."): v for k, v in sd.items() if ".lora_" not in k}
    for k, a in sd.items():
        m = re.match(r"^(.*)\.lora_A(?:\.[^.]+)?\.weight$", k)
        if not m:
            continue
        base = m.group(1) + ".weight"
        b_key = k.replace(".lora_A", ".lora_B")
        if b_key not in sd or base not in out:
            raise KeyError(f"LoRA key {k} has no matching {b_key} / {base}")
        b = sd[b_key]
        out[base] = (out[base].float() + (b.float() @ a.float()) * (alpha / r)).to(out[base].dtype)
    return out


def convert_lisa(sd: dict[str, torch.Tensor], *, lora_alpha: float = 16, lora_r: int = 8):
    """A LISA state dict (plain or PEFT-wrapped) → ``(Sim4SegModel keys, unexpected keys)``."""
    sd = merge_lora_keys(strip_prefixes(sd), lora_alpha, lora_r)
    sam_part = {k[len(LISA_SAM_PREFIX) :]: v for k, v in sd.items() if k.startswith(LISA_SAM_PREFIX)}
    rest = {k: v for k, v in sd.items() if not k.startswith(LISA_SAM_PREFIX)}
    out, unexpected = apply_map(rest, LISA_KEY_MAP)
    sam, sam_unexpected = convert_sam(sam_part, prefix="sam.")
    out.update(sam)
    return out, unexpected + [LISA_SAM_PREFIX + k for k in sam_unexpected]


def identity_projector(sd: dict[str, torch.Tensor], prefix: str = "lvlm.model.multi_modal_projector.") -> None:
    """Complete a one-Linear projector (in ``linear_1``) with an identity ``linear_2``, in place.

    With ``projector_hidden_act="linear"`` the two-layer projector then computes the one Linear exactly.
    """
    w = sd.get(prefix + "linear_1.weight")
    if w is None or prefix + "linear_2.weight" in sd:
        return
    sd[prefix + "linear_2.weight"] = torch.eye(w.shape[0], dtype=w.dtype)
    sd[prefix + "linear_2.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)


def align_optional_prefix(
    sd: dict[str, torch.Tensor], target_keys, stem: str, optional: str
) -> dict[str, torch.Tensor]:
    """Add or drop ``optional`` after ``stem`` in ``sd``'s keys to match the target's convention.

    transformers 5 dropped CLIPVisionModel's ``vision_model.`` level (``vision_tower.encoder...``);
    checkpoints written with transformers 4 (LISA's) still have it.
    """
    target_has = any(k.startswith(stem + optional) for k in target_keys)
    out = {}
    for k, v in sd.items():
        if k.startswith(stem):
            rest = k[len(stem) :]
            rest = rest[len(optional) :] if rest.startswith(optional) else rest
            k = stem + (optional if target_has else "") + rest
        out[k] = v
    return out


def check_against(
    converted: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    unexpected: list[str],
    *,
    allow_missing: tuple[str, ...] = (),
) -> list[str]:
    """Problems (missing, unexpected, mis-shaped keys, each named) of loading ``converted`` into ``target``."""
    problems = [f"unexpected key {k}" for k in unexpected]
    problems += [f"unexpected key {k}" for k in converted if k not in target]
    problems += [f"missing key {k}" for k in target if k not in converted and not k.startswith(allow_missing)]
    problems += [
        f"mis-shaped key {k}: checkpoint {tuple(v.shape)}, model {tuple(target[k].shape)}"
        for k, v in converted.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    return problems


def remap_vocab_rows(
    weight: torch.Tensor,
    src_vocab: dict[str, int],
    dst_vocab: dict[str, int],
    init: torch.Tensor | None = None,
    rows: int | None = None,
) -> torch.Tensor:
    """Rows of an embedding / LM head by token string; rows of tokens the source lacks take ``init``'s
    rows, or (``init=None``) the mean source row, like transformers' mean resizing — deterministic."""
    out = init.clone() if init is not None else weight.mean(0, keepdim=True).repeat(rows, 1)
    for tok, j in dst_vocab.items():
        i = src_vocab.get(tok)
        if i is not None and i < weight.shape[0] and j < out.shape[0]:
            out[j] = weight[i]
    return out
