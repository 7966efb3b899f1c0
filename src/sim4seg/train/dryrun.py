"""``sim4seg train --dry-run``: what a recipe needs, before any GPU hour.

The dry run checks the data exactly as a run does (``task.check_data``), builds the model on
PyTorch's **meta** device (shapes only: no weight is allocated or downloaded; the tiny preset is
built for real, it is small), encodes the first N training samples and reports:

* token lengths against ``max_length`` (prompt, of which image tokens, answer, total);
* parameters, total and trainable, per part of the model;
* the memory per GPU the recipe needs under DDP, ZeRO-2 and ZeRO-3 on 1, 4 and 8 GPUs — an
  **estimate** from the formulas below, not a measurement;
* optimizer steps per epoch.

Where the configs come from: ``model.init_from``'s checkpoint directory; the preset's
``model.lvlm`` / ``model.sam`` (local path or hub id, when reachable); else the configs written
from the checkpoints' published values (``sim4seg.model.published``). The processor (tokenizer,
image processor) comes from the same place; without one (offline, a published config) the image
tokens per sample are read from the config and the text is not measured — the report says so.

Memory formulas (bytes per GPU; ``P`` all parameters, ``T`` trainable ones, ``N`` GPUs,
``w`` bytes per weight of ``model.dtype``)::

    weights     W = P · w
    gradients   G = T · w                         (a gradient has its parameter's dtype)
    optimizer   O = T · 8  (+ T · 4 if w < 4)     (AdamW's two moments in fp32, plus an fp32
                                                   master copy of bf16 weights, as DeepSpeed keeps)
    activations A = L · 34 · s · b · h · a_b  +  b · s · V · (4 + 2 · a_b)
                A_ckpt = L · 2 · s · b · h · a_b  +  34 · s · b · h · a_b  +  b · s · V · (4 + 2 · a_b)

    DDP     W + G + O + A        ZeRO-2   W + (G + O) / N + A        ZeRO-3   (W + G + O) / N + A

Under DDP ``w`` is ``model.dtype``'s size (bf16 autocast computes in bf16 but keeps the weights
as loaded). Under ZeRO with ``train.precision: bf16`` DeepSpeed holds the weights and gradients
in bf16 (``w = 2``) and keeps the fp32 master copy in the optimizer (``O = T · 12``), so the ZeRO
rows use those sizes.

The activation term is the language model's (the frozen vision tower and SAM encoder run
without storing activations for backward): per decoder layer ``34·s·b·h`` bytes at 16-bit
(Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
Eq. 2, without its ``5·a·s/h`` attention-score term: SDPA / FlashAttention do not store the
``s×s`` scores); ``a_b`` = 1 under bf16 autocast, 2 in fp32 (the 34 counts 16-bit bytes). With
activation checkpointing only each layer's input (``2·s·b·h·a_b`` bytes) is kept, plus one
layer recomputed at a time. The logits ``b·s·V`` are held in the compute dtype and in fp32 for
the loss. ``s`` is ``max_length``, ``b`` ``optim.batch_size``, ``h`` / ``L`` / ``V`` the LLM's width,
depth and vocabulary. Not counted: CUDA context and allocator fragmentation (budget ~1–3 GB),
SAM's mask decoder and ϕ activations (small), DeepSpeed's communication buckets.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sim4seg.errors import InputError
from sim4seg.train.recipe import Config

log = logging.getLogger(__name__)

GPUS = (1, 4, 8)
STRATEGIES = ("DDP", "ZeRO-2", "ZeRO-3")


@dataclass
class Part:
    name: str
    total: int
    trainable: int


@dataclass
class SampleLength:
    id: str
    image: int
    prompt: int
    answer: int | None

    @property
    def total(self) -> int | None:
        return None if self.answer is None else self.prompt + self.answer


@dataclass
class DryRun:
    """What ``dry_run`` found; ``format_report`` renders it."""

    model_source: str
    meta: bool
    max_length: int
    parts: list[Part]
    lengths: list[SampleLength]
    text_note: str | None
    memory: dict[str, float]
    """The per-GPU terms in bytes (DDP): weights, gradients, optimizer, activations, activations_ckpt."""
    memory_zero: dict[str, float]
    """The same under DeepSpeed ZeRO (bf16 weights and gradients when ``train.precision`` is bf16)."""
    per_gpu: dict[tuple[str, int], tuple[float, float]]
    """(strategy, GPUs) → (bytes without, with activation checkpointing)."""
    steps_per_epoch: dict[int, int]
    n_train: int
    n_val: int | None
    data_root: Path
    subsets: list[str]
    answer_format: str
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.total for p in self.parts)

    @property
    def trainable(self) -> int:
        return sum(p.trainable for p in self.parts)


# ---------------------------------------------------------------------------- the model, on the meta device


def _configs(config: Config):
    """``(LVLM config, SAM config, processor or None, where they came from, notes)`` for a real preset."""
    from transformers import AutoConfig

    from sim4seg.model import published
    from sim4seg.model.backbones import lvlm_adapter, segmenter_adapter
    from sim4seg.model.checkpoint import load_processor, read_json
    from sim4seg.model.presets import PRESETS, load_lvlm_processor

    m, notes = config.model, []
    if m.init_from:
        d = Path(m.init_from)
        if not (d / "lvlm" / "config.json").is_file() or not (d / "sam" / "config.json").is_file():
            raise InputError(
                "model.init_from is not a Sim4Seg checkpoint directory (lvlm/ and sam/ configs missing)", d
            )
        kind = read_json(d / "sam" / "config.json", "the segmenter's config").get("model_type")
        return (
            AutoConfig.from_pretrained(d / "lvlm"),
            segmenter_adapter(kind, d / "sam").config_from_pretrained(d / "sam"),
            load_processor(d),
            f"the checkpoint {d} (model.init_from)",
            notes,
        )
    if m.preset not in PRESETS:
        raise InputError(f"unknown preset {m.preset!r}; known: tiny, {', '.join(PRESETS)}")
    p = PRESETS[m.preset]
    lvlm_src, sam_src = m.lvlm or p.lvlm, m.sam or p.sam
    if not p.lisa:
        try:
            lvlm_cfg, sam_kind = AutoConfig.from_pretrained(lvlm_src), AutoConfig.from_pretrained(sam_src)
            lvlm_adapter(lvlm_cfg, lvlm_src)  # an LVLM or segmenter no adapter knows is an error, not "unreachable"
            sam_cfg = segmenter_adapter(sam_kind, sam_src).config_from_pretrained(sam_src)  # e.g. sam2_video → Sam2
        except InputError:
            raise
        except (OSError, ValueError) as e:
            if m.preset not in published.PUBLISHED:
                raise InputError(
                    f"cannot read the configs of {lvlm_src} + {sam_src} ({type(e).__name__}) and no "
                    "published configs are written for this preset; give model.lvlm / model.sam as local "
                    "directories"
                ) from None
            notes.append(
                f"configs of {lvlm_src} + {sam_src} not reachable ({type(e).__name__}); used the published "
                "values (sim4seg.model.published)"
            )
        else:
            try:
                processor = load_lvlm_processor(lvlm_adapter(lvlm_cfg, lvlm_src), lvlm_src, p.max_pixels)
            except InputError as e:
                processor = None
                notes.append(f"no processor from {lvlm_src} ({e})")
            return lvlm_cfg, sam_cfg, processor, f"{lvlm_src} + {sam_src}", notes
    lvlm_fn, sam_fn = published.PUBLISHED[m.preset]
    return (lvlm_fn(), sam_fn(), None, f"the published configs of preset {m.preset!r} (sim4seg.model.published)", notes)


def build_meta_model(config: Config):
    """``(model, processor or None, source, on_meta, notes)``: the recipe's model with what trains set."""
    from sim4seg.model.backbones import LVLM_FAMILIES, lvlm_adapter, variant
    from sim4seg.model.compose import apply_trainable
    from sim4seg.model.presets import PRESETS
    from sim4seg.model.sim4seg import Sim4SegModel

    m = config.model
    if m.preset == "tiny" and not m.init_from:
        from sim4seg.train.task import build_model

        model, processor = build_model(config)
        return model, processor, "the tiny preset (built for real: it is small)", False, []
    from transformers import AutoModelForImageTextToText

    from sim4seg.model.backbones import segmenter_adapter

    lvlm_cfg, sam_cfg, processor, source, notes = _configs(config)
    sim_cfg = config.sim4seg_config()
    with torch.device("meta"):
        lvlm = AutoModelForImageTextToText.from_config(lvlm_cfg)
        sam = segmenter_adapter(sam_cfg).from_config(sam_cfg)
        vocab = lvlm.get_input_embeddings().num_embeddings
        seg_id = vocab - 1
        if processor is not None:
            tok = processor.tokenizer
            if sim_cfg.seg_token not in tok.get_vocab():
                tok.add_tokens([sim_cfg.seg_token], special_tokens=False)
            seg_id = tok.convert_tokens_to_ids(sim_cfg.seg_token)
            if seg_id >= vocab:
                lvlm.resize_token_embeddings(len(tok), mean_resizing=False)
        la = lvlm_adapter(lvlm)
        image_tokens = None  # a fixed grid: the adapter's count
        if processor is not None:
            image_tokens = la.image_tokens(lvlm, processor)
        elif la.dynamic_resolution:  # the most one image takes under the preset's pixel budget
            image_tokens = variant(LVLM_FAMILIES, PRESETS[m.preset].lvlm_variant)[1].image_tokens
        model = Sim4SegModel(lvlm, sam, sim_cfg, seg_token_id=seg_id, image_tokens=image_tokens)
        apply_trainable(model, sim_cfg.trainable)
    return model, processor, source, True, notes


