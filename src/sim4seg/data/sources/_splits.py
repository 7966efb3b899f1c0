"""Deterministic splits: seeded stratified splits, val carved from a split, group voting,
and ``--paper-sizes`` subsampling.

Every choice is a pure function of ``(seed, group key)``: the order of groups is that
of ``sha256(f"{seed}:{key}")``, so adding or removing other files does not move a
sample between splits. Items sharing ``Item.group`` always go together.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable

from sim4seg.data.sources._base import Item
from sim4seg.data.subsets import SPLITS
from sim4seg.data.synthetic import split_counts


def rank(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


def _groups(items: Iterable[Item]) -> dict[str, list[Item]]:
    out: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        out[it.group].append(it)
    return out


def _by_label(groups: dict[str, list[Item]], seed: int) -> dict[str, list[str]]:
    """label → group keys in seeded order; a group's label is its most common one (ties: first by name)."""
    out: dict[str, list[str]] = defaultdict(list)
    for g, members in groups.items():
        label = sorted(Counter(m.label for m in members).items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        out[label].append(g)
    for label in out:
        out[label].sort(key=lambda g: (rank(seed, g), g))
    return dict(sorted(out.items()))


def stratified_split(items: list[Item], ratios: tuple[int, int, int], seed: int) -> None:
    """Set ``split`` of every item: per label, groups shared by ``ratios`` (largest remainder)."""
    groups = _groups(items)
    for keys in _by_label(groups, seed).values():
        n_train, n_val, _ = split_counts(len(keys), ratios)
        for i, g in enumerate(keys):
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            for it in groups[g]:
                it.split = split


def carve(items: list[Item], source: str, target: str, fraction: float, seed: int) -> None:
    """Move ``round(fraction * n)`` groups of each label from split ``source`` to ``target``."""
    groups = _groups(it for it in items if it.split == source)
    for keys in _by_label(groups, seed).values():
        k = int(len(keys) * fraction + 0.5)
        for g in keys[:k]:
            for it in groups[g]:
                it.split = target


def vote_groups(items: list[Item]) -> int:
    """Put each group wholly in the split most of its items came in (ties: test, then val).

    Returns how many items changed split.
    """
    moved = 0
    for members in _groups(items).values():
        votes = Counter(it.split for it in members)
        best = max(SPLITS, key=lambda s: (votes.get(s, 0), SPLITS.index(s)))
        for it in members:
            if it.split != best:
                it.split = best
                moved += 1
    return moved


def paper_order(items: list[Item], no_finding: str | None, seed: int) -> dict[str, list[Item]]:
    """Per split, the order in which ``--paper-sizes`` picks items: those with a finding
    first, then in seeded order. The builder takes items from the front until the
    split's Table 1 count of *converted* samples is reached."""
    out = {}
    for split in SPLITS:
        pool = [it for it in items if it.split == split]
        pool.sort(key=lambda it: (it.label == no_finding, rank(seed, it.sample_id), it.sample_id))
        out[split] = pool
    return out
