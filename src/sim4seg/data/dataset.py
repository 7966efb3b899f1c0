"""M3DS records → Sim4Seg model inputs (``Sim4SegModel.forward`` consumes ``Collator``'s batches).

One example holds both image frames and the text:

- the LVLM frame: the processor's ``pixel_values`` (e.g. LLaVA-1.5: shortest side → 336, centre
  crop), with ``token_box`` saying where that frame's token grid lies in the original image;
  a dynamic-resolution processor (Qwen-VL) gives the image's flattened patches instead, and
  ``image_grid_thw`` their grid (the collator concatenates the patches and stacks the grids);
- the segmenter's frame, its checkpoint's own preprocessing (``SegmenterFrame``): SAM's and MedSAM's
  longest side → the input size, zero-padded bottom-right (mean/std; MedSAM's [0, 1] and bicubic), or
  SAM2's whole image stretched to the square;
- the chat prompt with the image placeholder (expanded by the processor to one token per
  image feature) followed by the answer in the chosen format (``plain`` / ``diagnosis`` /
  ``cot``) and EOS; ``labels`` are -100 everywhere but on the answer tokens;
- the ground-truth mask at the original size.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from sim4seg.data.io import read_image, read_mask
from sim4seg.data.prompts import SEG_TOKEN
from sim4seg.data.schema import ANSWER_FORMATS, Sample, read_info, read_split
from sim4seg.data.transforms import SegmenterFrame, lvlm_token_box, sam_frame
from sim4seg.errors import InputError

log = logging.getLogger(__name__)


class ExampleEncoder:
    """(image, query, answer, mask) → one example dict. Also what a Predictor uses for new images."""

    def __init__(
        self,
        processor,
        *,
        sam_size: int,
        max_length: int = 512,
        seg_token: str = SEG_TOKEN,
        sam_frame: SegmenterFrame | None = None,
    ):
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.sam_size, self.max_length, self.seg_token = sam_size, max_length, seg_token
        self.sam_frame = sam_frame or SegmenterFrame(size=sam_size)
        if self.sam_frame.size != sam_size:
            raise ValueError(f"sam_frame resizes to {self.sam_frame.size} px, sam_size is {sam_size}")
        self.image_token_id = processor.image_token_id

    @classmethod
    def for_model(cls, model, processor) -> ExampleEncoder:
        """The encoder a model's checkpoint implies: its processor, segmenter frame and ``max_length``."""
        return cls(
            processor,
            sam_size=model.sam_size,
            max_length=model.max_length,
            seg_token=model.config.seg_token,
            sam_frame=model.sam_frame,
        )

    def prompt(self, query: str) -> str:
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query}]}]
        return self.processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)

    def image_inputs(self, image: np.ndarray, lvlm_inputs: dict | None = None) -> dict:
        """The image in both frames: the LVLM's ``pixel_values`` (and, dynamic resolution, ``image_grid_thw``)
        from its processor's output ``lvlm_inputs`` (its image processor's when not given), ``sam_pixel_values``
        (3, S, S), ``image_size`` (H, W) and ``token_box`` (x0, y0, x1, y1)."""
        h, w = image.shape[:2]
        if lvlm_inputs is None:
            lvlm_inputs = self.processor.image_processor(images=image, return_tensors="pt")
        return {
            **lvlm_image(lvlm_inputs),
            "sam_pixel_values": sam_frame(image, self.sam_size, self.sam_frame),
            "image_size": torch.tensor([h, w]),
            "token_box": torch.tensor(lvlm_token_box(self.processor.image_processor, (h, w)), dtype=torch.float32),
        }

    def prompt_ids(self, query: str, n_image_tokens: int, *, name: str = "") -> torch.Tensor:
        """The tokenized chat prompt ``(T,)`` with the image placeholder expanded to ``n_image_tokens`` tokens."""
        token = self.processor.image_token
        text = self.prompt(query).replace(token, token * n_image_tokens)
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"][0]  # special tokens as the processor adds them
        return self._check_prompt(ids, name)

    def _check_prompt(self, ids: torch.Tensor, name: str) -> torch.Tensor:
        if not bool((ids == self.image_token_id).any()):
            raise InputError(
                "the chat prompt holds no image token; the processor's chat template must place the image placeholder",
                name or None,
            )
        if len(ids) > self.max_length:
            n = int((ids == self.image_token_id).sum())
            raise InputError(
                f"the prompt is {len(ids)} tokens ({n} of them the image's), over max_length="
                f"{self.max_length}; set model.max_length >= {len(ids)} plus the answer's tokens",
                name or None,
            )
        return ids

    def _check_grid(self, ids: torch.Tensor, image_grid_thw: torch.Tensor, name: str) -> None:
        """A dynamic-resolution prompt must hold exactly the image's merged patch grid in image tokens."""
        merge = int(getattr(self.processor.image_processor, "merge_size", 1) or 1)
        n = int((ids == self.image_token_id).sum())
        t, h, w = (int(v) for v in image_grid_thw.flatten()) if image_grid_thw.numel() == 3 else (0, 0, 0)
        if not t or h % merge or w % merge or t * h * w // merge**2 != n:
            raise InputError(
                f"the image's patch grid image_grid_thw {image_grid_thw.tolist()} (merge {merge}) does not match "
                f"the {n} image tokens of its prompt; the processor's image and text sides disagree",
                name or None,
            )

    def encode(
        self,
        image: np.ndarray,
        query: str,
        answer: str | None = None,
        mask: np.ndarray | None = None,
        *,
        name: str = "",
    ) -> dict:
        prompt = self.prompt(query)
        enc = self.processor(images=image, text=prompt, return_tensors="pt")
        prompt_ids = self._check_prompt(enc["input_ids"][0], name)
        if "image_grid_thw" in enc:
            self._check_grid(prompt_ids, enc["image_grid_thw"], name)
        ids, labels, seg_count = prompt_ids, None, 0
        if answer is not None:
            sep = "" if prompt[-1:].isspace() else " "  # "ASSISTANT: answer", but Qwen's "assistant\nanswer"
            ans = self.tokenizer(
                sep + answer.strip() + self.tokenizer.eos_token, add_special_tokens=False, return_tensors="pt"
            )["input_ids"][0]
            ids = torch.cat([prompt_ids, ans])
            labels = torch.cat([torch.full_like(prompt_ids, -100), ans])
            seg_id = self.tokenizer.convert_tokens_to_ids(self.seg_token)
            seg_count = int((ans == seg_id).sum())
            if len(ids) > self.max_length:
                ids, labels = ids[: self.max_length], labels[: self.max_length]
                kept = int((ids == seg_id).sum())
                if kept < seg_count:
                    raise InputError(
                        f"the sequence is truncated before [SEG] at max_length={self.max_length} "
                        f"({kept} of {seg_count} kept); raise max_length",
                        name or None,
                    )
        h, w = image.shape[:2]
        if mask is not None and tuple(mask.shape) != (h, w):
            raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}", name or None)
        return {
            "input_ids": ids,
            "labels": labels,
            **self.image_inputs(image, enc),
            "mask": None if mask is None else torch.from_numpy(np.asarray(mask, dtype=bool)),
            "seg_count": seg_count,
        }