def count_parts(model) -> list[Part]:
    """Parameters per part (LoRA counted apart from the LLM it adapts); every parameter in exactly one part."""
    lvlm = model.lvlm
    lvlm_parts = model.lvlm_adapter.parts(lvlm)
    groups = [
        ("LVLM vision tower", lvlm_parts["vision_tower"]),
        ("LVLM projector", lvlm_parts["mm_projector"]),
        ("LLM embeddings", lvlm.get_input_embeddings()),
        ("LLM lm_head", lvlm.lm_head),
        ("LLM (decoder)", lvlm.model.language_model),
        ("ϕ (projection)", model.phi),
    ]
    seg = model.seg_adapter.parts(model.sam)  # SAM's and SAM2's modules under the names TrainableConfig uses
    groups += [
        ("SAM image encoder", seg["sam_encoder"]),
        ("SAM prompt encoder", seg["prompt_encoder"]),
        ("SAM mask decoder", seg["mask_decoder"]),
    ]
    owner: dict[int, str] = {}
    for name, module in sorted(groups, key=lambda g: g[0] != "LVLM projector"):  # Qwen's merger is in its ViT
        for p in module.parameters():
            owner.setdefault(id(p), name)
    counts: dict[str, list[int]] = {name: [0, 0] for name, _ in groups}
    counts["LLM LoRA"] = [0, 0]
    counts["other"] = [0, 0]
    seen = set()
    for pname, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        key = "LLM LoRA" if "lora_" in pname else owner.get(id(p), "other")
        counts[key][0] += p.numel()
        counts[key][1] += p.numel() if p.requires_grad else 0
    return [Part(k, v[0], v[1]) for k, v in counts.items() if v[0]]


