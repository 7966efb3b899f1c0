"""Builders: tiny CPU models (tokenizer made locally) and named presets for real checkpoints.

Builders are functions; the model class receives built submodules. What trains is decided
here, at construction, by ``TrainableConfig`` (``apply_trainable``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from sim4seg.errors import InputError
from sim4seg.model.config import Sim4SegConfig, TinySpec, TrainableConfig
from sim4seg.model.sim4seg import Sim4SegModel

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN)
# LLaVA-1.5's conversation format: "USER: <image>\n{query} ASSISTANT: {answer}</s>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


# ---------------------------------------------------------------------------- tiny models


def default_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: every query/answer template over the paper's subsets."""
    from sim4seg.data import prompts
    from sim4seg.data.subsets import MODALITY_NAMES, SUBSETS

    texts = ["USER: ASSISTANT:"]
    for info in SUBSETS.values():
        for t in prompts.QUERY_TEMPLATES:
            texts.append(t.format(target=info.target, modality=MODALITY_NAMES[info.modality]))
        for label in info.labels:
            texts += [d.format(label=label) for d in prompts.DIAGNOSIS_TEMPLATES]
            texts.append(prompts.diagnosis_line(label))
    return texts + [prompts.PLAIN_ANSWER]


def build_tiny_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 600):
    """A byte-level BPE tokenizer trained here on ``texts`` (default: ``default_corpus()``); no download.

    Byte-level: any text round-trips; the corpus only decides which words are one token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts if texts is not None else default_corpus()), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": IMAGE_TOKEN})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_processor(tokenizer, spec: TinySpec):
    from transformers import LlavaProcessor

    try:  # the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor
    image_processor = CLIPImageProcessor(size={"shortest_edge": spec.image_size},
                                         crop_size={"height": spec.image_size, "width": spec.image_size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=spec.patch,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def tiny_lvlm(tokenizer, spec: TinySpec):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
                              num_hidden_layers=2, num_attention_heads=2, image_size=spec.image_size,
                              patch_size=spec.patch, projection_dim=spec.vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.llm_hidden, intermediate_size=2 * spec.llm_hidden,
                       num_hidden_layers=spec.llm_layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
                       max_position_embeddings=1024, tie_word_embeddings=False,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    n = (spec.image_size // spec.patch) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         image_seq_length=n, vision_feature_layer=-1, vision_feature_select_strategy="default")
    lvlm = LlavaForConditionalGeneration(config)
    lvlm.generation_config.eos_token_id = tokenizer.eos_token_id
    lvlm.generation_config.pad_token_id = tokenizer.pad_token_id
    return lvlm


def tiny_sam(spec: TinySpec):
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    d = spec.sam_hidden
    vision = SamVisionConfig(hidden_size=d, output_channels=d, num_hidden_layers=2, num_attention_heads=2,
                             image_size=spec.sam_image_size, patch_size=spec.sam_patch, mlp_dim=2 * d,
                             global_attn_indexes=[1], window_size=4, num_pos_feats=d // 2)
    # SAM's 16: the mask embedding's first LayerNorm spans 16 // 4 = 4 channels; with 8 it spans 2, whose
    # normalised values are always ±1 — the region-mask prompt would reach the decoder as a constant.
    prompt = SamPromptEncoderConfig(hidden_size=d, image_size=spec.sam_image_size, patch_size=spec.sam_patch,
                                    mask_input_channels=16)
    decoder = SamMaskDecoderConfig(hidden_size=d, num_hidden_layers=2, num_attention_heads=2, mlp_dim=2 * d,
                                   iou_head_hidden_dim=d)
    return SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))


def build_tiny(config: Sim4SegConfig | None = None, *, spec: TinySpec | None = None, texts: Iterable[str] | None = None,
               seed: int = 0, trainable: bool = True):
    """A tiny randomly initialised Sim4Seg and its processor: ``(model, processor)`` (fp32, CPU)."""
    spec = spec or TinySpec()
    config = config or Sim4SegConfig(max_length=256)
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer(texts, spec.vocab_size)
    processor = tiny_processor(tokenizer, spec)
    return compose(tiny_lvlm(tokenizer, spec), tiny_sam(spec), processor, config, trainable=trainable), processor


# ---------------------------------------------------------------------------- composition


def add_seg_token(tokenizer, lvlm, seg_token: str = "[SEG]") -> int:
    """Add ``[SEG]`` to the tokenizer (if new) and grow the LVLM's embeddings; return its id."""
    if seg_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([seg_token], special_tokens=False)
    seg_id = tokenizer.convert_tokens_to_ids(seg_token)
    if lvlm.get_input_embeddings().num_embeddings < len(tokenizer):
        lvlm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return seg_id