def lvlm_image(inputs) -> dict:
    """One image of a processor's output: ``pixel_values`` (3, h, w), or, when the processor gives
    ``image_grid_thw`` (dynamic resolution), all its flattened patches and its grid ``(t, h, w)``."""
    if "image_grid_thw" in inputs:
        thw = inputs["image_grid_thw"]
        if thw.shape[0] != 1:
            raise ValueError(f"one image expected, the processor gave {thw.shape[0]} patch grids")
        return {"pixel_values": inputs["pixel_values"], "image_grid_thw": thw[0]}
    return {"pixel_values": inputs["pixel_values"][0]}


def stack_images(items: list[dict]) -> dict:
    """B examples' image inputs → ``encode_image``'s batch: ``pixel_values`` stacked (fixed grid) or
    concatenated with ``image_grid_thw`` stacked (dynamic resolution), ``sam_pixel_values``,
    ``image_sizes`` and ``token_boxes`` stacked."""
    dynamic = ["image_grid_thw" in it for it in items]
    if any(dynamic) and not all(dynamic):
        raise ValueError("a batch mixes fixed-grid images and dynamic-resolution ones")
    out = {
        "pixel_values": torch.cat([it["pixel_values"] for it in items])
        if all(dynamic)
        else torch.stack([it["pixel_values"] for it in items]),
        "sam_pixel_values": torch.stack([it["sam_pixel_values"] for it in items]),
        "image_sizes": torch.stack([it["image_size"] for it in items]),
        "token_boxes": torch.stack([it["token_box"] for it in items]),
    }
    if all(dynamic):
        out["image_grid_thw"] = torch.stack([it["image_grid_thw"] for it in items])
    return out


