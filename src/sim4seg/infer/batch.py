"""Batch prediction over a manifest split into a resumable predictions JSONL.

``OUT/predictions.jsonl`` is exactly what ``sim4seg evaluate --predictions`` reads — one line
per sample: ``id``, ``mask`` (``masks/<id>.png``, relative to the file, at the original size)
and ``answer``, plus ``diagnosis``, ``confidence`` (diagnosis agreement over the m answers;
``null`` for one answer), ``uncertainty_mean`` (mean of the per-pixel disagreement of the m×n
candidates; ``null`` for one candidate), ``seg``, ``tts`` and ``time_s``. Each mask
is written atomically before its line; each line is appended, flushed and fsynced. A killed run
leaves at most a half-written last line, which the next run drops; it then skips every id
already done, so a resumed run loses nothing finished and duplicates nothing.

A sample whose image (or, for the ``oracle`` selector, ground-truth mask) cannot be read is
recorded as failed — ``{"id", "mask": null, "answer": null, "failed": "<file>: <problem>"}`` —
and the run goes on; a resumed run does not retry it (delete its line to retry).
``evaluate`` scores a failed sample as a method that segmented nothing and gave no readable
diagnosis (see ``sim4seg.eval.evaluate``).

Sharded over N processes (``accelerate launch`` / ``torchrun``; the rank and world size come from
``accelerate.PartialState`` over ``torch.distributed``): rank K predicts the samples ``i`` of the
split with ``i % N == K`` and appends them to its own ``predictions.rank-K.jsonl`` — no two
processes ever write one file. At the end rank 0 merges every file into ``predictions.jsonl`` in
split order (written atomically) and removes the rank files, so the result is the file a single
process writes. A killed rank's file keeps what it finished; the relaunched job (with any N) reads
every file's complete lines first and skips those ids. ``batch_size`` images share one encoder
forward and, greedy, one ``generate`` over left-padded prompts; the predictions equal batch size 1.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection
from pathlib import Path

from sim4seg._jsonl import AppendLog, decode_line, parse_line
from sim4seg.data.io import read_mask
from sim4seg.data.schema import load_split
from sim4seg.errors import InputError
from sim4seg.infer.tts import SELECTORS

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
RANK_FILE = "predictions.rank-{}.jsonl"


def dist_state():
    """accelerate's ``PartialState`` (rank, world size, barriers over torch.distributed); one process without it."""
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise InputError("sharded prediction needs accelerate (pip install 'sim4seg[train]')")
        return None
    from accelerate import PartialState

    return PartialState(cpu=True) if not _cuda() else PartialState()


def default_device() -> str:
    """This process's accelerator (``cuda:<local rank>`` under a launcher) if CUDA is there, else ``cpu``."""
    if not _cuda():
        return "cpu"
    state = dist_state()
    return str(state.device) if state is not None else "cuda"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def complete_rows(path: Path) -> list[dict]:
    """The complete lines of ``path`` (another process's file: read, never truncated)."""
    if not path.is_file():
        return []
    rows = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(keepends=True), 1):
        if not raw.endswith(b"\n"):
            break
        if raw.strip():
            rows.append(_check_row(parse_line(decode_line(raw, path, lineno), path, lineno), path, lineno))
    return rows


def merge(out: Path, order: list[str]) -> Path:
    """``predictions.jsonl`` from it and every ``predictions.rank-*.jsonl``, in ``order`` (the split's ids);
    written atomically, then the rank files are removed. Returns its path."""
    from sim4seg._atomic import write_jsonl

    path = out / PREDICTIONS
    parts = sorted(out.glob(RANK_FILE.format("*")))
    if not parts:
        return path
    by_id: dict[str, dict] = {}
    for p in [path, *parts]:
        for row in complete_rows(p):
            by_id.setdefault(row["id"], row)
    rank = {i: n for n, i in enumerate(order)}
    write_jsonl(path, sorted(by_id.values(), key=lambda r: rank.get(r["id"], len(rank))))
    for p in parts:
        p.unlink()
    return path


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


