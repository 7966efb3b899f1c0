"""Converters for the ten public source datasets of M3DS, and their registry.

Each converter module defines ``NAME`` (the ``--source NAME=PATH`` key), ``SUBSET``
(the M3DS subset it writes), ``LAYOUT`` (what it expects, for messages),
``locate(path) -> Path`` (find and check the layout; ``InputError`` naming what is
missing and where) and ``scan(root, seed) -> Scan`` (read the annotations, decide
labels and splits; no image is decoded). See docs/sources.md.
"""

from __future__ import annotations

from types import ModuleType

from sim4seg.data.sources import (bfd, bone_fracture, busi, chestx_det, fives, fracatlas, isbi2016, isic2017,
                                  kvasir_seg, tn3k)
from sim4seg.data.sources._base import Item, Scan, Skip

SOURCES: dict[str, ModuleType] = {m.NAME: m for m in (
    fracatlas, bone_fracture, bfd, isbi2016, isic2017, kvasir_seg, busi, tn3k, chestx_det, fives)}


def get_source(name: str) -> ModuleType:
    try:
        return SOURCES[name]
    except KeyError:
        from sim4seg.errors import InputError

        raise InputError(f"unknown source {name!r}; known: {', '.join(SOURCES)}") from None


__all__ = ["SOURCES", "get_source", "Item", "Scan", "Skip"]