def select_subsets(
    samples: list[Sample], subsets: Sequence[str] | None, known: Sequence[str], *, where: str | os.PathLike = ""
) -> list[Sample]:
    """The samples of ``subsets`` (all with ``None``), checked against the manifest's ``known`` subsets.

    A listed subset the manifest does not have is an ``InputError`` that lists what it has; a
    listed subset without samples in this split, and the samples of subsets present but not
    listed (they are left out), are named in a warning.
    """
    if subsets is None:
        return list(samples)
    present: dict[str, int] = {}
    for s in samples:
        present[s.subset] = present.get(s.subset, 0) + 1
    have = set(known) | set(present)
    unknown = sorted(set(subsets) - have)
    if unknown:
        raise InputError(
            f"subset(s) {unknown} of data.subsets are not in this manifest; it has: {', '.join(sorted(have))}",
            where or None,
        )
    empty = sorted(set(subsets) - set(present))
    if empty:
        log.warning("%s: no samples of subset(s) %s", where, empty)
    left_out = {k: v for k, v in sorted(present.items()) if k not in set(subsets)}
    if left_out:
        log.warning(
            "%s: %d of %d sample(s) left out: subset(s) present but not listed in data.subsets: %s",
            where,
            sum(left_out.values()),
            len(samples),
            ", ".join(f"{k} ({v})" for k, v in left_out.items()),
        )
    return [s for s in samples if s.subset in set(subsets)]


