"""Prediction over many image files (``sim4seg predict --images DIR|GLOB|LIST.txt``), resumable.

Inputs: ``--image FILE`` (repeatable) and ``--images SPEC`` (repeatable), where SPEC is a folder
(every image in it and its sub-folders, DICOM files without a suffix included), a glob pattern
(``'scans/**/*.dcm'``, quoted) or a ``.txt`` list of paths (one a line, relative to the list's
folder; blank lines and ``#`` comments ignored). A multi-frame DICOM gives one image per chosen
frame (``frame``: an index or ``"all"``), a NIfTI volume one per chosen slice along ``axis``
(``index``: a number or ``"all"``).

``OUT/predictions.jsonl`` gets one line per image (and query) — ``status: "ok"`` with the answer,
diagnosis and ``mask`` (``masks/<name>.png`` at the image's size), or ``status: "failed"`` with
the reason (an unreadable file, a volume without a chosen slice, ...); the run goes on. Lines are
appended and fsynced as in ``infer/batch.py``; a re-run skips every id already in the file.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sim4seg.data.io import IMAGE_SUFFIXES, frame_count, is_dicom, is_nifti, read_image, read_nifti_slices
from sim4seg.errors import InputError
from sim4seg.infer.batch import PREDICTIONS, open_predictions

log = logging.getLogger(__name__)

ALL = "all"
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Unit:
    """One 2-D image to predict: a file, or one frame / slice of it."""

    id: str
    """The file's path relative to the inputs' common folder, plus ``#frame=K`` or ``#axis=A,slice=K``."""
    path: Path
    frame: int | None = None
    """DICOM frame."""
    axis: int = 2
    index: int | None = None
    """NIfTI slice along ``axis``."""


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    if name.startswith("."):
        return False
    if p.suffix.lower() in IMAGE_SUFFIXES or is_nifti(p):
        return True
    return not p.suffix and is_dicom(p)  # DICOM series are often stored without a suffix


def _from_list(spec: Path) -> list[Path]:
    out = []
    for line in spec.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else spec.parent / p)
    if not out:
        raise InputError("the list names no image (one path a line)", spec)
    return out


def collect(images: list[str] | None, sources: list[str] | None) -> list[Path]:
    """The files named by ``--image`` and ``--images`` (folders, globs, ``.txt`` lists), in order, once each.

    A file that ``--image`` or a list names but that does not exist is kept: it is recorded as failed.
    """
    paths: list[Path] = [Path(p).expanduser() for p in images or []]
    for spec in sources or []:
        p = Path(spec).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and _is_image(q))
            if not found:
                raise InputError(f"the folder holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}, .nii, .nii.gz)", p)
            paths += found
        elif p.is_file() and p.suffix.lower() == ".txt":
            paths += _from_list(p)
        elif _GLOB.search(spec):
            found = sorted(Path(q) for q in glob.glob(os.path.expanduser(spec), recursive=True) if Path(q).is_file())
            if not found:
                raise InputError(f"the pattern {spec!r} matches no file")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise InputError("--images takes a folder, a glob pattern or a .txt list of paths; this is none", p)
    seen, out = set(), []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    if not out:
        raise InputError("no input image: give --image FILE or --images DIR|GLOB|LIST.txt")
    return out


def _choice(value: int | str | None, count: int) -> list[int | None]:
    if value == ALL:
        return list(range(count))
    return [None if value is None else int(value)]


def expand(
    paths: list[Path], *, frame: int | str | None = None, axis: int = 2, index: int | str | None = None
) -> list[Unit]:
    """One ``Unit`` per image, frame or slice; a file whose header cannot be read becomes one (failing) unit."""
    dirs = [os.path.abspath(p.parent) for p in paths]
    base = os.path.commonpath(dirs) if dirs else "."
    units: list[Unit] = []
    for p in paths:
        rel = Path(os.path.relpath(os.path.abspath(p), base)).as_posix()
        nifti, dicom = is_nifti(p), p.is_file() and is_dicom(p)
        try:
            count = frame_count(p, axis=axis) if (nifti or dicom) else 1
        except InputError:
            count = 1
        if nifti:
            for k in _choice(index, count):
                plain = k is None or (count == 1 and k == 0)
                units.append(Unit(rel if plain else f"{rel}#axis={axis},slice={k}", p, axis=axis, index=k))
        elif dicom and count > 1:  # --frame applies to multi-frame files; a single-frame file is its own image
            units += [Unit(rel if k is None else f"{rel}#frame={k}", p, frame=k) for k in _choice(frame, count)]
        else:
            units.append(Unit(rel, p))
    return units


