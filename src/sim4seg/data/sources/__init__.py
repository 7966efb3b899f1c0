"""Converters for the ten public source datasets of M3DS, and their registry.

Each converter module defines ``NAME`` (the ``--source NAME=PATH`` key), ``SUBSET``
(the M3DS subset it writes), ``LAYOUT`` (what it expects, for messages),
``locate(path) -> Path`` (find and check the layout; ``InputError`` naming what is
missing and where) and ``scan(root, seed) -> Scan`` (read the annotations, decide
labels and splits; no image is decoded). See docs/sources.md.

A new source is one such module, registered with ``register_source(module)`` (its subset must
be in ``sim4seg.data.subsets.SUBSETS`` or declared by the user's ``dataset_info.json``);
``docs/extending.md`` has a worked example.
"""

from __future__ import annotations

from types import ModuleType

from sim4seg.data.sources import (
    bfd,
    bone_fracture,
    busi,
    chestx_det,
    fives,
    fracatlas,
    isbi2016,
    isic2017,
    kvasir_seg,
    tn3k,
)
from sim4seg.data.sources._base import Item, Scan, Skip
from sim4seg.data.subsets import SUBSETS, register_subset

SOURCES: dict[str, ModuleType] = {}
"""Source converters by ``NAME`` (the key of ``data build --source NAME=PATH``)."""
REQUIRED = ("NAME", "SUBSET", "LAYOUT", "locate", "scan")


def register_source(module: ModuleType) -> ModuleType:
    """Add a converter module to ``SOURCES``.

    It must define ``NAME``, ``SUBSET``, ``LAYOUT``, ``locate`` and ``scan``; a source of a subset
    that is not one of the paper's also defines ``SUBSET_INFO`` (a ``SubsetInfo``: modality,
    labels, target, short column name), which is registered with it.
    """
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:
        raise TypeError(f"source module {module.__name__} lacks {', '.join(missing)}")
    if hasattr(module, "SUBSET_INFO"):
        register_subset(module.SUBSET_INFO)
    if module.SUBSET not in SUBSETS:
        raise TypeError(f"source module {module.__name__}: subset {module.SUBSET!r} is unknown; define SUBSET_INFO")
    SOURCES[module.NAME] = module
    return module


for _m in (fracatlas, bone_fracture, bfd, isbi2016, isic2017, kvasir_seg, busi, tn3k, chestx_det, fives):
    register_source(_m)


def get_source(name: str) -> ModuleType:
    try:
        return SOURCES[name]
    except KeyError:
        from sim4seg.errors import InputError

        raise InputError(f"unknown source {name!r}; known: {', '.join(SOURCES)}") from None


__all__ = ["SOURCES", "get_source", "register_source", "Item", "Scan", "Skip"]
