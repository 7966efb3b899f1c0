"""Tables of a manifest: the paper's Table 1 layout and the label distribution."""

from __future__ import annotations

import os
from collections import Counter

from sim4seg.data.schema import Sample, iter_split, read_info
from sim4seg.data.subsets import MODALITIES, SPLITS


def collect(root: str | os.PathLike) -> tuple[dict, list[Sample]]:
    info = read_info(root)
    samples = [s for split in SPLITS for s in iter_split(root, split, info)]
    return info, samples


def table1(info, samples: list[Sample]) -> str:
    """Subsets × (modality marks, train/val/test), with a total row, as in Table 1."""
    counts = Counter((s.subset, s.split) for s in samples)
    mods = list(MODALITIES)
    name_w = max(len("Dataset"), len("Total"), *(len(v.title) for v in info.subsets.values()))
    head = f"{'Dataset':<{name_w}} | " + " ".join(f"{MODALITIES[m]:^6}" for m in mods)
    head += " | " + " ".join(f"{s.capitalize():>6}" for s in SPLITS) + f" | {'All':>6}"
    lines = [head, "-" * len(head)]
    mod_count = Counter()
    for name, sub in info.subsets.items():
        mod_count[sub.modality] += 1
        marks = " ".join(f"{'x' if sub.modality == m else '':^6}" for m in mods)
        per = [counts[(name, sp)] for sp in SPLITS]
        lines.append(f"{sub.title:<{name_w}} | {marks} | " + " ".join(f"{c:>6}" for c in per) + f" | {sum(per):>6}")
    totals = [sum(counts[(n, sp)] for n in info.subsets) for sp in SPLITS]
    lines.append("-" * len(head))
    lines.append(
        f"{'Total':<{name_w}} | "
        + " ".join(f"{mod_count[m]:^6}" for m in mods)
        + " | "
        + " ".join(f"{c:>6}" for c in totals)
        + f" | {sum(totals):>6}"
    )
    return "\n".join(lines)


def label_table(info, samples: list[Sample]) -> str:
    """Per subset and label: train/val/test counts and the share of empty masks."""
    counts = Counter((s.subset, s.diagnosis, s.split) for s in samples)
    empty = Counter((s.subset, s.diagnosis) for s in samples if s.source.instances == 0)
    rows = [(sub.title, label) for sub in info.subsets.values() for label in sub.labels]
    name_w = max(len("Subset"), *(len(t) for t, _ in rows))
    label_w = max(len("Label"), *(len(lb) for _, lb in rows))
    head = (
        f"{'Subset':<{name_w}} | {'Label':<{label_w}} | "
        + " ".join(f"{s.capitalize():>6}" for s in SPLITS)
        + " |  Empty"
    )
    lines = [head, "-" * len(head)]
    for name, sub in info.subsets.items():
        for label in sub.labels:
            per = [counts[(name, label, sp)] for sp in SPLITS]
            lines.append(
                f"{sub.title:<{name_w}} | {label:<{label_w}} | "
                + " ".join(f"{c:>6}" for c in per)
                + f" | {empty[(name, label)]:>6}"
            )
    return "\n".join(lines)
