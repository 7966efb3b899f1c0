"""Score predictions against an M3DS split: from a predictions JSONL, a trivial baseline,
or any iterable of ``(sample, pred_mask, answer)`` (what a predictor yields).

A predictions file has one JSON object per line::

    {"id": "busi-00012", "mask": "masks/busi-00012.png", "answer": "It is [SEG]. ... Diagnosis: benign."}

``mask`` is a PNG path relative to the predictions file (absolute paths work too) with the
size of the ground-truth mask. ``mask`` may be ``null`` (or absent) on every line — the
method segments nothing and gIoU/cIoU/Dice are not scored — and likewise ``answer`` for a
method that gives no diagnosis. Optional numbers in [0, 1] (or ``null``): ``confidence`` (the
diagnosis agreement over sampled answers) and ``uncertainty_mean`` (mean pixel uncertainty), which
the calibration report (``eval.calibration``) reads. Every id of the split must appear exactly once.


A line may instead record a failed sample (what ``predict`` writes when an image cannot be
read): ``{"id": ..., "failed": "<reason>"}`` with ``mask``/``answer`` null or absent. It is
scored as a method that segmented nothing (an empty mask, when the file has masks) and gave
no readable diagnosis (wrong, counted as unparseable) — a failure never improves a score — and
``summary()["failed"]`` lists such ids with their reasons.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim4seg._jsonl import iter_jsonl
from sim4seg.data.io import image_size, read_mask
from sim4seg.data.prompts import diagnosis_line
from sim4seg.data.schema import DatasetInfo, Sample, iter_split, load_split, read_info
from sim4seg.errors import ImageReadError, InputError
from sim4seg.eval.diagnosis import DiagnosisParser, check_answer_length
from sim4seg.eval.metrics import MetricAccumulator, mask_stats

log = logging.getLogger(__name__)

BASELINES = ("empty", "full", "majority")
"""``empty``: empty mask, no diagnosis. ``full``: whole-image mask, no diagnosis.
``majority``: the subset's most frequent training label, no mask."""

_SHOW = 5  # ids listed in an error message


class Evaluator:
    """Accumulates one sample at a time; ``summary()`` is the ``metrics.json`` dict.

    Ground-truth masks are read from ``root`` per sample and dropped after scoring.
    ``rows`` keeps a small per-sample record (id, subset, iou, dice, parsed label, correct).
    """

    def __init__(self, root: str | os.PathLike, info: DatasetInfo, parser: DiagnosisParser | None = None) -> None:
        self.root = Path(root)
        self.info = info
        self.parser = DiagnosisParser(info.subsets) if parser is None else parser
        self.acc = MetricAccumulator()
        self.rows: list[dict] = []
        self.failed: dict[str, str] = {}
        """id → reason of the samples the method failed on (scored as nothing predicted)."""

    def gt_mask(self, sample: Sample) -> np.ndarray:
        """The sample's ground truth ``HxW`` bool."""
        return read_mask(self.root / sample.mask)

    def add(
        self,
        sample: Sample,
        pred_mask: np.ndarray | None,
        answer: str | None,
        *,
        where: str | None = None,
        confidence: float | None = None,
        uncertainty: float | None = None,
    ) -> dict:
        """Score one sample; ``where`` (e.g. ``"P.jsonl:12"``) prefixes error messages. ``confidence`` (the
        diagnosis agreement) and ``uncertainty`` (mean pixel uncertainty) are kept for the calibration report."""
        stats = None
        if pred_mask is not None:
            gt = self.gt_mask(sample)
            pred = np.asarray(pred_mask)
            if pred.shape != gt.shape:
                raise InputError(
                    f"predicted mask of {sample.id} is {_wh(pred.shape)} but its ground truth "
                    f"({sample.mask}) is {_wh(gt.shape)}",
                    where,
                )
            stats = mask_stats(pred, gt)
        parsed = None if answer is None else self.parser.parse(answer, sample.subset)
        correct = None if parsed is None else parsed.label == sample.diagnosis
        self.acc.add(sample.subset, stats, correct, bool(parsed is not None and parsed.unparseable))
        row = {
            "id": sample.id,
            "subset": sample.subset,
            "label": sample.diagnosis,
            "iou": None if stats is None else stats.iou,
            "dice": None if stats is None else stats.dice,
            "intersection": None if stats is None else stats.intersection,
            "union": None if stats is None else stats.union,
            "parsed": None if parsed is None else parsed.label,
            "parsed_from": None if parsed is None else parsed.source,
            "correct": correct,
            "confidence": confidence,
            "uncertainty_mean": uncertainty,
        }
        self.rows.append(row)
        return row

    def summary(self) -> dict:
        out = self.acc.summary()
        if self.failed:
            out["failed"] = dict(self.failed)
        return out


