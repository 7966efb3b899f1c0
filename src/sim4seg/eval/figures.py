"""Pictures of an evaluation and of a training run (matplotlib, written as PNG).

- ``overlay_sheets``: per subset, the K worst and the K best samples by IoU as labelled sheets —
  one row per sample: the image, the ground truth (green) and the prediction (red), with the id,
  the true and the predicted diagnosis and the IoU (``overlays/<subset>_worst.png``, ``_best.png``).
- ``confusion``: per subset, the diagnosis confusion matrix (true label × parsed label, with a
  column for answers that name no label of the subset) as counts (``confusion.json``) and PNGs.
- ``subset_bars``: gIoU / cIoU / Acc per subset on a 0–100 axis (``per_subset.png``).
- ``learning_curve``: the loss terms of a training ``log.jsonl`` against the optimizer step.

Every panel is drawn at ≥ 192 px on its shorter side, whatever the image size; small images are
enlarged with nearest-neighbour sampling so that mask borders stay sharp.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from sim4seg.errors import InputError

log = logging.getLogger(__name__)

GT_COLOUR = (40, 220, 40)
PRED_COLOUR = (255, 40, 40)
PANEL_PX = 240
"""Shorter side of one overlay panel in the saved PNG (pixels)."""
DPI = 120
UNPARSED = "(no label)"
"""Confusion-matrix column of answers that name no label of the subset (or give no diagnosis)."""


def overlay(image: np.ndarray, mask: np.ndarray, colour=PRED_COLOUR, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 image with ``mask`` tinted and its outline drawn → (H, W, 3) uint8."""
    out = image.astype(np.float32).copy()
    m = np.asarray(mask, dtype=bool)
    out[m] = out[m] * (1 - alpha) + np.array(colour, np.float32) * alpha
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    out[edge] = colour
    return np.clip(out, 0, 255).astype(np.uint8)


def _matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("pictures need matplotlib: pip install -c constraints.txt 'sim4seg[train]'") from None
    return Figure


def save_figure(fig, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Render ``fig`` (a ``matplotlib.figure.Figure``) to a PNG at ``path``, atomically."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from sim4seg._atomic import atomic_open

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
    return path


# ---------------------------------------------------------------- overlay sheets


def pick_worst_best(rows: Sequence[Mapping], k: int) -> tuple[list[Mapping], list[Mapping]]:
    """The ``k`` lowest-IoU rows and the ``k`` highest (disjoint; ties by id); rows without IoU are left out."""
    scored = sorted((r for r in rows if r.get("iou") is not None), key=lambda r: (r["iou"], r["id"]))
    worst = scored[:k]
    rest = scored[len(worst) :]
    best = rest[::-1][:k]
    return worst, best


def _label(value) -> str:
    return UNPARSED if value is None else str(value)


def overlay_sheet(samples: Sequence[Mapping], title: str, path: str | os.PathLike) -> Path:
    """One labelled sheet: a row per sample ``{"id", "image" HxWx3, "gt" HxW, "pred" HxW, "label", "parsed",
    "iou"}`` with the columns image | ground truth | prediction."""
    Figure = _matplotlib()
    inch = PANEL_PX / DPI
    rows = len(samples)
    height = rows * (inch + 0.62) + 0.45
    fig = Figure(figsize=(3 * inch + 0.3, height))
    axes = fig.subplots(rows, 3, squeeze=False)
    for i, s in enumerate(samples):
        image = s["image"]
        panels = (image, overlay(image, s["gt"], GT_COLOUR), overlay(image, s["pred"], PRED_COLOUR))
        correct = s["parsed"] is not None and s["parsed"] == s["label"]
        titles = (
            f"{s['id']}\nimage {image.shape[1]}×{image.shape[0]}",
            f"ground truth\ntrue: {_label(s['label'])}",
            f"prediction (IoU {s['iou']:.2f})\npredicted: {_label(s['parsed'])}",
        )
        for j, (ax, tile, text) in enumerate(zip(axes[i], panels, titles)):
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            colour = ("darkgreen" if correct else "firebrick") if j == 2 else "black"
            ax.set_title(text, fontsize=8.5, color=colour)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))  # keep the sheet's title clear of the first row
    return save_figure(fig, path)


