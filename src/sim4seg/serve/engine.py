"""The model behind the server: one ``Predictor``, one request at a time, JSON-ready results.

``Engine.decode`` turns uploaded bytes into an (H, W, 3) image through ``data.io.read_image`` (PNG,
JPEG, TIFF, DICOM; the pixel limit guards against decompression bombs); errors name "the uploaded
image", never a file name a client chose (it may carry a patient's name). Nothing here logs image
content or DICOM fields, and no DICOM metadata reaches a response: only pixels are read.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sim4seg._version import __version__
from sim4seg.data.io import read_image
from sim4seg.data.subsets import SUBSETS
from sim4seg.errors import ImageReadError, InputError
from sim4seg.eval.diagnosis import DiagnosisParser
from sim4seg.infer.predictor import Prediction, Predictor, overlay, uncertainty_gray, uncertainty_heatmap
from sim4seg.infer.tts import TTSConfig, gt_free_selectors
from sim4seg.serve import rle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_pixels: int = 40_000_000
    """Images above this many pixels are refused (decompression bombs included)."""
    max_m: int = 8
    max_n: int = 8
    max_query_chars: int = 2000


@dataclass
class Result:
    """One answered request: the image, the prediction and the time each stage took."""

    image: np.ndarray
    pred: Prediction
    subset: str | None
    timings: dict[str, float]


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def b64png(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode("ascii")


class Engine:
    """``segment(image_bytes, query, ...)`` → ``Result``; thread-safe (one prediction at a time)."""

    def __init__(self, predictor: Predictor, *, limits: Limits = Limits(), name: str = "sim4seg"):
        self.predictor = predictor
        self.limits = limits
        self.name = name
        self.parser = DiagnosisParser()
        self.lock = threading.Lock()
        self.default_tts = predictor.tts

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, limits: Limits = Limits(), device: str = "cpu", max_new_tokens: int = 64
    ) -> Engine:
        predictor = Predictor.from_checkpoint(path, tts=TTSConfig(max_new_tokens=max_new_tokens), device=device)
        return cls(predictor, limits=limits, name=Path(path).resolve().name or "sim4seg")

    # ------------------------------------------------------------ inputs

    def decode(self, data: bytes, filename: str | None = None) -> np.ndarray:
        """Uploaded bytes → (H, W, 3) uint8 RGB, or an ``InputError`` saying what is wrong with them."""
        if not data:
            raise InputError("the uploaded image is empty (0 bytes)")
        dicom = (filename or "").lower().endswith((".dcm", ".dicom")) or data[128:132] == b"DICM"
        with tempfile.TemporaryDirectory(prefix="sim4seg-upload-") as d:
            path = Path(d) / ("upload.dcm" if dicom else "upload")
            path.write_bytes(data)
            try:
                return read_image(path, max_pixels=self.limits.max_pixels)
            except ImageReadError as e:
                raise InputError(f"the uploaded image cannot be used: {e.problem}") from None

    def tts_config(
        self, m: int | None = None, n: int | None = None, selector: str | None = None, seed: int | None = None
    ) -> TTSConfig:
        """The server's TTS settings with the request's overrides, checked against ``limits``."""
        base = self.default_tts
        m = base.m if m is None else m
        n = base.n if n is None else n
        if not 1 <= m <= self.limits.max_m or not 1 <= n <= self.limits.max_n:
            raise InputError(f"m must be in 1..{self.limits.max_m} and n in 1..{self.limits.max_n}, got m={m}, n={n}")
        selector = base.selector if selector is None else selector
        if selector not in gt_free_selectors():
            raise InputError(
                f"selector must be one of {', '.join(gt_free_selectors())} (oracle needs the ground "
                f"truth), got {selector!r}"
            )
        try:
            return TTSConfig(
                m=m,
                n=n,
                selector=selector,
                seed=base.seed if seed is None else seed,
                temperature=base.temperature,
                top_p=base.top_p,
                max_new_tokens=base.max_new_tokens,
            )
        except ValueError as e:
            raise InputError(str(e)) from None

    def check_query(self, query: str | None, subset: str | None) -> str:
        if query is None or not query.strip():
            raise InputError("the query is empty")
        if len(query) > self.limits.max_query_chars:
            raise InputError(f"the query is {len(query)} characters, over the limit of {self.limits.max_query_chars}")
        if subset is not None and subset not in SUBSETS:
            raise InputError(f"unknown subset {subset!r}; known: {', '.join(SUBSETS)}")
        return query.strip()

    # ------------------------------------------------------------ the prediction

    def segment(
        self, image: np.ndarray, query: str, *, subset: str | None = None, tts: TTSConfig | None = None
    ) -> Result:
        """Encode ``image`` and answer ``query`` (holding the model for the whole call)."""
        query = self.check_query(query, subset)
        tts = tts or self.tts_config()
        t0 = time.perf_counter()
        with self.lock:
            t1 = time.perf_counter()
            self.predictor.set_image(image)
            pred = self.predictor.predict(query, subset=subset, parser=self.parser if subset else None, tts=tts)
        timings = {"wait_model_s": t1 - t0, **pred.timings}
        log.info(
            "answered a query: image %dx%d, m=%d n=%d, %.3fs",
            image.shape[1],
            image.shape[0],
            tts.m,
            tts.n,
            time.perf_counter() - t1,
        )
        return Result(image, pred, subset, timings)

    def info(self) -> dict:
        """Backbones, label sets, version, TTS defaults and limits (``GET /v1/info``)."""
        model = self.predictor.model
        return {
            "name": "sim4seg",
            "version": __version__,
            "model": self.name,
            "backbones": {
                "lvlm": type(model.lvlm).__name__,
                "lvlm_type": model.lvlm.config.model_type,
                "segmenter": type(model.sam).__name__,
                "segmenter_type": model.sam.config.model_type,
                "rvls2m": model.config.rvls2m.infer,
            },
            "label_sets": {
                k: {"title": s.title, "modality": s.modality, "labels": list(s.labels)} for k, s in SUBSETS.items()
            },
            "tts": {
                "m": self.default_tts.m,
                "n": self.default_tts.n,
                "selector": self.default_tts.selector,
                "selectors": gt_free_selectors(),
                "max_m": self.limits.max_m,
                "max_n": self.limits.max_n,
            },
            "limits": {"max_pixels": self.limits.max_pixels, "max_query_chars": self.limits.max_query_chars},
        }


def result_json(res: Result, *, png: bool = True, extra_timings: dict | None = None) -> dict:
    """The ``POST /v1/segment`` response body."""
    t0 = time.perf_counter()
    p, (h, w) = res.pred, res.image.shape[:2]
    mask = {"rle": rle.encode(p.mask), "area": int(p.mask.sum())}
    if png:
        mask["png_base64"] = b64png(np.where(p.mask, 255, 0))
    unc = {"mean": p.uncertainty_mean, "diagnosis_agreement": p.confidence, "candidates": p.tts.get("candidates", 0)}
    if png and p.uncertainty is not None:
        unc["png_base64"] = b64png(uncertainty_gray(p.uncertainty))
    body = {
        "answer": p.answer,
        "diagnosis": p.diagnosis,
        "subset": res.subset,
        "confidence": p.confidence,
        "seg": p.seg,
        "image_size": {"width": int(w), "height": int(h)},
        "masks": [mask],
        "uncertainty": unc,
        "tts": {k: p.tts[k] for k in ("m", "n", "selector", "answers", "labels", "vote", "chosen") if k in p.tts},
    }
    body["timings"] = {
        **{k: round(v, 6) for k, v in res.timings.items()},
        "encode_response_s": round(time.perf_counter() - t0, 6),
        **(extra_timings or {}),
    }
    return body


def pictures(res: Result) -> dict[str, np.ndarray]:
    """What the page shows: the overlay, the mask and the uncertainty heat map (None without one)."""
    p = res.pred
    return {
        "overlay": overlay(res.image, p.mask),
        "mask": np.where(p.mask, 255, 0).astype(np.uint8),
        "uncertainty": None if p.uncertainty is None else uncertainty_heatmap(p.uncertainty, res.image),
    }