# ---------------------------------------------------------------------------- memory and steps


def memory_terms(
    parts: list[Part], *, weight_bytes: int, hidden: int, layers: int, vocab: int, seq: int, batch: int, bf16: bool
) -> dict[str, float]:
    """The per-GPU byte terms of the module docstring's formulas (unsharded)."""
    total, trainable = sum(p.total for p in parts), sum(p.trainable for p in parts)
    ab = 1 if bf16 else 2  # activation bytes / 2 (the 34 counts 16-bit bytes)
    layer = 34 * seq * batch * hidden * ab
    logits = batch * seq * vocab * (4 + 2 * ab)
    return {
        "weights": total * weight_bytes,
        "gradients": trainable * weight_bytes,
        "optimizer": trainable * (8 + (4 if weight_bytes < 4 else 0)),
        "activations": layers * layer + logits,
        "activations_ckpt": layers * 2 * seq * batch * hidden * ab + layer + logits,
    }


def per_gpu(terms: dict[str, float], strategy: str, n: int) -> tuple[float, float]:
    """(bytes without, with activation checkpointing) per GPU for ``strategy`` on ``n`` GPUs (``terms``: that
    strategy's own, see ``memory_terms``)."""
    w, g, o = terms["weights"], terms["gradients"], terms["optimizer"]
    if strategy == "DDP":
        states = w + g + o
    elif strategy == "ZeRO-2":
        states = w + (g + o) / n
    elif strategy == "ZeRO-3":
        states = (w + g + o) / n
    else:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return states + terms["activations"], states + terms["activations_ckpt"]