def overlay_sheets(
    root: str | os.PathLike,
    rows: Sequence[Mapping],
    masks: Mapping[str, Path],
    images: Mapping[str, Path],
    gts: Mapping[str, Path],
    out: str | os.PathLike,
    k: int,
) -> list[Path]:
    """Per subset, ``<subset>_worst.png`` and ``<subset>_best.png`` (K samples each) in ``out``.

    ``rows``: the evaluator's per-sample rows; ``masks``: id → predicted mask PNG; ``images`` /
    ``gts``: id → image / ground-truth mask path relative to ``root``.
    """
    from sim4seg.data.io import read_image, read_mask

    root, out = Path(root), Path(out)
    written = []
    for subset in sorted({r["subset"] for r in rows}):
        worst, best = pick_worst_best([r for r in rows if r["subset"] == subset and r["id"] in masks], k)
        for kind, chosen in (("worst", worst), ("best", best)):
            if not chosen:
                continue
            samples = [
                {
                    "id": r["id"],
                    "image": read_image(root / images[r["id"]]),
                    "gt": read_mask(root / gts[r["id"]]),
                    "pred": read_mask(masks[r["id"]]),
                    "label": r["label"],
                    "parsed": r["parsed"],
                    "iou": r["iou"],
                }
                for r in chosen
            ]
            title = f"{subset}: the {len(chosen)} {kind} by IoU (green: ground truth, red: prediction)"
            written.append(overlay_sheet(samples, title, out / f"{subset}_{kind}.png"))
    return written


# ---------------------------------------------------------------- diagnoses


