"""Batch prediction over a manifest split into a resumable predictions JSONL.

``OUT/predictions.jsonl`` is exactly what ``sim4seg evaluate --predictions`` reads — one line
per sample: ``id``, ``mask`` (``masks/<id>.png``, relative to the file, at the original size)
and ``answer``, plus ``diagnosis``, ``confidence``, ``seg``, ``tts`` and ``time_s``. Each mask
is written atomically before its line; each line is appended, flushed and fsynced. A killed run
leaves at most a half-written last line, which the next run drops; it then skips every id
already done, so a resumed run loses nothing finished and duplicates nothing.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Collection

from sim4seg._jsonl import AppendLog
from sim4seg.data.io import read_mask
from sim4seg.data.schema import load_split
from sim4seg.errors import InputError
from sim4seg.infer.tts import SELECTORS

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"


def _check_row(row, path: Path, line: int) -> dict:
    if not isinstance(row, dict) or not isinstance(row.get("id"), str):
        raise InputError("not a predictions row (needs an 'id'); delete the file to start over", path, line)
    return row


def open_predictions(path: Path) -> tuple[AppendLog, set[str]]:
    """The predictions file opened for appending (a torn last line cut off) and the ids already in it."""
    store = AppendLog(path, check=_check_row)
    ids: set[str] = set()
    for row in store.records:
        if row["id"] in ids:
            store.close()
            raise InputError(f"id {row['id']!r} appears twice; delete the file to start over", path)
        ids.add(row["id"])
    return store, ids


def predict_split(predictor, root: str | os.PathLike, split: str, out: str | os.PathLike, *,
                  overlays: int | Collection[str] = 0, limit: int | None = None, progress: bool = True,
                  use_rvls2m: bool | None = None, subsets: Collection[str] | None = None, **overrides) -> Path:
    """Predict every sample of ``split`` (resuming ``OUT/predictions.jsonl``); return the file's path.

    ``overlays``: also write ``overlays/<id>.png`` for the first N samples of the split (or for these ids).
    ``limit``: only the first N samples; ``subsets``: only these subsets' samples. The ``oracle`` selector is given each sample's ground truth.
    """
    from tqdm.auto import tqdm

    from sim4seg.data.io import write_image, write_mask
    from sim4seg.infer.predictor import overlay
    from sim4seg.eval.diagnosis import DiagnosisParser

    root, out = Path(root), Path(out)
    info, samples = load_split(root, split)
    samples = [s for s in samples if subsets is None or s.subset in subsets]
    samples = samples[:limit] if limit is not None else samples
    out.mkdir(parents=True, exist_ok=True)
    path = out / PREDICTIONS
    store, done = open_predictions(path)
    known = {s.id for s in samples}
    if done - known:
        store.close()
        raise InputError(f"holds {len(done - known)} id(s) not in the {split!r} split of {root} (another run's "
                         "file?); choose another output directory", path)
    todo = [(i, s) for i, s in enumerate(samples) if s.id not in done]
    if done:
        log.info("resuming: %d of %d sample(s) already predicted in %s", len(done), len(samples), path)
    parser = DiagnosisParser(info.subsets)
    oracle = predictor.tts.upper_bound
    with store:
        for i, s in tqdm(todo, desc=f"predict {split}", unit="img", disable=not progress, dynamic_ncols=True):
            t0 = time.perf_counter()
            predictor.set_image(root / s.image)
            gt = read_mask(root / s.mask) if oracle else None
            pred = predictor.predict(s.query, subset=s.subset, parser=parser, gt=gt, use_rvls2m=use_rvls2m,
                                     **overrides)
            mask_rel = f"masks/{s.id}.png"
            write_mask(out / mask_rel, pred.mask)
            if (i < overlays) if isinstance(overlays, int) else (s.id in overlays):
                write_image(out / "overlays" / f"{s.id}.png", overlay(predictor.image, pred.mask))
            row = {"id": s.id, "mask": mask_rel, "answer": pred.answer, "diagnosis": pred.diagnosis,
                   "confidence": pred.confidence, "seg": pred.seg, "tts": pred.tts,
                   "time_s": round(time.perf_counter() - t0, 4)}
            store.append(row)
    return path


def method_name(m: int, n: int, selector: str, use_rvls2m: bool | None) -> str:
    """A table row name for a checkpoint's predictions; ``oracle`` is marked as an upper bound."""
    name = "Sim4Seg" + (" w/o RVLS2M" if use_rvls2m is False else "")
    if m > 1 or n > 1:
        name += f" +TTS {m}×{n} {selector}" + (" (UPPER BOUND: uses ground truth)" if SELECTORS[selector].needs_gt else "")
    return name


def predict_checkpoint(checkpoint: str | os.PathLike, root: str | os.PathLike, split: str, out: str | os.PathLike, *,
                       m: int = 1, n: int = 1, selector: str = "consensus", use_rvls2m: bool | None = None,
                       progress: bool = True, overlays: int | Collection[str] = 0, seed: int = 0,
                       subsets: Collection[str] | None = None) -> tuple[Path, str]:
    """Load ``checkpoint`` and predict ``split`` into ``out`` (resumable); return ``(predictions path, method name)``."""
    from sim4seg.infer.predictor import Predictor
    from sim4seg.infer.tts import TTSConfig

    try:
        cfg = TTSConfig(m=m, n=n, selector=selector, seed=seed)
    except ValueError as e:
        raise InputError(str(e)) from None
    predictor = Predictor.from_checkpoint(checkpoint, tts=cfg)
    path = predict_split(predictor, root, split, out, overlays=overlays, progress=progress, use_rvls2m=use_rvls2m,
                         subsets=subsets)
    return path, method_name(m, n, selector, use_rvls2m)
