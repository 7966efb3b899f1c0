"""Inference: a ``Predictor`` that encodes an image once and answers many queries about it.

``set_image`` runs the LVLM's vision tower + projector and SAM's image encoder once and caches
both (``ImageEncoding``); each ``predict(query)`` then costs the language model's generation
and SAM's light mask decoder only — with test-time scaling (``TTSConfig``), m sampled answers
in one ``generate`` call and m×n candidate masks decoded in batches against the cached SAM
embedding. ``write_result`` writes the mask PNG at the original size, an overlay PNG and a
JSON record; ``predict_split`` (in ``infer/batch.py``) runs over a manifest split.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sim4seg.data.dataset import ExampleEncoder, lvlm_token_box, sam_frame
from sim4seg.data.io import read_image
from sim4seg.infer.tts import TTSConfig, TTSResult, run
from sim4seg.errors import InputError
from sim4seg.eval.figures import overlay  # re-exported as sim4seg.infer.predictor.overlay

log = logging.getLogger(__name__)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """``(model, processor)`` from a Sim4Seg checkpoint directory (``sim4seg_config.json`` + weights),
    e.g. a training run's ``final/``."""
    from sim4seg.model.config import CONFIG_FILE

    d = Path(path)
    if not d.exists():
        raise InputError("checkpoint directory not found", d)
    if not d.is_dir():
        raise InputError("not a checkpoint directory (a file was given)", d)
    if (d / CONFIG_FILE).is_file():
        from sim4seg.model.checkpoint import load

        return load(d, device=device, dtype=dtype, trainable=False)
    raise InputError(f"not a Sim4Seg checkpoint directory ({CONFIG_FILE} missing; a training run's model is "
                     "in its final/ folder)", d)


@dataclass
class Prediction:
    """One answered query."""

    answer: str
    diagnosis: str | None
    """The voted label (m = 1: the answer's own), ``None`` if unparseable."""
    confidence: float
    seg: bool
    """Whether [SEG] was produced (no [SEG]: an empty mask)."""
    mask: np.ndarray
    """(H, W) bool at the original image size."""
    tts: dict
    timings: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict:
        return {"answer": self.answer, "diagnosis": self.diagnosis, "confidence": self.confidence, "seg": self.seg,
                "mask_area": int(self.mask.sum()), "tts": self.tts, "timings": self.timings}


class Predictor:
    """``set_image(image)`` once, then ``predict(query)`` any number of times."""

    def __init__(self, model, processor, tts: TTSConfig | None = None):
        self.model, self.processor = model.eval(), processor
        self.tokenizer = processor.tokenizer
        self.encoder = ExampleEncoder.for_model(model, processor)
        self.tts = tts or TTSConfig()
        self.image: np.ndarray | None = None
        self.encoding = None
        self.timings: dict[str, float] = {}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, tts: TTSConfig | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "Predictor":
        model, processor = load_model(path, device=device, dtype=dtype)
        return cls(model, processor, tts)

    # ------------------------------------------------------------------ image

    @torch.no_grad()
    def set_image(self, image: np.ndarray | str | os.PathLike) -> None:
        """Encode ``image`` ((H, W, 3) uint8 RGB, or a JPEG/PNG/DICOM path) once for the queries that follow."""
        t0 = time.perf_counter()
        if not isinstance(image, np.ndarray):
            image = read_image(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"the image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        pixels = self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        self.encoding = self.model.encode_image(
            pixels, sam_frame(image, self.model.sam_size)[None], torch.tensor([[h, w]]),
            torch.tensor([lvlm_token_box(self.processor.image_processor, (h, w))], dtype=torch.float32))
        self.image = image
        self.timings = {"read_encode_s": time.perf_counter() - t0}

    def prompt_ids(self, query: str) -> torch.Tensor:
        """The tokenized chat prompt ``(1, T)`` with the image placeholder expanded to the image's tokens."""
        if not query or not query.strip():
            raise InputError("the query is empty")
        n = self.encoding.lvlm_features.shape[1]
        token = self.processor.image_token
        text = self.encoder.prompt(query.strip()).replace(token, token * n)
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"]
        limit = self.model.config.max_length
        if ids.shape[1] > limit:
            raise InputError(f"the query is too long: the prompt is {ids.shape[1]} tokens ({n} of them the image's), "
                             f"over the model's context length of {limit}")
        room = int(self.model.lvlm.config.text_config.max_position_embeddings)
        if ids.shape[1] + self.tts.max_new_tokens > room:
            raise InputError(f"the prompt ({ids.shape[1]} tokens) plus {self.tts.max_new_tokens} new tokens exceeds "
                             f"the language model's {room} positions; shorten the query")
        return ids

    # ------------------------------------------------------------------ queries

    def predict(self, query: str, *, subset: str | None = None, parser=None, gt: np.ndarray | None = None,
                tts: TTSConfig | None = None, use_rvls2m: bool | None = None, **overrides) -> Prediction:
        """Answer ``query`` about the current image. ``parser`` (``DiagnosisParser``) and ``subset`` map the
        answer onto a label set (default: the ``Diagnosis:`` line as written); ``gt`` only for ``oracle``."""
        if self.encoding is None:
            raise InputError("no image: call set_image() before predict()")
        cfg = tts or self.tts
        ids = self.prompt_ids(query)
        parse = None
        if parser is not None and subset is not None:
            parse = lambda a: parser.label(a, subset)  # noqa: E731
        gt_t = None if gt is None else torch.as_tensor(np.asarray(gt, dtype=bool))
        t0 = time.perf_counter()
        res: TTSResult = run(self.model, self.tokenizer, ids, torch.ones_like(ids), self.encoding, cfg, parse=parse,
                             gt=gt_t, use_rvls2m=use_rvls2m, **overrides)
        timings = {**self.timings, **res.timings, "predict_s": time.perf_counter() - t0}
        return Prediction(res.answer, res.diagnosis.label, res.diagnosis.confidence, res.seg, res.mask.numpy(),
                          res.details(cfg), timings)


# ---------------------------------------------------------------------- outputs


def write_result(pred: Prediction, image: np.ndarray, out: str | os.PathLike, stem: str = "prediction",
                 extra: dict | None = None) -> dict[str, Path]:
    """Write ``stem_mask.png`` (original size), ``stem_overlay.png`` and ``stem.json`` to ``out``."""
    from sim4seg._atomic import write_json
    from sim4seg.data.io import write_image, write_mask

    out = Path(out)
    paths = {"mask": out / f"{stem}_mask.png", "overlay": out / f"{stem}_overlay.png", "json": out / f"{stem}.json"}
    write_mask(paths["mask"], pred.mask)
    write_image(paths["overlay"], overlay(image, pred.mask))
    write_json(paths["json"], {**(extra or {}), **pred.record(), "mask": paths["mask"].name,
                               "overlay": paths["overlay"].name})
    return paths