def _wh(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}" if len(shape) >= 2 else str(shape)


def evaluate(
    items: Iterable[tuple[Sample, np.ndarray | None, str | None]],
    root: str | os.PathLike,
    info: DatasetInfo | None = None,
    *,
    parser: DiagnosisParser | None = None,
) -> Evaluator:
    """Score ``(sample, pred_mask HxW | None, answer | None)`` triples, e.g. from a predictor."""
    ev = Evaluator(root, read_info(root) if info is None else info, parser)
    for sample, mask, answer in items:
        ev.add(sample, mask, answer)
    if not ev.rows:
        raise InputError("nothing to evaluate: no samples were given", root)
    return ev


# ---------------------------------------------------------------- predictions file


@dataclass(frozen=True)
class PredictionRow:
    """One line of a predictions file."""

    id: str
    mask: Path | None
    """Resolved mask path (relative paths are taken from the predictions file's folder)."""
    answer: str | None
    line: int
    confidence: float | None = None
    """The diagnosis agreement of the m answers (``null`` for a single answer)."""
    uncertainty: float | None = None
    """The mean pixel uncertainty of the mask (``uncertainty_mean``; ``null`` for a single candidate)."""
    failed: str | None = None
    """Why the method could not predict this sample (then ``mask``/``answer`` are ``None``)."""


