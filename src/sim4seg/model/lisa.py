"""LISA checkpoints (the paper's initialisation) → a Sim4Seg model on transformers classes.

A released LISA checkpoint (e.g. ``xinlai/LISA-7B-v1``) is a directory with LISA's
``config.json`` (a LLaMA config plus ``mm_vision_tower``, ``mm_vision_select_layer``,
``out_dim``, ...), the tokenizer (LLaMA + ``[SEG]``, ``<im_start>``, ``<im_end>``) and weights
under LISA's module names (``keymaps.LISA_KEY_MAP``). Things the key map alone does not settle:

- **The projector.** LISA is built on LLaVA v1, whose ``mm_projector`` is one ``nn.Linear``
  (``model.mm_projector.{weight,bias}``); transformers' LLaVA projector is always
  ``linear_1 → act → linear_2``. A single Linear becomes ``linear_1``, an identity ``act``
  (``"linear"``) and an identity ``linear_2`` — the same function, exactly. A two-layer
  ``mm_projector.{0,2}`` (LLaVA-1.5's ``mlp2x_gelu``) maps one to one.
- **The vision tower.** LISA loads CLIP from ``mm_vision_tower`` at run time (its checkpoints
  may not hold it; it is frozen). Its config, image processor and, when absent from the
  checkpoint, its weights come from that CLIP (hub id or local path; ``vision_tower=`` overrides
  it, as LISA users do for an offline copy). Features are taken at ``mm_vision_select_layer``
  without the CLS token, as LISA does.
- **The image token.** LISA splices image features in at a ``-200`` sentinel, not a vocabulary
  entry; transformers' LLaVA needs ``<image>`` in the vocabulary, so it is added (its embedding
  row is never used: image features replace it). Embedding and LM-head rows are matched by
  token string, so LISA's ``[SEG]`` row becomes ours.
- **The prompt.** The chat template is LISA's ``llava_v1`` conversation (system line, ``USER:`` /
  ``ASSISTANT:``, ``</s>`` after answers), with ``<im_start><image><im_end>`` when the config's
  ``mm_use_im_start_end`` is set, so zero-shot use (paper Table 4) sees LISA's own format.

``base=`` instead takes the LLaVA config and processor from an HF LLaVA model (for LISA
variants built on LLaVA-1.5); the projector kind still follows the weights.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from sim4seg.data.transforms import SegmenterFrame
from sim4seg.errors import InputError
from sim4seg.model import keymaps
from sim4seg.model.backbones.llava import IM_END, IM_START, IMAGE_TOKEN  # noqa: F401 (re-exported)
from sim4seg.model.backbones.llava import LISA_SYSTEM as SYSTEM  # noqa: F401 (re-exported)
from sim4seg.model.backbones.llava import lisa_chat_template as chat_template
from sim4seg.model.compose import apply_trainable, compose
from sim4seg.model.config import Sim4SegConfig
from sim4seg.model.weights import read_state_dict, resolve_source

log = logging.getLogger(__name__)

# transformers' LlamaConfig fields a LISA config.json carries
LLAMA_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "attention_bias",
    "mlp_bias",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)
FILES = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt"]  # what a LISA / CLIP repo needs from the hub


def read_lisa_config(directory: Path) -> dict:
    """LISA's ``config.json``; a clear error when it is missing or not a LISA (LLaVA-LLaMA) config."""
    path = directory / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            "no config.json: a LISA checkpoint directory holds config.json, tokenizer and weights", directory
        ) from None
    except json.JSONDecodeError as e:
        raise InputError(f"config.json is not JSON ({e.msg})", path, e.lineno) from None
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in cfg]
    if missing or not (cfg.get("mm_vision_tower") or cfg.get("vision_tower")):
        raise InputError(
            f"not a LISA config ({cfg.get('model_type', '?')!r}; it needs the LLaMA sizes and "
            f"mm_vision_tower, missing {missing or ['mm_vision_tower']})",
            path,
        )
    return cfg


def lisa_llava_config(cfg: dict, vision_config, *, image_token_id: int, vocab_size: int, projector: str):
    """A transformers ``LlavaConfig`` equal to LISA's architecture (patch features: LISA forces them)."""
    from transformers import LlamaConfig, LlavaConfig

    text = LlamaConfig(
        **{k: cfg[k] for k in LLAMA_KEYS if k in cfg} | {"vocab_size": vocab_size, "tie_word_embeddings": False}
    )
    grid = vision_config.image_size // vision_config.patch_size
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_index=image_token_id,
        projector_hidden_act="linear" if projector == "linear" else "gelu",
        vision_feature_layer=int(cfg.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy="default",
        image_seq_length=grid * grid,
        tie_word_embeddings=False,
    )


@contextmanager
def _loading(what: str, path):
    """transformers' OSError / ValueError while loading ``what`` → an InputError naming ``path``."""
    try:
        yield
    except InputError:
        raise
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load {what} ({type(e).__name__}: {e})", path) from None


def _lisa_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    with _loading("LISA's tokenizer", directory):
        return AutoTokenizer.from_pretrained(directory)