def confusion_counts(rows: Iterable[Mapping], labels: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """``{subset: {"labels": [...], "columns": [... , UNPARSED], "counts": [[int]]}}`` from per-sample rows
    (``label`` = the truth, ``parsed`` = the predicted label or None). Subsets without any diagnosis
    answer (a method that gives none) are left out."""
    out: dict[str, dict] = {}
    for r in rows:
        if r.get("correct") is None:
            continue
        names = list(labels[r["subset"]])
        entry = out.setdefault(
            r["subset"],
            {"labels": names, "columns": names + [UNPARSED], "counts": [[0] * (len(names) + 1) for _ in names]},
        )
        col = names.index(r["parsed"]) if r["parsed"] in names else len(names)
        entry["counts"][names.index(r["label"])][col] += 1
    return dict(sorted(out.items()))


def confusion_figure(subset: str, entry: Mapping, path: str | os.PathLike) -> Path:
    """One subset's confusion matrix as a PNG: counts in the cells, rows = true label."""
    Figure = _matplotlib()
    counts = np.asarray(entry["counts"], dtype=int)
    n, correct = int(counts.sum()), int(np.trace(counts[:, : len(entry["labels"])]))
    rows, cols = counts.shape
    fig = Figure(figsize=(1.6 + 0.75 * cols, 1.4 + 0.55 * rows))
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(1, counts.max()))
    for i in range(rows):
        for j in range(cols):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if counts[i, j] > counts.max() / 2 else "black",
            )
    ax.set_xticks(range(cols))
    ax.set_xticklabels(entry["columns"], rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(rows))
    ax.set_yticklabels(entry["labels"], fontsize=8)
    ax.set_xlabel("predicted diagnosis")
    ax.set_ylabel("true diagnosis")
    ax.set_title(f"{subset}: diagnoses, n = {n}, Acc = {100 * correct / max(n, 1):.1f} %", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion(rows: Sequence[Mapping], labels: Mapping[str, Sequence[str]], out: str | os.PathLike) -> list[Path]:
    """``confusion.json`` (all subsets) and ``confusion_<subset>.png`` in ``out``; nothing without diagnoses."""
    from sim4seg._atomic import write_json

    out = Path(out)
    counts = confusion_counts(rows, labels)
    if not counts:
        return []
    write_json(out / "confusion.json", counts)
    paths = [out / "confusion.json"]
    paths += [confusion_figure(subset, entry, out / f"confusion_{subset}.png") for subset, entry in counts.items()]
    return paths


# ---------------------------------------------------------------- summaries


def subset_bars(summary: Mapping, path: str | os.PathLike, title: str = "per subset") -> Path:
    """gIoU / cIoU / Acc per subset (and overall) as grouped bars on a 0–100 % axis."""
    Figure = _matplotlib()
    per = dict(summary.get("per_subset", {}))
    names = sorted(per) + ["overall"]
    per["overall"] = summary["overall"]
    metrics = (("giou", "gIoU"), ("ciou", "cIoU"), ("acc", "Acc"))
    fig = Figure(figsize=(1.6 + 1.3 * len(names), 3.6))
    ax = fig.subplots()
    width = 0.26
    for m, (key, label) in enumerate(metrics):
        xs = [i + (m - 1) * width for i in range(len(names))]
        ys = [per[s].get(key) for s in names]
        vals = [100.0 * y if y is not None else 0.0 for y in ys]
        bars = ax.bar(xs, vals, width, label=label)
        for b, y in zip(bars, ys):
            ax.annotate(
                "-" if y is None else f"{100 * y:.0f}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                textcoords="offset points",
                xytext=(0, 2),
                ha="center",
                fontsize=7,
            )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{s}\nn={per[s].get('n', '?')}" for s in names], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("score (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_figure(fig, path)


def learning_curve(log_path: str | os.PathLike, path: str | os.PathLike, title: str = "training loss") -> Path | None:
    """The loss terms (``loss``, ``loss_*``) of a training ``log.jsonl`` against the optimizer step (log scale);
    ``None`` (nothing written) if the log has no training row."""
    Figure = _matplotlib()
    log_path = Path(log_path)
    rows = []
    for line in log_path.read_text(encoding="utf-8").splitlines() if log_path.is_file() else []:
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill; the log truncates it on resume
                continue
            if row.get("kind") == "train":
                rows.append(row)
    if not rows:
        log.warning("no training rows in %s: no learning curve drawn", log_path)
        return None
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    names = {"loss": "total", "loss_txt": "text CE", "loss_bce": "mask BCE", "loss_dice": "mask Dice"}
    keys = ["loss"] + sorted({k for r in rows for k in r if k.startswith("loss_")})
    for key, label in ((k, names.get(k, k)) for k in keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and r[key] > 0]
        if pts:
            ax.plot(*zip(*pts), label=label, marker="." if len(pts) < 30 else None)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def evaluation_pictures(
    root: str | os.PathLike,
    split: str,
    rows: Sequence[Mapping],
    summary: Mapping,
    predictions: str | os.PathLike | None,
    out: str | os.PathLike,
    k: int,
    method: str = "",
) -> list[Path]:
    """All pictures of one evaluation in ``out``: ``per_subset.png``, ``confusion_<subset>.png`` (+ json) and,
    when ``predictions`` has masks and ``k > 0``, ``overlays/<subset>_{worst,best}.png``."""
    from sim4seg.data.schema import load_split
    from sim4seg.eval.evaluate import read_predictions

    out = Path(out)
    info, samples = load_split(root, split)
    written = [subset_bars(summary, out / "per_subset.png", f"{method or 'evaluation'} on {split!r}, per subset")]
    written += confusion(rows, {name: sub.labels for name, sub in info.subsets.items()}, out)
    if k > 0 and predictions is not None:
        masks = {pid: p.mask for pid, p in read_predictions(predictions).items() if p.mask is not None}
        written += overlay_sheets(
            root, rows, masks, {s.id: s.image for s in samples}, {s.id: s.mask for s in samples}, out / "overlays", k
        )
    return written
