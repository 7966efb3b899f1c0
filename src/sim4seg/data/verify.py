"""Check every record of a manifest and list every problem found."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim4seg.data.io import image_size, read_image, read_mask_raw
from sim4seg.data.schema import INFO_FILE, iter_split_lines, read_info
from sim4seg.data.subsets import SPLITS
from sim4seg.errors import InputError, ManifestError


@dataclass
class Problem:
    where: str
    """``file:line`` of the record (or the file) with the problem."""
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


def check_mask(path: Path, expected_hw: tuple[int, int] | None) -> str | None:
    """The problem with a mask file, or ``None``: single channel, only 0 and 255, image size."""
    arr = read_mask_raw(path)
    if arr.ndim != 2:
        return f"mask {path.name} has {arr.shape[2]} channels, expected a single-channel PNG"
    if expected_hw is not None and arr.shape != tuple(expected_hw):
        return f"mask {path.name} is {arr.shape[1]}x{arr.shape[0]} but the image is {expected_hw[1]}x{expected_hw[0]}"
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, 255}:
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        return f"mask {path.name} is not binary 0/255 (values: {shown})"
    return None


def verify(root: str | os.PathLike, *, decode: bool = True) -> tuple[int, list[Problem]]:
    """Return ``(records_checked, problems)`` for the manifest at ``root``.

    ``decode=True`` decodes every image fully (finds truncated files); ``False`` reads
    only the headers.
    """
    root = Path(root)
    try:
        info = read_info(root)
    except ManifestError as e:
        return 0, [Problem(str(root / INFO_FILE), e.problem)]
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    image_split: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {}
    checked = 0
    for split in SPLITS:
        path = root / f"{split}.jsonl"
        if not path.is_file():
            problems.append(Problem(str(path), "split file is missing"))
            continue
        errors: list[ManifestError] = []
        for lineno, sample in iter_split_lines(root, split, info, errors=errors):
            checked += 1
            by_subset = counts.setdefault(split, {})
            by_subset[sample.subset] = by_subset.get(sample.subset, 0) + 1
            where = f"{path}:{lineno}"
            if sample.id in first_seen:
                problems.append(Problem(where, f"duplicate id {sample.id!r} (first at {first_seen[sample.id]})"))
            first_seen.setdefault(sample.id, where)
            other = image_split.setdefault(sample.image, split)
            if other != split:
                problems.append(Problem(where, f"image {sample.image} is in both {other} and {split}"))
            problems += [Problem(where, p) for p in _check_files(root, sample, decode)]
        problems += [Problem(f"{e.path}:{e.line}", e.problem) for e in errors]
        checked += len(errors)
    if info.counts and info.counts != counts:
        problems.append(Problem(str(root / INFO_FILE), "counts do not match the split files (re-run the build)"))
    return checked, problems


def _check_files(root: Path, sample, decode: bool) -> list[str]:
    out = []
    hw = None
    try:
        hw = read_image(root / sample.image).shape[:2] if decode else image_size(root / sample.image)
    except InputError as e:
        out.append(f"image: {e}")
    try:
        problem = check_mask(root / sample.mask, hw)
        if problem:
            out.append(problem)
    except InputError as e:
        out.append(f"mask: {e}")
    return out