def check_architecture(lvlm, sam, source: str = "") -> None:
    """Refuse anything that is not a LLaVA-family LVLM and a SAM (clear error naming the cause)."""
    ok = all(hasattr(lvlm, a) for a in ("model", "lm_head")) and hasattr(getattr(lvlm, "model", None), "get_image_features") \
        and hasattr(getattr(lvlm, "model", None), "language_model") and hasattr(lvlm.config, "image_token_id")
    if not ok:
        raise InputError(f"the LVLM is a {type(lvlm).__name__} ({getattr(lvlm.config, 'model_type', '?')}), not a "
                         "LLaVA-family image-text-to-text model (vision tower + projector + language model)", source or None)
    if getattr(sam.config, "model_type", None) != "sam" or not hasattr(sam, "mask_decoder"):
        raise InputError(f"the segmenter is a {type(sam).__name__}, not a SamModel", source or None)


def lvlm_token_grid(lvlm) -> list[int]:
    v = lvlm.config.vision_config
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    return [size // v.patch_size, size // v.patch_size]


def compose(lvlm, sam, processor, config: Sim4SegConfig, *, trainable: bool = True,
            phi: nn.Module | None = None) -> Sim4SegModel:
    """Add [SEG], read the token grid, build the model and (if ``trainable``) set what trains."""
    check_architecture(lvlm, sam)
    seg_id = add_seg_token(processor.tokenizer, lvlm, config.seg_token)
    if config.token_grid is None:
        config.token_grid = lvlm_token_grid(lvlm)
    model = Sim4SegModel(lvlm, sam, config, seg_token_id=seg_id, phi=phi)
    if trainable:
        apply_trainable(model, config.trainable)
    return model


def has_lora(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def apply_trainable(model: Sim4SegModel, t: TrainableConfig) -> Sim4SegModel:
    """Freeze everything, inject LoRA (once) on the LLM's target projections, unfreeze what ``t`` names."""
    model.requires_grad_(False)
    if t.lora and not has_lora(model):
        from peft import LoraConfig, inject_adapter_in_model

        targets = "|".join(t.lora_targets)
        cfg = LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, bias="none",
                         target_modules=rf".*language_model.*\.({targets})")
        inject_adapter_in_model(cfg, model.lvlm)
    lvlm = model.lvlm
    parts = {
        "llm": lvlm.model.language_model, "lm_head": lvlm.lm_head, "embed_tokens": lvlm.get_input_embeddings(),
        "mask_decoder": model.sam.mask_decoder, "projection": model.phi, "vision_tower": lvlm.model.vision_tower,
        "mm_projector": lvlm.model.multi_modal_projector, "sam_encoder": model.sam.vision_encoder,
        "prompt_encoder": model.sam.prompt_encoder,
    }
    for name, module in parts.items():
        if getattr(t, name):
            module.requires_grad_(True)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(t.lora)
    return model


def trainable_summary(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": train}


# ---------------------------------------------------------------------------- real checkpoints


@dataclass(frozen=True)
class Preset:
    lvlm: str
    """Hub id or local path of the LVLM (HF LLaVA format) or, with ``lisa=True``, of a LISA checkpoint."""
    sam: str | None
    """Hub id or local path of a SamModel (HF format); ``None`` when the LISA checkpoint holds SAM."""
    lisa: bool = False
    note: str = ""


PRESETS: dict[str, Preset] = {
    "lisa-7b": Preset("xinlai/LISA-7B-v1", None, lisa=True,
                      note="the paper's initialisation: LISA-7B (LLaVA + SAM ViT-H + ϕ), converted on load"),
    "llava-1.5-7b+sam-vit-h": Preset("llava-hf/llava-1.5-7b-hf", "facebook/sam-vit-huge",
                                     note="LLaVA-1.5-7B and SAM ViT-H; ϕ and [SEG] start untrained"),
    "llava-med+medsam": Preset("chaoyinshe/llava-med-v1.5-mistral-7b-hf", "flaviagiammarino/medsam-vit-base",
                               note="LLaVA-Med v1.5 and MedSAM, both in HF format (community conversions)"),
}


def from_pretrained(lvlm: str | os.PathLike, sam: str | os.PathLike, config: Sim4SegConfig | None = None, *,
                    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", trainable: bool = True):
    """An LVLM (HF LLaVA format) and a SamModel from hub ids or local paths → ``(model, processor)``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, SamModel

    config = config or Sim4SegConfig()
    try:
        processor = AutoProcessor.from_pretrained(lvlm)
        lvlm_model = AutoModelForImageTextToText.from_pretrained(lvlm, dtype=dtype)
        sam_model = SamModel.from_pretrained(sam, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot load ({type(e).__name__}): {e}", f"{lvlm} + {sam}") from None
    check_architecture(lvlm_model, sam_model, f"{lvlm} + {sam}")
    return compose(lvlm_model, sam_model, processor, config, trainable=trainable).to(device), processor


def from_preset(name: str, config: Sim4SegConfig | None = None, *, lvlm: str | None = None, sam: str | None = None,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", trainable: bool = True):
    """A named preset; ``lvlm`` / ``sam`` replace its hub ids with local paths."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[name]
    if p.lisa:
        from sim4seg.model.lisa import load_lisa

        return load_lisa(lvlm or p.lvlm, config, dtype=dtype, device=device, trainable=trainable)
    return from_pretrained(lvlm or p.lvlm, sam or p.sam, config, dtype=dtype, device=device, trainable=trainable)