def steps_per_epoch(n_samples: int, batch: int, grad_accum: int, gpus: int) -> int:
    """Optimizer steps per epoch: ``⌈⌈n / (batch · gpus)⌉ / grad_accum⌉`` (the loop's own rule)."""
    return math.ceil(math.ceil(n_samples / (batch * gpus)) / grad_accum)


# ---------------------------------------------------------------------------- the dry run


def _lengths(config: Config, model, processor, samples, root: Path) -> list[SampleLength]:
    from sim4seg.data.dataset import ExampleEncoder
    from sim4seg.data.io import read_image

    enc = ExampleEncoder(
        processor,
        sam_size=model.sam_size,
        max_length=10**9,
        seg_token=config.model.seg_token,
        sam_frame=model.sam_frame,
    )
    out = []
    fmt = config.data.answer_format
    for s in samples:
        item = enc.encode(read_image(root / s.image), s.query, s.answers.get(fmt), None, name=str(root / s.image))
        ids, labels = item["input_ids"], item["labels"]
        answer = int((labels != -100).sum())
        out.append(SampleLength(s.id, int((ids == enc.image_token_id).sum()), len(ids) - answer, answer))
    return out


def dry_run(config: Config, samples: int = 8) -> DryRun:
    """Check the data, build the model on the meta device, encode ``samples`` samples, account for memory."""
    from sim4seg.train.task import check_data

    if samples < 0:
        raise InputError(f"--dry-run-samples must be >= 0, got {samples}")
    checked = check_data(config)  # before the model, as a run does
    model, processor, source, meta, notes = build_meta_model(config)
    first = checked.train[:samples]
    text_note = None
    if processor is not None:
        lengths = _lengths(config, model, processor, first, checked.root)
    else:
        n_img = int(getattr(model.lvlm.config, "image_seq_length", 0) or model.image_tokens)
        lengths = [SampleLength(s.id, n_img, 0, None) for s in first]
        dynamic = " (dynamic resolution: the most one image takes)" if model.lvlm_adapter.dynamic_resolution else ""
        text_note = (
            "text not measured: no tokenizer for this model here (offline, published configs); image tokens "
            f"from the config{dynamic}. Give model.lvlm a local directory with the processor to measure."
        )
    parts = count_parts(model)
    text = model.lvlm.config.text_config
    dtype = getattr(torch, config.model.dtype)
    bf16 = config.train.precision == "bf16"
    geometry = dict(
        hidden=int(text.hidden_size),
        layers=int(text.num_hidden_layers),
        seq=model.max_length,
        vocab=model.lvlm.get_input_embeddings().num_embeddings,
        batch=config.optim.batch_size,
        bf16=bf16,
    )
    terms = memory_terms(parts, weight_bytes=torch.finfo(dtype).bits // 8, **geometry)
    zero = memory_terms(parts, weight_bytes=2 if bf16 else torch.finfo(dtype).bits // 8, **geometry)
    table = {(st, n): per_gpu(terms if st == "DDP" else zero, st, n) for st in STRATEGIES for n in GPUS}
    d, o = config.data, config.optim
    n_epoch = d.samples_per_epoch or len(checked.train)
    steps = {n: steps_per_epoch(n_epoch, o.batch_size, o.grad_accum, n) for n in GPUS}
    return DryRun(
        source,
        meta,
        model.max_length,
        parts,
        lengths,
        text_note,
        terms,
        zero,
        table,
        steps,
        len(checked.train),
        None if checked.val is None else len(checked.val),
        checked.root,
        sorted({s.subset for s in checked.train}),
        d.answer_format,
        notes,
    )


# ---------------------------------------------------------------------------- the report


def _gb(x: float) -> str:
    return f"{x / 1e9:8.1f}"


def format_report(r: DryRun, config: Config) -> str:
    o, t = config.optim, config.train
    lines = [f"model: {r.model_source}" + (" — on the meta device (no weights allocated)" if r.meta else "")]
    lines += [f"note: {n}" for n in r.notes]
    lines.append(
        f"data: {r.data_root}: {r.n_train} training sample(s) of {', '.join(r.subsets)} "
        f"({r.answer_format} answers); " + ("no validation" if r.n_val is None else f"{r.n_val} validation sample(s)")
    )
    lines.append(f"\ntoken lengths of the first {len(r.lengths)} training sample(s) (max_length {r.max_length}):")
    if r.lengths:
        lines.append(f"  {'id':<28} {'image':>6} {'prompt':>7} {'answer':>7} {'total':>7}")
        for s in r.lengths:
            ans = "-" if s.answer is None else str(s.answer)
            tot = "-" if s.total is None else str(s.total)
            flag = "  OVER max_length" if s.total is not None and s.total > r.max_length else ""
            lines.append(
                f"  {s.id:<28} {s.image:>6} {s.prompt if s.answer is not None else '-':>7} {ans:>7} {tot:>7}{flag}"
            )
        totals = [s.total for s in r.lengths if s.total is not None]
        if totals:
            over = sum(x > r.max_length for x in totals)
            lines.append(f"  longest {max(totals)} of max_length {r.max_length}: {over} of {len(totals)} over")
    if r.text_note:
        lines.append(f"  {r.text_note}")
    lines.append("\nparameters:")
    lines.append(f"  {'part':<22} {'total':>15} {'trainable':>15}")
    for p in r.parts:
        lines.append(f"  {p.name:<22} {p.total:>15,} {p.trainable:>15,}")
    lines.append(
        f"  {'all':<22} {r.total:>15,} {r.trainable:>15,}  ({100 * r.trainable / max(r.total, 1):.2f} % trainable)"
    )
    lines.append(
        f"\nmemory per GPU — ESTIMATE (formulas: sim4seg.train.dryrun), model.dtype {config.model.dtype}, "
        f"precision {t.precision}, batch {o.batch_size} × max_length {r.max_length}; unsharded terms:"
    )
    for name, m in (("DDP", r.memory), ("ZeRO", r.memory_zero)):
        lines.append(
            f"  {name + ':':<5} weights {m['weights'] / 1e9:.1f} GB, gradients {m['gradients'] / 1e9:.2f} GB, "
            f"optimizer {m['optimizer'] / 1e9:.2f} GB, activations {m['activations'] / 1e9:.2f} GB "
            f"({m['activations_ckpt'] / 1e9:.2f} GB with checkpointing)"
        )
    lines.append(f"  {'strategy':<8} {'GPUs':>4} {'GB/GPU':>8} {'GB/GPU (ckpt)':>14}")
    for (st, n), (a, b) in r.per_gpu.items():
        lines.append(f"  {st:<8} {n:>4} {_gb(a)} {_gb(b):>14}")
    lines.append(
        f"  (gradient checkpointing is {'on' if t.gradient_checkpointing else 'off'} in this recipe; "
        "add ~1-3 GB per GPU for the CUDA context and fragmentation)"
    )
    steps = ", ".join(f"{n} GPU{'s' if n > 1 else ''}: {s}" for n, s in r.steps_per_epoch.items())
    lines.append(
        f"\nsteps per epoch: {steps} (batch {o.batch_size} × grad_accum {o.grad_accum} per GPU; {o.epochs} epochs)"
    )
    return "\n".join(lines)