def read_predictions(path: str | os.PathLike) -> dict[str, PredictionRow]:
    """Parse and check a predictions JSONL → ``{id: PredictionRow}`` (masks are not read here)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("predictions file not found" if not path.exists() else "not a regular file", path)
    preds: dict[str, PredictionRow] = {}
    has = {"mask": {}, "answer": {}}  # field -> {given (bool): first line}
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise InputError(f"a prediction must be a JSON object, got {type(row).__name__}", path, lineno)
        pid = row.get("id")
        if not isinstance(pid, str) or not pid:
            raise InputError("field 'id' must be a non-empty string", path, lineno)
        if pid in preds:
            raise InputError(f"id {pid!r} appears twice (first on line {preds[pid].line})", path, lineno)
        failed = row.get("failed")
        if failed is not None:
            if not isinstance(failed, str) or not failed:
                raise InputError("field 'failed' must be a non-empty string (the reason) or null", path, lineno)
            if row.get("mask") is not None or row.get("answer") is not None:
                raise InputError("a failed prediction has no 'mask' or 'answer'", path, lineno)
            preds[pid] = PredictionRow(pid, None, None, lineno, failed=failed)
            continue
        for key in ("mask", "answer"):
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                raise InputError(f"field {key!r} must be a string or null, got {type(value).__name__}", path, lineno)
            if key == "mask" and value == "":
                raise InputError("field 'mask' is an empty path", path, lineno)
            if key == "mask" and value is not None and "\0" in value:
                raise InputError("field 'mask' holds a NUL character", path, lineno)
            if key == "answer" and value is not None:
                try:
                    check_answer_length(value)
                except InputError as e:
                    raise InputError(e.problem, path, lineno) from None
            has[key].setdefault(value is not None, lineno)
        for key in ("confidence", "uncertainty_mean"):
            value = row.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0
            ):
                raise InputError(
                    f"field {key!r} must be a number in [0, 1] or null, got {str(value)[:40]}", path, lineno
                )
        mask = row.get("mask")
        preds[pid] = PredictionRow(
            pid,
            None if mask is None else path.parent / mask,
            row.get("answer"),
            lineno,
            confidence=row.get("confidence"),
            uncertainty=row.get("uncertainty_mean"),
        )
    if not preds:
        raise InputError("predictions file holds no predictions", path)
    for key, seen in has.items():
        if len(seen) == 2:
            raise InputError(
                f"field {key!r} is given on line {seen[True]} but missing or null on line "
                f"{seen[False]}: give it on every line or on none",
                path,
            )
    return preds


def check_ids(preds: dict[str, PredictionRow], samples: list[Sample], path: str | os.PathLike, split: str) -> None:
    """Every sample of the split predicted exactly once and nothing else: else an ``InputError``."""
    ids = {s.id for s in samples}
    unknown = [p for p in preds if p not in ids]
    missing = [s.id for s in samples if s.id not in preds]
    problems = []
    if missing:
        problems.append(f"{len(missing)} id(s) of the {split!r} split have no prediction: {_few(missing)}")
    if unknown:
        first = preds[unknown[0]].line
        problems.append(f"{len(unknown)} id(s) are not in the {split!r} split (first on line {first}): {_few(unknown)}")
    if problems:
        raise InputError("; ".join(problems), path)


def _few(ids: list[str]) -> str:
    return ", ".join(ids[:_SHOW]) + (f", ... ({len(ids) - _SHOW} more)" if len(ids) > _SHOW else "")


def _read_pred_mask(pred: PredictionRow, path: Path) -> np.ndarray | None:
    if pred.mask is None:
        return None
    try:
        return read_mask(pred.mask)
    except ImageReadError as e:
        raise InputError(f"cannot read mask {pred.mask}: {e.problem}", path, pred.line) from None


def evaluate_predictions(
    root: str | os.PathLike, split: str, predictions: str | os.PathLike, *, subsets: list[str] | None = None
) -> Evaluator:
    """Score a predictions JSONL against ``split`` of the manifest at ``root`` (only ``subsets``, if given:
    predictions of the split's other samples are then ignored)."""
    info, samples = load_split(root, split)
    path = Path(predictions)
    preds = read_predictions(path)
    if subsets is not None:
        split_ids = {s.id for s in samples}
        samples = _only(samples, subsets, root, split)
        keep = {s.id for s in samples}
        preds = {k: v for k, v in preds.items() if k in keep or k not in split_ids}
    check_ids(preds, samples, path, split)
    ev = Evaluator(root, info)
    with_masks = any(p.mask is not None for p in preds.values())
    with_answers = any(p.answer is not None for p in preds.values())
    for sample in samples:
        pred = preds[sample.id]
        if pred.failed is not None:
            mask = np.zeros(ev.gt_mask(sample).shape, bool) if with_masks else None
            ev.add(sample, mask, "" if with_answers or not with_masks else None, where=f"{path}:{pred.line}")
            ev.rows[-1]["failed"] = pred.failed
            ev.failed[sample.id] = pred.failed
            continue
        ev.add(
            sample,
            _read_pred_mask(pred, path),
            pred.answer,
            where=f"{path}:{pred.line}",
            confidence=pred.confidence,
            uncertainty=pred.uncertainty,
        )
    return ev


# ---------------------------------------------------------------- baselines


def majority_labels(root: str | os.PathLike, info: DatasetInfo) -> dict[str, str]:
    """Most frequent training label per subset (ties: the label listed first in the subset).

    A subset without training samples gets its first label (logged).
    """
    counts: dict[str, Counter] = {name: Counter() for name in info.subsets}
    for s in iter_split(root, "train", info):
        counts[s.subset][s.diagnosis] += 1
    out = {}
    for name, sub in info.subsets.items():
        if not counts[name]:
            log.warning("subset %s has no training samples; majority baseline uses %r", name, sub.labels[0])
        out[name] = max(sub.labels, key=lambda label: (counts[name][label], -sub.labels.index(label)))
    return out


def baseline_items(
    kind: str, root: str | os.PathLike, info: DatasetInfo, samples: Iterable[Sample]
) -> Iterator[tuple[Sample, np.ndarray | None, str | None]]:
    """``(sample, mask, answer)`` of a trivial baseline (see ``BASELINES``)."""
    if kind not in BASELINES:
        raise InputError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
    majority = majority_labels(root, info) if kind == "majority" else {}
    for s in samples:
        if kind == "majority":
            yield s, None, diagnosis_line(majority[s.subset])
        else:
            h, w = image_size(Path(root) / s.mask)
            yield s, np.full((h, w), kind == "full", dtype=bool), None


def _only(samples: list[Sample], subsets: list[str], root, split: str) -> list[Sample]:
    kept = [s for s in samples if s.subset in subsets]
    if not kept:
        raise InputError(f"the {split!r} split has no samples of {', '.join(subsets)}", root)
    return kept


def evaluate_baseline(root: str | os.PathLike, split: str, kind: str, *, subsets: list[str] | None = None) -> Evaluator:
    """Score the trivial baseline ``kind`` on ``split`` (only ``subsets``, if given)."""
    info, samples = load_split(root, split)
    samples = samples if subsets is None else _only(samples, subsets, root, split)
    return evaluate(baseline_items(kind, root, info, samples), root, info)
