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
from typing import TYPE_CHECKING

import numpy as np
import torch

from sim4seg.data.dataset import ExampleEncoder, stack_images
from sim4seg.data.io import read_image
from sim4seg.errors import InputError
from sim4seg.eval.figures import overlay  # re-exported as sim4seg.infer.predictor.overlay
from sim4seg.infer.tts import TTSConfig, TTSResult, run

if TYPE_CHECKING:
    from sim4seg.model.sim4seg import ImageEncoding

log = logging.getLogger(__name__)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """``(model, processor)`` from a Sim4Seg checkpoint directory (``sim4seg_config.json`` + weights),
    e.g. a training run's ``final/``."""
    from sim4seg._device import check_device
    from sim4seg.model.config import CONFIG_FILE

    device = check_device(device)
    d = Path(path)
    if not d.exists():
        raise InputError("checkpoint directory not found", d)
    if not d.is_dir():
        raise InputError("not a checkpoint directory (a file was given)", d)
    if (d / CONFIG_FILE).is_file():
        from sim4seg.model.checkpoint import load

        return load(d, device=device, dtype=dtype, trainable=False)
    raise InputError(
        f"not a Sim4Seg checkpoint directory ({CONFIG_FILE} missing; a training run's model is in its final/ folder)", d
    )


@dataclass
class Prediction:
    """One answered query."""

    answer: str
    diagnosis: str | None
    """The voted label (m = 1: the answer's own), ``None`` if unparseable."""
    confidence: float | None
    """Diagnosis agreement over the m sampled answers; ``None`` for a single (greedy) answer."""
    seg: bool
    """Whether [SEG] was produced (no [SEG]: an empty mask)."""
    mask: np.ndarray
    """(H, W) bool at the original image size."""
    tts: dict
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    """The reported answer reached ``max_new_tokens`` without EOS (raise it: ``--max-new-tokens``)."""
    uncertainty: np.ndarray | None = None
    """(H, W) float32: the fraction of the m×n candidate masks that disagree with ``mask`` at each
    pixel; ``None`` with a single candidate."""

    @property
    def uncertainty_mean(self) -> float | None:
        return None if self.uncertainty is None else float(self.uncertainty.mean())

    def record(self) -> dict:
        return {
            "answer": self.answer,
            "diagnosis": self.diagnosis,
            "confidence": self.confidence,
            "seg": self.seg,
            "truncated": self.truncated,
            "mask_area": int(self.mask.sum()),
            "uncertainty_mean": self.uncertainty_mean,
            "tts": self.tts,
            "timings": self.timings,
        }


