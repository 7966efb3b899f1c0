"""The Sim4Seg model's own settings: RVLS2M, loss weights, what trains. Saved beside the weights."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from sim4seg._atomic import write_json
from sim4seg._config import from_dict, to_dict
from sim4seg.data.prompts import SEG_TOKEN
from sim4seg.errors import InputError
from sim4seg.model.rvls2m import NORMALIZATIONS, POOLINGS, TAU_STRATEGIES

CONFIG_FILE = "sim4seg_config.json"
MODEL_TYPE = "sim4seg"


@dataclass
class TinySpec:
    """Sizes of the tiny randomly initialised model (``model.preset: tiny``; CPU, seconds per step)."""

    image_size: int = 64
    """LVLM (CLIP) input side in pixels; a multiple of ``patch``."""
    patch: int = 8
    """LVLM patch side: the token grid is ``image_size / patch`` squared."""
    vision_hidden: int = 32
    """Width of the tiny CLIP vision tower."""
    llm_hidden: int = 64
    """Width of the tiny Llama."""
    llm_layers: int = 2
    """Decoder layers of the tiny Llama."""
    heads: int = 4
    """Attention heads of the tiny Llama (divides ``llm_hidden``)."""
    sam_image_size: int = 64
    """SAM input side in pixels; a multiple of ``sam_patch``."""
    sam_patch: int = 8
    """SAM patch side."""
    sam_hidden: int = 32
    """SAM prompt / decoder width (ϕ's output)."""
    vocab_size: int = 600
    """Size of the byte-level BPE vocabulary trained locally on the prompt templates."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"model.tiny.{f.name} must be >= 1, got {getattr(self, f.name)}")
        if self.image_size % self.patch or self.sam_image_size % self.sam_patch:
            raise ValueError("model.tiny: image_size must be a multiple of patch and sam_image_size of sam_patch")
        if self.llm_hidden % self.heads:
            raise ValueError(f"model.tiny.heads={self.heads} must divide llm_hidden={self.llm_hidden}")


@dataclass
class RVLS2MConfig:
    """Algorithm 1's knobs (defaults: the paper's best, top-36 cells of a 16×16 grid)."""

    train: bool = True
    """Feed the region mask to SAM during teacher-forced training (``False``: the ablation)."""
    infer: bool = True
    """Feed it at inference (``True`` on a model trained without it is the paper's zero-shot Table 4)."""
    grid: int = 16
    tau: str = "topk"
    """``topk``, ``fraction``, ``threshold`` (mean + α·std) or ``otsu``."""
    k: int = 36
    fraction: float | None = None
    alpha: float | None = None
    normalize: str = "softmax"
    """``softmax`` (paper Eq. 5) or ``minmax`` (the released code)."""
    temperature: float = 1.0
    """Softmax temperature T: ``softmax(s / T)`` (1: Eq. 5; > 1 flattens, keeps the token ranking)."""
    pool: str = "image"
    """``image`` (cell means of the bilinearly upsampled map, as released) or ``token`` (literal Alg. 1)."""
    on: float = 1.0
    """Value of a selected cell in SAM's mask prompt (the released code: 1.0)."""
    off: float = 0.0

    def __post_init__(self) -> None:
        if self.tau not in TAU_STRATEGIES:
            raise ValueError(f"rvls2m.tau must be one of {TAU_STRATEGIES}, got {self.tau!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"rvls2m.normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.pool not in POOLINGS:
            raise ValueError(f"rvls2m.pool must be one of {POOLINGS}, got {self.pool!r}")
        if not self.temperature > 0:
            raise ValueError(f"rvls2m.temperature must be > 0, got {self.temperature}")
        if self.grid < 1 or self.k < 1:
            raise ValueError(f"rvls2m.grid and rvls2m.k must be >= 1, got {self.grid}, {self.k}")
        if self.tau == "fraction" and (self.fraction is None or not 0 < self.fraction <= 1):
            raise ValueError(f"rvls2m.tau='fraction' needs 0 < rvls2m.fraction <= 1, got {self.fraction!r}")


@dataclass
class LossConfig:
    """Eq. 10: ``L = txt·CE + mask·(bce·BCE + dice·Dice)``."""

    txt: float = 1.0
    mask: float = 1.0
    bce: float = 2.0
    dice: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"loss.{f.name} must be >= 0, got {getattr(self, f.name)}")


@dataclass
class TrainableConfig:
    """What trains, decided at construction (paper / LISA defaults)."""

    lora: bool = True
    """LoRA on the LLM (not the vision tower)."""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lm_head: bool = True
    embed_tokens: bool = True
    llm: bool = False
    """Train every LLM weight fully (instead of, or besides, LoRA)."""
    mask_decoder: bool = True
    projection: bool = True
    """ϕ, the [SEG] → SAM prompt MLP."""
    vision_tower: bool = False
    mm_projector: bool = False
    sam_encoder: bool = False
    prompt_encoder: bool = False

    def __post_init__(self) -> None:
        if self.lora and (self.lora_r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1):
            raise ValueError("trainable.lora_r must be >= 1, lora_alpha > 0 and 0 <= lora_dropout < 1")
        if self.lora and not self.lora_targets:
            raise ValueError("trainable.lora_targets must name at least one module (e.g. q_proj)")


@dataclass
class Sim4SegConfig:
    """Everything about Sim4Seg that is not the LVLM's or SAM's own config."""

    seg_token: str = SEG_TOKEN
    """The segmentation token added to the tokenizer."""
    token_grid: list[int] | None = None
    """The LVLM's patch grid (h_p, w_p); ``None``: the paper's ⌊√n⌋ × ⌈n/⌊√n⌋⌉."""
    max_length: int | None = None
    """Longest tokenized sequence (prompt + answer) the data pipeline builds; ``None``: the LVLM's image
    tokens plus ``text_budget`` (LLaVA-1.5: 576 + 640). An explicit value wins."""
    text_budget: int = 640
    """Tokens beside the image's that a derived ``max_length`` leaves: chat template, query and answer
    (a chain of thought of a few hundred tokens and its ``Diagnosis:`` line)."""
    rvls2m: RVLS2MConfig = field(default_factory=RVLS2MConfig)
    """RVLS2M on/off for training and inference, τ strategy, grid, k."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Eq. 10's weights λ_txt, λ_mask, λ_bce, λ_dice."""
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    """What trains (LoRA r/α/dropout/targets, ``lm_head``, mask decoder, ϕ, ...)."""

    def __post_init__(self) -> None:
        if self.token_grid is not None:
            self.token_grid = [int(v) for v in self.token_grid]
            if len(self.token_grid) != 2 or min(self.token_grid) < 1:
                raise ValueError(f"token_grid must be two positive integers, got {self.token_grid}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if self.text_budget < 8:
            raise ValueError(f"text_budget must be >= 8, got {self.text_budget}")

    def model_config(self) -> Sim4SegConfig:
        """A copy holding only the model's own fields (what is saved beside the weights)."""
        return Sim4SegConfig(**{f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(Sim4SegConfig)})

    def to_json(self) -> dict:
        return {**to_dict(self.model_config()), "model_type": MODEL_TYPE}

    @classmethod
    def from_json(cls, d: dict, source: str | os.PathLike | None = None) -> Sim4SegConfig:
        d = dict(d)
        if d.pop("model_type", None) != MODEL_TYPE:
            raise InputError(f"not a Sim4Seg config (model_type is not {MODEL_TYPE!r})", source)
        return from_dict(cls, d, source)

    def save(self, directory: str | os.PathLike) -> None:
        write_json(Path(directory) / CONFIG_FILE, self.to_json())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Sim4SegConfig:
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise InputError(f"not a Sim4Seg checkpoint: {CONFIG_FILE} not found", directory)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON: {e.msg}", path, e.lineno) from None
        except UnicodeDecodeError as e:
            raise InputError(f"not UTF-8 text ({e.reason})", path) from None
        if not isinstance(d, dict):
            raise InputError("expected a JSON object", path)
        return cls.from_json(d, path)