def predict_split(
    predictor,
    root: str | os.PathLike,
    split: str,
    out: str | os.PathLike,
    *,
    overlays: int | Collection[str] = 0,
    limit: int | None = None,
    progress: bool = True,
    use_rvls2m: bool | None = None,
    batch_size: int = 1,
    subsets: Collection[str] | None = None,
    **overrides,
) -> Path:
    """Predict every sample of ``split`` (resuming ``OUT/predictions.jsonl``); return the file's path.

    ``overlays``: also write ``overlays/<id>.png`` for the first N samples of the split (or for these ids).
    ``limit``: only the first N samples; ``subsets``: only these subsets' samples. The ``oracle`` selector is given each sample's ground truth.
    ``batch_size``: images per forward. Under ``accelerate launch`` each process takes its shard (module
    docstring); every process returns once ``predictions.jsonl`` is merged.
    """
    from tqdm.auto import tqdm

    from sim4seg.data.io import read_image, write_image, write_mask
    from sim4seg.eval.diagnosis import DiagnosisParser
    from sim4seg.infer.predictor import overlay

    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    root, out = Path(root), Path(out)
    info, samples = load_split(root, split)
    samples = [s for s in samples if subsets is None or s.subset in subsets]
    samples = samples[:limit] if limit is not None else samples
    state = dist_state()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    barrier = state.wait_for_everyone if state is not None else (lambda: None)
    out.mkdir(parents=True, exist_ok=True)
    final = out / PREDICTIONS
    path = final if world == 1 else out / RANK_FILE.format(rank)
    if rank == 0 and world > 1:
        open_predictions(final)[0].close()  # its owner cuts a partial last line before anyone reads it
    store, done = open_predictions(path)
    barrier()  # every file now ends in a complete line; read them all before anyone appends again
    for other in [final, *out.glob(RANK_FILE.format("*"))]:
        if other != path:
            done |= {r["id"] for r in complete_rows(other)}
    barrier()
    known = {s.id for s in samples}
    if done - known:
        store.close()
        raise InputError(
            f"holds {len(done - known)} id(s) not in the {split!r} split of {root} (another run's "
            "file?); choose another output directory",
            path,
        )
    todo = [(i, s) for i, s in enumerate(samples) if s.id not in done and i % world == rank]
    if done:
        log.info("resuming: %d of %d sample(s) already predicted in %s", len(done), len(samples), out)
    parser = DiagnosisParser(info.subsets)
    oracle = predictor.tts.upper_bound
    bar = tqdm(
        total=len(todo),
        desc=f"predict {split}" + (f" [rank {rank}/{world}]" if world > 1 else ""),
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    truncated = 0
    with store:
        for start in range(0, len(todo), batch_size):
            chunk, images, gts = [], [], []
            for i, s in todo[start : start + batch_size]:
                try:
                    image = read_image(root / s.image)
                    gt = read_mask(root / s.mask) if oracle else None
                except InputError as e:  # one unreadable image never stops the run
                    log.warning("%s: %s; recorded as failed, going on", s.id, e)
                    store.append({"id": s.id, "mask": None, "answer": None, "failed": str(e)})
                    bar.update(1)
                    continue
                chunk.append((i, s))
                images.append(image)
                gts.append(gt)
            if not chunk:
                continue
            t0 = time.perf_counter()
            images, preds = predictor.predict_batch(
                images,
                [s.query for _, s in chunk],
                subsets=[s.subset for _, s in chunk],
                parser=parser,
                gts=gts,
                use_rvls2m=use_rvls2m,
                **overrides,
            )
            per_image = round((time.perf_counter() - t0) / len(chunk), 4)
            for (i, s), image, pred in zip(chunk, images, preds):
                mask_rel = f"masks/{s.id}.png"
                write_mask(out / mask_rel, pred.mask)
                if (i < overlays) if isinstance(overlays, int) else (s.id in overlays):
                    write_image(out / "overlays" / f"{s.id}.png", overlay(image, pred.mask))
                truncated += pred.truncated
                store.append(
                    {
                        "id": s.id,
                        "mask": mask_rel,
                        "answer": pred.answer,
                        "diagnosis": pred.diagnosis,
                        "confidence": pred.confidence,
                        "uncertainty_mean": pred.uncertainty_mean,
                        "seg": pred.seg,
                        "truncated": pred.truncated,
                        "tts": pred.tts,
                        "time_s": per_image,
                    }
                )
            bar.update(len(chunk))
    bar.close()
    if truncated:
        log.warning(
            "%d of %d answer(s) reached max_new_tokens=%d without EOS (truncated: true in %s); raise --max-new-tokens",
            truncated,
            len(todo),
            predictor.tts.max_new_tokens,
            path,
        )
    barrier()
    if rank == 0:
        merge(out, [s.id for s in samples])
    barrier()
    return final


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that scores, prints and writes the reports."""
    state = dist_state()
    return state is None or state.is_main_process


def method_name(m: int, n: int, selector: str, use_rvls2m: bool | None) -> str:
    """A table row name for a checkpoint's predictions; ``oracle`` is marked as an upper bound."""
    name = "Sim4Seg" + (" w/o RVLS2M" if use_rvls2m is False else "")
    if m > 1 or n > 1:
        name += f" +TTS {m}×{n} {selector}" + (
            " (UPPER BOUND: uses ground truth)" if SELECTORS[selector].needs_gt else ""
        )
    return name


def predict_checkpoint(
    checkpoint: str | os.PathLike,
    root: str | os.PathLike,
    split: str,
    out: str | os.PathLike,
    *,
    m: int = 1,
    n: int = 1,
    selector: str = "consensus",
    use_rvls2m: bool | None = None,
    progress: bool = True,
    overlays: int | Collection[str] = 0,
    seed: int = 0,
    batch_size: int = 1,
    subsets: Collection[str] | None = None,
) -> tuple[Path, str]:
    """Load ``checkpoint`` and predict ``split`` into ``out`` (resumable); return ``(predictions path, method name)``."""
    from sim4seg.infer.predictor import Predictor
    from sim4seg.infer.tts import TTSConfig

    try:
        cfg = TTSConfig(m=m, n=n, selector=selector, seed=seed)
    except ValueError as e:
        raise InputError(str(e)) from None
    predictor = Predictor.from_checkpoint(checkpoint, tts=cfg, device=default_device())
    path = predict_split(
        predictor,
        root,
        split,
        out,
        overlays=overlays,
        progress=progress,
        use_rvls2m=use_rvls2m,
        batch_size=batch_size,
        subsets=subsets,
    )
    return path, method_name(m, n, selector, use_rvls2m)