class M3DSDataset(torch.utils.data.Dataset):
    """A split of an M3DS manifest as model examples, with the answer in ``answer_format``."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        encoder: ExampleEncoder,
        *,
        answer_format: str = "diagnosis",
        subsets: Sequence[str] | None = None,
        samples: list[Sample] | None = None,
        cache_mb: float = 0,
    ):
        if answer_format not in ANSWER_FORMATS:
            raise InputError(f"answer format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
        self.root, self.split, self.encoder, self.answer_format = Path(root), split, encoder, answer_format
        known: Sequence[str] = ()
        if samples is None:
            info = read_info(self.root)
            samples, known = read_split(self.root, split, info), list(info.subsets)
        self.samples = select_subsets(samples, subsets, known, where=self.root / f"{split}.jsonl")
        self.cache_bytes = int(cache_mb * 2**20)
        """Encoded examples kept in memory up to this size (0: none): later epochs skip decoding and encoding."""
        self._cache: dict[int, dict] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.samples)

    def answer(self, s: Sample) -> str:
        text = s.answers.get(self.answer_format)
        if not text:
            raise InputError(
                f"sample {s.id} has no {self.answer_format!r} answer (generate CoT with `sim4seg cot`, "
                "or choose the 'diagnosis' format)",
                self.root / f"{self.split}.jsonl",
            )
        return text

    def __getitem__(self, i: int) -> dict:
        if i in self._cache:
            return dict(self._cache[i])
        s = self.samples[i]
        image = read_image(self.root / s.image)
        mask = read_mask(self.root / s.mask)
        item = self.encoder.encode(image, s.query, self.answer(s), mask, name=str(self.root / s.image))
        item["meta"] = {"id": s.id, "subset": s.subset, "diagnosis": s.diagnosis}
        size = sum(v.nbytes for v in item.values() if isinstance(v, torch.Tensor))
        if self._cached_bytes + size <= self.cache_bytes:  # encoding is deterministic: a cached copy is exact
            self._cache[i], self._cached_bytes = item, self._cached_bytes + size
            return dict(item)
        return item


class Collator:
    """Examples → the batch ``Sim4SegModel.forward`` takes. Right padding for training, left for generation."""

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.pad_token_id, self.padding_side = pad_token_id, padding_side

    def _pad(self, seqs: list[torch.Tensor], value: int) -> torch.Tensor:
        t = max(len(s) for s in seqs)
        out = torch.full((len(seqs), t), value, dtype=torch.long)
        for i, s in enumerate(seqs):
            if self.padding_side == "right":
                out[i, : len(s)] = s
            else:
                out[i, t - len(s) :] = s
        return out

    def __call__(self, items: list[dict]) -> dict:
        ids = [it["input_ids"] for it in items]
        batch = {
            "input_ids": self._pad(ids, self.pad_token_id),
            "attention_mask": self._pad([torch.ones_like(s) for s in ids], 0),
            **stack_images(items),
            "seg_counts": torch.tensor([it["seg_count"] for it in items]),
            "meta": {k: [it.get("meta", {}).get(k) for it in items] for k in ("id", "subset", "diagnosis")},
        }
        if all(it["labels"] is not None for it in items):
            batch["labels"] = self._pad([it["labels"] for it in items], -100)
        if all(it["mask"] is not None for it in items):
            batch["masks"] = [it["mask"] for it in items]
        return batch


class SubsetMixSampler(torch.utils.data.Sampler[int]):
    """Draws ``num_samples`` indices per epoch with subset ``rates`` (relative weights; default: by size).

    A subset's share of the draws is its rate over the sum of rates; items within a subset are
    equally likely. Deterministic in ``(seed, epoch)``; call ``set_epoch`` each epoch.
    """

    def __init__(
        self,
        subsets: Sequence[str],
        rates: dict[str, float] | None = None,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        replacement: bool = True,
    ):
        self.subsets = list(subsets)
        counts: dict[str, int] = {}
        for s in self.subsets:
            counts[s] = counts.get(s, 0) + 1
        if rates is None:
            rates = {s: float(n) for s, n in counts.items()}
        unknown = sorted(set(rates) - set(counts))
        if unknown:
            raise InputError(f"mixing rates name subset(s) with no samples: {unknown}; present: {sorted(counts)}")
        if any(r < 0 for r in rates.values()) or not any(rates.get(s, 0) > 0 for s in counts):
            raise InputError(f"mixing rates must be >= 0 with at least one > 0, got {rates}")
        self.weights = torch.tensor([rates.get(s, 0.0) / counts[s] for s in self.subsets], dtype=torch.float64)
        self.num_samples = num_samples or len(self.subsets)
        self.seed, self.epoch, self.replacement = seed, 0, replacement
        if not replacement and self.num_samples > int((self.weights > 0).sum()):
            raise InputError(f"cannot draw {self.num_samples} distinct samples from {int((self.weights > 0).sum())}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        idx = torch.multinomial(self.weights, self.num_samples, replacement=self.replacement, generator=g)
        return iter(idx.tolist())


def expected_share(subsets: Sequence[str], rates: dict[str, float]) -> dict[str, float]:
    """The share of draws each subset gets under ``rates`` (for reports and tests)."""
    present = {s for s in subsets}
    total = sum(r for s, r in rates.items() if s in present)
    return {s: rates.get(s, 0.0) / total for s in sorted(present)} if total > 0 else {s: math.nan for s in present}
