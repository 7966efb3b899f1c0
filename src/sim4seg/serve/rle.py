"""COCO run-length encoding of binary masks, as ``pycocotools.mask.encode`` writes it.

A mask ``(H, W)`` is read in column-major (Fortran) order as alternating runs of 0s and 1s,
starting with 0s; ``{"size": [H, W], "counts": ...}`` holds either the run lengths (the
*uncompressed* form, a list of ints) or COCO's compact string (each run stored as the difference
to the run two before, 5 bits per character with a continuation bit, offset by 48).
``pycocotools.mask.decode`` reads the string form; the list form is what COCO's JSON annotations use
for crowd regions (``pycocotools.mask.frPyObjects`` reads it).
"""

from __future__ import annotations

import numpy as np


def run_lengths(mask: np.ndarray) -> list[int]:
    """Column-major run lengths of ``mask`` (H, W), the first run counting 0s (possibly 0 long)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    flat = m.flatten(order="F").astype(np.int8)
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] == 1 else runs


def counts_string(runs: list[int]) -> str:
    """COCO's compact string for ``runs`` (``rleToString`` in pycocotools' ``maskApi.c``)."""
    out = []
    for i, x in enumerate(runs):
        x = int(x) - (int(runs[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in C for a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def encode(mask: np.ndarray, *, compressed: bool = True) -> dict:
    """``{"size": [H, W], "counts": str | list[int]}`` for a (H, W) mask."""
    m = np.asarray(mask, dtype=bool)
    runs = run_lengths(m)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": counts_string(runs) if compressed else runs}


def decode(rle: dict) -> np.ndarray:
    """The (H, W) bool mask of an RLE in either form (the inverse of ``encode``)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    runs = _parse_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if sum(runs) != h * w:
        raise ValueError(f"RLE counts sum to {sum(runs)}, not H×W = {h * w}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape((h, w), order="F")


def _parse_string(s: str) -> list[int]:
    runs: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs
