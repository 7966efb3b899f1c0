"""Backbone adapters: one module per LVLM family and per segmenter family, found by ``model_type``.

``lvlm_adapter`` / ``segmenter_adapter`` return the adapter for a transformers config's
``model_type`` and refuse anything else with the list of what is supported. To add a
backbone: write its module (a ``LVLMAdapter`` / ``SegmenterAdapter`` subclass and its
published ``VARIANTS``), register it below and add a preset (``sim4seg.model.presets``).
"""

from __future__ import annotations

from types import ModuleType

from sim4seg.errors import InputError
from sim4seg.model.backbones import llava, qwen, sam, sam2
from sim4seg.model.backbones.base import LVLMAdapter, SegmenterAdapter

LVLM_ADAPTERS: tuple[LVLMAdapter, ...] = (llava.LlavaAdapter(), qwen.QwenVLAdapter(), qwen.Qwen3VLAdapter())
SEGMENTER_ADAPTERS: tuple[SegmenterAdapter, ...] = (sam.SamAdapter(), sam2.Sam2Adapter())
LVLM_FAMILIES: tuple[ModuleType, ...] = (llava, qwen)
"""Modules with published ``VARIANTS`` and a ``shrunk(variant, tokenizer, ...)`` builder."""
SEGMENTER_FAMILIES: tuple[ModuleType, ...] = (sam, sam2)
"""Modules with published ``VARIANTS`` and a ``shrunk(variant, ...)`` builder."""


def variant(families: tuple[ModuleType, ...], name: str):
    """``(module, variant)`` of the published variant ``name``; InputError listing the known ones."""
    for module in families:
        if name in module.VARIANTS:
            return module, module.VARIANTS[name]
    known = [k for m in families for k in m.VARIANTS]
    raise InputError(f"unknown backbone variant {name!r}; known: {', '.join(known)}")


def _supported(adapters) -> str:
    return "; ".join(f"{a.name} ({', '.join(a.model_types)})" for a in adapters)


def _model_type(obj) -> str | None:
    config = getattr(obj, "config", obj)
    return obj if isinstance(obj, str) else getattr(config, "model_type", None)


def lvlm_adapter(model_or_config, source=None) -> LVLMAdapter:
    """The adapter for an LVLM (a model, its config or a ``model_type``); InputError listing the supported ones."""
    kind = _model_type(model_or_config)
    for a in LVLM_ADAPTERS:
        if kind in a.model_types:
            return a
    raise InputError(f"unsupported LVLM {kind!r}; supported: {_supported(LVLM_ADAPTERS)}", source)


def segmenter_adapter(model_or_config, source=None) -> SegmenterAdapter:
    """The adapter for a segmenter (a model, its config or a ``model_type``); InputError listing the supported ones."""
    kind = _model_type(model_or_config)
    for a in SEGMENTER_ADAPTERS:
        if kind in a.model_types:
            return a
    raise InputError(f"unsupported segmenter {kind!r}; supported: {_supported(SEGMENTER_ADAPTERS)}", source)