class Predictor:
    """``set_image(image)`` once, then ``predict(query)`` any number of times."""

    def __init__(self, model, processor, tts: TTSConfig | None = None, subsets: dict | None = None):
        """``subsets``: ``{name: SubsetInfo}`` the model was trained on (its checkpoint's ``training.json``);
        ``None`` when unknown. ``predict(subset=...)`` parses answers into these label sets (else the paper's)."""
        from sim4seg.data.subsets import SUBSETS
        from sim4seg.eval.diagnosis import DiagnosisParser

        self.model, self.processor = model.eval(), processor
        self.subsets = subsets
        self.parser = DiagnosisParser({**SUBSETS, **(subsets or {})})
        self._warned: set[str] = set()
        self.tokenizer = processor.tokenizer
        self.encoder = ExampleEncoder.for_model(model, processor)
        self.tts = tts or TTSConfig()
        self.image: np.ndarray | None = None
        self.encoding = None
        self.timings: dict[str, float] = {}

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        tts: TTSConfig | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Predictor:
        from sim4seg.model.checkpoint import trained_subsets

        model, processor = load_model(path, device=device, dtype=dtype)
        return cls(model, processor, tts, subsets=trained_subsets(path))

    def check_subset(self, subset: str) -> None:
        """Raise on a subset with no known label set; warn (once) about one the checkpoint was not trained on."""
        if subset not in self.parser.subsets:
            raise InputError(
                f"unknown subset {subset!r}: no label set to parse the diagnosis into; known: "
                f"{', '.join(self.parser.subsets)}"
            )
        if self.subsets is not None and subset not in self.subsets and subset not in self._warned:
            self._warned.add(subset)
            log.warning(
                "this checkpoint was never trained on subset %r (it knows %s): its diagnosis will most "
                "likely not parse into %r's labels",
                subset,
                ", ".join(self.subsets),
                subset,
            )

    # ------------------------------------------------------------------ image

    @torch.no_grad()
    def set_image(self, image: np.ndarray | str | os.PathLike) -> None:
        """Encode ``image`` ((H, W, 3) uint8 RGB, or a JPEG/PNG/DICOM path) once for the queries that follow."""
        t0 = time.perf_counter()
        (self.image,), self.encoding = self.encode([image])
        self.timings = {"read_encode_s": time.perf_counter() - t0}

    @torch.no_grad()
    def encode(self, images) -> tuple[list[np.ndarray], ImageEncoding]:
        """B images (arrays or paths) → ``(the (H, W, 3) uint8 arrays, their ImageEncoding)`` in one forward."""
        arrays = []
        for image in images:
            if not isinstance(image, np.ndarray):
                image = read_image(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise InputError(f"the image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
            arrays.append(image)
        encoding = self.model.encode_image(**stack_images([self.encoder.image_inputs(a) for a in arrays]))
        return arrays, encoding

    @staticmethod
    def image_tokens(encoding: ImageEncoding, b: int = 0) -> int:
        """Image tokens of image ``b`` of ``encoding``: its own grid's (dynamic resolution), else the fixed count."""
        if encoding.token_grids is not None:
            return int(encoding.token_grids[b].prod())
        return encoding.lvlm_features.shape[1]

    def prompt_ids(self, query: str, n_image_tokens: int | None = None) -> torch.Tensor:
        """The tokenized chat prompt ``(1, T)`` with the image placeholder expanded to the image's tokens."""
        if not query or not query.strip():
            raise InputError("the query is empty")
        ids = self.encoder.prompt_ids(query.strip(), n_image_tokens or self.image_tokens(self.encoding))[None]
        room = int(self.model.lvlm.config.text_config.max_position_embeddings)
        if ids.shape[1] + self.tts.max_new_tokens > room:
            raise InputError(
                f"the prompt ({ids.shape[1]} tokens) plus {self.tts.max_new_tokens} new tokens exceeds "
                f"the language model's {room} positions; shorten the query"
            )
        return ids

    # ------------------------------------------------------------------ queries

    def predict(
        self,
        query: str,
        *,
        subset: str | None = None,
        parser=None,
        gt: np.ndarray | None = None,
        tts: TTSConfig | None = None,
        use_rvls2m: bool | None = None,
        **overrides,
    ) -> Prediction:
        """Answer ``query`` about the current image. ``subset`` maps the answer onto that subset's label set
        (with ``parser``, a ``DiagnosisParser``, or else the checkpoint's own label sets and the paper's);
        without it the ``Diagnosis:`` line is taken as written. ``gt`` only for ``oracle``."""
        if self.encoding is None:
            raise InputError("no image: call set_image() before predict()")
        cfg = tts or self.tts
        ids = self.prompt_ids(query)
        parse = None
        if subset is not None:
            if parser is None:
                self.check_subset(subset)
                parser = self.parser
            parse = lambda a: parser.label(a, subset)  # noqa: E731
        gt_t = None if gt is None else torch.as_tensor(np.asarray(gt, dtype=bool))
        t0 = time.perf_counter()
        res: TTSResult = run(
            self.model,
            self.tokenizer,
            ids,
            torch.ones_like(ids),
            self.encoding,
            cfg,
            parse=parse,
            gt=gt_t,
            use_rvls2m=use_rvls2m,
            **overrides,
        )
        timings = {**self.timings, **res.timings, "predict_s": time.perf_counter() - t0}
        return Prediction(
            res.answer,
            res.diagnosis.label,
            res.confidence,
            res.seg,
            res.mask.numpy(),
            res.details(cfg),
            timings,
            res.truncated[res.best],
            None if res.uncertainty is None else res.uncertainty.numpy(),
        )

    @torch.no_grad()
    def predict_batch(
        self, images, queries, *, subsets=None, parser=None, gts=None, use_rvls2m: bool | None = None, **overrides
    ) -> tuple[list[np.ndarray], list[Prediction]]:
        """B (image, query) pairs in one image-encoder forward and — greedy, m = 1 — one batched ``generate``
        over the left-padded prompts; the masks are then decoded per image. Returns the images (arrays) and
        their predictions, the same as ``set_image`` + ``predict`` one pair at a time. With sampling (m > 1)
        each image's answers are generated by themselves (their random draws then do not depend on the batch).
        """
        from sim4seg.infer.tts import finish, sample_answers, split_generation

        cfg = self.tts
        t0 = time.perf_counter()
        arrays, encoding = self.encode(images)
        read_encode_s = (time.perf_counter() - t0) / len(arrays)
        prompts = [self.prompt_ids(q, self.image_tokens(encoding, b))[0] for b, q in enumerate(queries)]  # B × (T_i,)
        t1 = time.perf_counter()
        if cfg.m == 1 and cfg.greedy_first:
            width = max(len(p) for p in prompts)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            ids = torch.full((len(prompts), width), pad, dtype=torch.long)
            mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for b, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
                ids[b, width - len(p) :], mask[b, width - len(p) :] = p, 1
            gens = split_generation(sample_answers(self.model, ids, mask, encoding, cfg))
        else:
            gens = [
                sample_answers(
                    self.model,
                    p[None],
                    torch.ones_like(p[None]),
                    encoding.index(torch.tensor([b], device=encoding.image_sizes.device)),
                    cfg,
                )
                for b, p in enumerate(prompts)
            ]
        generate_s = (time.perf_counter() - t1) / len(arrays)
        preds = []
        for b, gen in enumerate(gens):
            subset = subsets[b] if subsets is not None else None
            parse = None
            if parser is not None and subset is not None:
                parse = lambda a, subset=subset: parser.label(a, subset)  # noqa: E731
            gt = None if gts is None or gts[b] is None else torch.as_tensor(np.asarray(gts[b], dtype=bool))
            t2 = time.perf_counter()
            res = finish(
                self.model,
                self.tokenizer,
                gen,
                encoding.index(torch.tensor([b], device=encoding.image_sizes.device)),
                cfg,
                parse=parse,
                gt=gt,
                use_rvls2m=use_rvls2m,
                generate_s=generate_s,
                **overrides,
            )
            timings = {
                "read_encode_s": read_encode_s,
                **res.timings,
                "predict_s": generate_s + time.perf_counter() - t2,
            }
            preds.append(
                Prediction(
                    res.answer,
                    res.diagnosis.label,
                    res.confidence,
                    res.seg,
                    res.mask.numpy(),
                    res.details(cfg),
                    timings,
                    res.truncated[res.best],
                    None if res.uncertainty is None else res.uncertainty.numpy(),
                )
            )
        return arrays, preds


# ---------------------------------------------------------------------- outputs


def uncertainty_gray(u: np.ndarray) -> np.ndarray:
    """(H, W) fractions in [0, 1] → (H, W) uint8 ``round(255·u)`` (what ``stem_uncertainty.png`` holds)."""
    return np.clip(np.rint(np.asarray(u, np.float32) * 255.0), 0, 255).astype(np.uint8)


def uncertainty_heatmap(u: np.ndarray, image: np.ndarray | None = None, alpha: float = 0.6) -> np.ndarray:
    """(H, W) fractions → (H, W, 3) uint8 "hot" colours (black → red → yellow → white), blended over
    ``image`` where the candidates disagree (pixels where all agree show the image)."""
    u = np.clip(np.asarray(u, np.float32), 0.0, 1.0)
    t = u * 3.0
    hot = np.stack([np.clip(t, 0, 1), np.clip(t - 1, 0, 1), np.clip(t - 2, 0, 1)], -1) * 255.0
    if image is None:
        return hot.astype(np.uint8)
    a = (alpha * (u > 0))[..., None]
    return np.clip(image.astype(np.float32) * (1 - a) + hot * a, 0, 255).astype(np.uint8)


def write_result(
    pred: Prediction, image: np.ndarray, out: str | os.PathLike, stem: str = "prediction", extra: dict | None = None
) -> dict[str, Path]:
    """Write ``stem_mask.png`` (original size), ``stem_overlay.png``, ``stem.json`` and, when the run had
    several candidates, ``stem_uncertainty.png`` (gray: 255 × the fraction of candidates that disagree)."""
    from sim4seg._atomic import write_json
    from sim4seg.data.io import write_image, write_mask

    out = Path(out)
    paths = {"mask": out / f"{stem}_mask.png", "overlay": out / f"{stem}_overlay.png", "json": out / f"{stem}.json"}
    write_mask(paths["mask"], pred.mask)
    write_image(paths["overlay"], overlay(image, pred.mask))
    files = {"mask": paths["mask"].name, "overlay": paths["overlay"].name}
    if pred.uncertainty is not None:
        paths["uncertainty"] = out / f"{stem}_uncertainty.png"
        write_image(paths["uncertainty"], uncertainty_gray(pred.uncertainty))
        files["uncertainty"] = paths["uncertainty"].name
    write_json(paths["json"], {**(extra or {}), **pred.record(), **files})
    return paths