def _file_name(uid: str, taken: set[str]) -> str:
    name = re.sub(r"[^\w.-]+", "_", uid).strip("._") or "image"
    if name in taken:
        name += "-" + hashlib.sha1(uid.encode()).hexdigest()[:8]
    taken.add(name)
    return name


def _images(units: list[Unit], max_pixels: int | None = None):
    """Yield ``(unit, image or the InputError that reading it raised)``; a NIfTI file is opened once per run of its slices."""
    i = 0
    while i < len(units):
        u = units[i]
        if is_nifti(u.path) and u.index is not None:
            j = i
            while j < len(units) and units[j].path == u.path and units[j].index is not None:
                j += 1
            group = units[i:j]
            try:
                for unit, image in zip(
                    group, read_nifti_slices(u.path, u.axis, [g.index for g in group], max_pixels=max_pixels)
                ):
                    yield unit, image
                    i += 1
            except InputError as e:
                while i < j:
                    yield units[i], e
                    i += 1
            continue
        try:
            yield u, read_image(u.path, frame=u.frame, axis=u.axis, index=u.index, max_pixels=max_pixels)
        except InputError as e:
            yield u, e
        i += 1


def predict_files(
    predictor,
    units: list[Unit],
    queries: list[str],
    out: str | os.PathLike,
    *,
    subset: str | None = None,
    overlays: int = 0,
    progress: bool = True,
    use_rvls2m: bool | None = None,
) -> dict:
    """Predict every unit × query into ``OUT/predictions.jsonl`` (resuming it); return the run's counts."""
    from tqdm.auto import tqdm

    from sim4seg.data.io import write_image, write_mask
    from sim4seg.infer.predictor import overlay

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PREDICTIONS
    store, done = open_predictions(path)

    def rid(u: Unit, q: int) -> str:
        return u.id if len(queries) == 1 else f"{u.id}|q{q}"

    todo = [u for u in units if any(rid(u, q) not in done for q in range(len(queries)))]
    counts = {"images": len(units), "skipped_done": len(units) - len(todo), "ok": 0, "failed": 0}
    if counts["skipped_done"]:
        log.info("resuming: %d of %d image(s) already in %s", counts["skipped_done"], len(units), path)
    taken: set[str] = set()
    names = {u.id: _file_name(u.id, taken) for u in units}
    position = {u.id: i for i, u in enumerate(units)}
    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    with store:
        for unit, image in _images(todo):
            where = {"image": str(unit.path)}
            if unit.frame is not None:
                where["frame"] = unit.frame
            if unit.index is not None:
                where.update(axis=unit.axis, slice=unit.index)
            t0 = time.perf_counter()
            try:
                if isinstance(image, Exception):
                    raise image
                predictor.set_image(image)
            except InputError as e:
                for q, query in enumerate(queries):
                    if rid(unit, q) not in done:
                        store.append({"id": rid(unit, q), **where, "query": query, "status": "failed", "error": str(e)})
                        counts["failed"] += 1
                bar.update(1)
                continue
            for q, query in enumerate(queries):
                if rid(unit, q) in done:
                    continue
                pred = predictor.predict(query, subset=subset, use_rvls2m=use_rvls2m)
                name = names[unit.id] + ("" if len(queries) == 1 else f"_q{q}")
                row = {"id": rid(unit, q), **where, "query": query, "status": "ok", "mask": f"masks/{name}.png"}
                write_mask(out / row["mask"], pred.mask)
                if position[unit.id] < overlays:
                    row["overlay"] = f"overlays/{name}.png"
                    write_image(out / row["overlay"], overlay(predictor.image, pred.mask))
                rec = pred.record()
                row.update(
                    answer=rec["answer"],
                    diagnosis=rec["diagnosis"],
                    confidence=rec["confidence"],
                    uncertainty_mean=rec["uncertainty_mean"],
                    seg=rec["seg"],
                    truncated=rec["truncated"],
                    mask_area=rec["mask_area"],
                    size=list(pred.mask.shape),
                    tts=rec["tts"],
                    time_s=round(time.perf_counter() - t0, 4),
                )
                store.append(row)
                counts["ok"] += 1
            bar.update(1)
    bar.close()
    counts["path"] = str(path)
    return counts
