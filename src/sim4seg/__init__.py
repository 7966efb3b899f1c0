"""sim4seg: Medical Diagnosis Segmentation with Sim4Seg (AAAI 2026).

The public API (imported lazily: ``import sim4seg`` loads neither torch nor transformers)::

    import sim4seg

    predictor = sim4seg.Predictor.from_checkpoint("demo-out/train/final")   # or sim4seg.load_model(...)
    predictor.set_image(sim4seg.read_image("xray.dcm"))                     # (H, W, 3) uint8, encoded once
    pred = predictor.predict("Where is the fracture? What is the diagnosis?", subset="fracatlas")
    pred.answer, pred.diagnosis, pred.mask                                  # str, label or None, (H, W) bool

    info, samples = sim4seg.load_split("m3ds", "test")                      # the manifest's records
    scores = sim4seg.evaluate_predictions("m3ds", "test", "preds/predictions.jsonl").summary()

Layers (each imports only those below it): ``data`` (schema, image I/O, sources, synthetic,
transforms) → ``model`` (LVLM + ϕ + RVLS2M + SAM, checkpoints) → ``infer`` (predictor,
test-time scaling, batch) and ``train`` (loop, checkpoints, recipes) → ``eval`` (metrics,
reports; no model code) → ``cot`` (chain-of-thought generation) → ``apps`` (the CLI, the demo).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sim4seg._version import __version__

_API = {
    # data
    "read_image": "sim4seg.data.io",
    "read_mask": "sim4seg.data.io",
    "read_info": "sim4seg.data.schema",
    "read_split": "sim4seg.data.schema",
    "load_split": "sim4seg.data.schema",
    "Sample": "sim4seg.data.schema",
    "synthesize": "sim4seg.data.synthetic",
    "SUBSETS": "sim4seg.data.subsets",
    # model
    "Sim4SegConfig": "sim4seg.model.config",
    "build_tiny": "sim4seg.model.tiny",
    "from_preset": "sim4seg.model.presets",
    "save_checkpoint": ("sim4seg.model.checkpoint", "save"),
    # inference
    "load_model": "sim4seg.infer.predictor",
    "Predictor": "sim4seg.infer.predictor",
    "Prediction": "sim4seg.infer.predictor",
    "TTSConfig": "sim4seg.infer.tts",
    # training
    "load_config": "sim4seg.train.recipe",
    "train": "sim4seg.train.loop",
    # evaluation
    "evaluate_predictions": "sim4seg.eval.evaluate",
    "DiagnosisParser": "sim4seg.eval.diagnosis",
    # errors
    "Sim4SegError": "sim4seg.errors",
    "InputError": "sim4seg.errors",
    "ImageReadError": "sim4seg.errors",
}
"""Public name → the module that defines it (or ``(module, attribute)``)."""

__all__ = ["__version__", *_API]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from sim4seg.data.io import read_image, read_mask  # noqa: F401
    from sim4seg.data.schema import Sample, load_split, read_info, read_split  # noqa: F401
    from sim4seg.data.subsets import SUBSETS  # noqa: F401
    from sim4seg.data.synthetic import synthesize  # noqa: F401
    from sim4seg.errors import ImageReadError, InputError, Sim4SegError  # noqa: F401
    from sim4seg.eval.diagnosis import DiagnosisParser  # noqa: F401
    from sim4seg.eval.evaluate import evaluate_predictions  # noqa: F401
    from sim4seg.infer.predictor import Prediction, Predictor, load_model  # noqa: F401
    from sim4seg.infer.tts import TTSConfig  # noqa: F401
    from sim4seg.model.checkpoint import save as save_checkpoint  # noqa: F401
    from sim4seg.model.config import Sim4SegConfig  # noqa: F401
    from sim4seg.model.presets import from_preset  # noqa: F401
    from sim4seg.model.tiny import build_tiny  # noqa: F401
    from sim4seg.train.loop import train  # noqa: F401
    from sim4seg.train.recipe import load_config  # noqa: F401


def __getattr__(name: str):
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'sim4seg' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