def _derived(directory: Path, cfg: dict, tower: str, has_vision: bool, projector: str):
    """LISA's own route: ``(processor, LlavaConfig, CLIP weights if the checkpoint lacks them)``."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlavaProcessor

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor  # no torchvision needed
    except ImportError:
        from transformers import CLIPImageProcessor
    path = resolve_source(tower, FILES, what="CLIP vision tower")
    with _loading("the CLIP vision tower", path):
        vision = CLIPVisionConfig.from_pretrained(path)
        image_processor = CLIPImageProcessor.from_pretrained(path)
        weights = {} if has_vision else CLIPVisionModel.from_pretrained(path).state_dict()
    tokenizer = _lisa_tokenizer(directory)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tokenizer.image_token = IMAGE_TOKEN
    tokenizer.chat_template = chat_template(bool(cfg.get("mm_use_im_start_end", False)))
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    lvlm_cfg = lisa_llava_config(
        cfg,
        vision,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vocab_size=len(tokenizer),
        projector=projector,
    )
    return processor, lvlm_cfg, {f"lvlm.model.vision_tower.{k}": v for k, v in weights.items()}


def _from_base(base: str, has_vision: bool, projector: str):
    """The ``base=`` route: ``(processor, config, vision-tower weights if the checkpoint lacks them)`` of an HF LLaVA."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    path = resolve_source(base, FILES, what="base LLaVA model")
    with _loading("the base LLaVA model", path):
        processor, lvlm_cfg = AutoProcessor.from_pretrained(path), AutoConfig.from_pretrained(path)
        weights = (
            {}
            if has_vision
            else {
                f"lvlm.{k}": v
                for k, v in AutoModelForImageTextToText.from_pretrained(path).state_dict().items()
                if k.startswith("model.vision_tower.")
            }
        )
    if projector == "linear":
        lvlm_cfg.projector_hidden_act = "linear"
    return processor, lvlm_cfg, weights


def load_lisa(
    src: str | os.PathLike,
    config: Sim4SegConfig | None = None,
    *,
    base: str | None = None,
    sam: str = "facebook/sam-vit-huge",
    vision_tower: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trainable: bool = True,
    lora_alpha: float = 16,
    lora_r: int = 8,
):
    """A LISA checkpoint (directory or hub id; plain or PEFT-wrapped weights) → ``(model, processor)``.

    sam: a SamModel config of LISA's SAM size (ViT-H for the released LISA). base: an HF LLaVA
    model whose config + processor to use instead of deriving them from LISA's config.json.
    vision_tower: CLIP hub id or path replacing the config's ``mm_vision_tower``.
    """
    from transformers import AutoModelForImageTextToText, SamConfig, SamModel

    directory = resolve_source(src, FILES, what="LISA checkpoint")
    cfg = read_lisa_config(directory)
    sd, unexpected = keymaps.convert_lisa(read_state_dict(directory), lora_alpha=lora_alpha, lora_r=lora_r)
    has_vision = any(k.startswith("lvlm.model.vision_tower.") for k in sd)
    projector = "mlp2x_gelu" if "lvlm.model.multi_modal_projector.linear_2.weight" in sd else "linear"
    if base is None:
        tower = vision_tower or cfg.get("mm_vision_tower") or cfg["vision_tower"]
        processor, lvlm_cfg, vision_weights = _derived(directory, cfg, tower, has_vision, projector)
    else:
        processor, lvlm_cfg, vision_weights = _from_base(base, has_vision, projector)
    if not has_vision:
        log.info("the checkpoint holds no vision tower: CLIP weights from %s", base or tower)
    if projector == "linear":
        keymaps.identity_projector(sd)
    sam_dir = resolve_source(sam, ["*.json"], what="SAM config")
    with _loading("the SAM config", sam_dir):
        sam_cfg = SamConfig.from_pretrained(sam_dir)

    config = config or Sim4SegConfig()
    lvlm = AutoModelForImageTextToText.from_config(lvlm_cfg, dtype=dtype)
    # LISA feeds SAM through segment_anything's own transform: SAM's mean/std, bilinear, longest side → 1024
    frame = SegmenterFrame(size=int(sam_cfg.vision_config.image_size))
    model = compose(
        lvlm, SamModel._from_config(sam_cfg, dtype=dtype), processor, config, trainable=False, sam_frame=frame
    )
    target = model.state_dict()
    lisa_vocab, vocab = _lisa_tokenizer(directory).get_vocab(), processor.tokenizer.get_vocab()
    for key in ("lvlm.model.language_model.embed_tokens.weight", "lvlm.lm_head.weight"):
        if key in sd and sd[key].shape[1:] == target[key].shape[1:]:  # else reported as mis-shaped below
            sd[key] = keymaps.remap_vocab_rows(sd[key], lisa_vocab, vocab, rows=target[key].shape[0])
    sd.update(vision_weights)
    sd = keymaps.align_optional_prefix(sd, target, "lvlm.model.vision_tower.", "vision_model.")
    problems = keymaps.check_against(sd, target, unexpected)
    if problems:
        raise InputError("LISA weights do not fit the model: " + "; ".join(problems[:20]), directory)
    model.load_state_dict(sd, strict=True)
    if trainable:
        apply_trainable(model, config.trainable)
    else:
        model.requires_grad_(False)
        model.eval()
    return model.to(device=device, dtype=dtype), processor
