"""Build an M3DS from the public source datasets (``sim4seg data build``).

Steps: find every source's layout (an ``InputError`` names anything missing before any
work starts) → scan annotations, decide labels and splits → optionally subsample to
Table 1 (``paper_sizes``) → convert in worker processes (image re-encoded as a PNG as
displayed into ``OUT/images/<subset>/`` — never linked or copied, so no DICOM patient field
or EXIF block of a source reaches the dataset — mask written to ``OUT/masks/<subset>/``) →
write the manifest and ``OUT/build_report.json``.

Resuming: each finished sample is appended to ``OUT/.build/<source>.jsonl`` after its
files were written atomically; a re-run reuses every sample whose record, fingerprint
(annotation + source file size/mtime) and files are all present, and redoes the rest.
An interrupted run therefore loses nothing finished and leaves no half-written file.
"""

from __future__ import annotations

import errno
import functools
import logging
import multiprocessing
import os
import stat
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from sim4seg._atomic import write_json
from sim4seg._jsonl import AppendLog
from sim4seg.data import prompts
from sim4seg.data.io import IMAGE_SUFFIXES
from sim4seg.data.schema import Answers, DatasetInfo, Sample, Source, write_manifest
from sim4seg.data.sources import SOURCES, get_source
from sim4seg.data.sources._base import Item, Scan, rel
from sim4seg.data.sources._convert import Result, convert_item, output_paths
from sim4seg.data.sources._splits import paper_order
from sim4seg.data.subsets import SPLITS, SUBSETS
from sim4seg.errors import InputError

log = logging.getLogger(__name__)

REPORT_FILE = "build_report.json"
STATE_DIR = ".build"


def parse_sources(specs: Iterable[str]) -> dict[str, Path]:
    """``["busi=/data/BUSI", ...]`` → ``{"busi": Path(...)}`` in registry order."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise InputError(f"--source expects NAME=PATH, got {spec!r} (names: {', '.join(SOURCES)})")
        get_source(name)
        if name in out:
            raise InputError(f"--source {name} given twice")
        out[name] = Path(path).expanduser()
    if not out:
        raise InputError(f"give at least one --source NAME=PATH (names: {', '.join(SOURCES)})")
    return {n: out[n] for n in SOURCES if n in out}


def check_max_side(max_side: int | None) -> None:
    if max_side is not None and max_side < 16:
        raise InputError(f"--max-side must be at least 16 pixels, got {max_side}")


def _unique_keys(items: list[Item]) -> None:
    """Make keys unique within a source (``key``, ``key-2``, ...), in a stable order."""
    seen: Counter = Counter()
    for it in sorted(items, key=lambda it: (it.key, it.image)):
        seen[it.key] += 1
        if seen[it.key] > 1:
            it.key = f"{it.key}-{seen[it.key]}"


def _entry_problem(path: Path, real_root: Path) -> str | None:
    """Why a directory entry cannot be read as a file of this dataset, or ``None``."""
    try:
        if path.is_symlink():
            target = path.resolve(strict=True)
            if not target.is_relative_to(real_root):
                return "symbolic link to outside the dataset folder (not followed)"
        mode = path.stat().st_mode
    except RuntimeError:  # Python < 3.13: resolve() on a loop
        return "symbolic link loop"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if isinstance(e, FileNotFoundError):
            return "broken symbolic link (its target does not exist)"
        return f"cannot read: {e.strerror or e}"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a file"
    if stat.S_ISDIR(mode):
        return None
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def audit_scan(scan: Scan, root: Path) -> None:
    """Report what a converter passed over without a word, and keep reads inside ``root``.

    Added to ``scan.skipped``: every entry under ``root`` with an image suffix that is a
    symbolic-link loop, a broken link, a link leading outside ``root``, a FIFO or another
    non-regular file; every item whose image or mask file resolves outside ``root``
    (symbolic links are followed only within the dataset folder); and every image file in a
    folder of mask files that no sample uses (a mask whose image is missing).
    """
    real_root = root.resolve()
    known = {s.file for s in scan.skipped} | {s.file for s in scan.excluded}
    for it in scan.items:
        known.update(it.files)
        known.update(rel(Path(p), root) for p in (it.image, *it.mask_files))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        for name in sorted(filenames + [n for n in dirnames if (d / n).is_symlink()]):
            p = d / name
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES and not (p.is_symlink() and not p.exists()):
                continue
            problem = _entry_problem(p, real_root)
            if problem and rel(p, root) not in {s.file for s in scan.skipped}:
                scan.skip(rel(p, root), problem)
                known.add(rel(p, root))
    kept = []
    for it in scan.items:
        outside = [p for p in (it.image, *it.mask_files) if not Path(p).resolve().is_relative_to(real_root)]
        if outside:
            scan.skip(
                rel(Path(outside[0]), root),
                "resolves to outside the dataset folder (symbolic links are followed only within it)",
            )
        else:
            kept.append(it)
    scan.items[:] = kept
    # A mask is accounted for when a used, skipped or excluded file has its stem or a stem it
    # extends at an underscore (``ISIC_0000014`` for ``ISIC_0000014_segmentation.png``).
    stems = {Path(f).stem for f in known}
    mask_dirs = {Path(m).parent for it in scan.items for m in it.mask_files}
    for d in sorted(mask_dirs):
        for p in sorted(d.iterdir()):
            r = rel(p, root)
            if r in known or p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith(".") or not p.is_file():
                continue
            parts = p.stem.split("_")
            if not any("_".join(parts[:i]) in stems for i in range(1, len(parts) + 1)):
                scan.skip(r, "mask file without its image (no image of that name)")
                known.add(r)


def _remove_stale_tmp(out: Path, subset: str) -> None:
    """Temporary files left by a killed run (atomic writes never leave anything else)."""
    for d in (out / "images" / subset, out / "masks" / subset):
        if d.is_dir():
            for p in d.glob(".*.tmp"):
                p.unlink(missing_ok=True)


def _relative(skip: dict, root: Path) -> dict:
    """Name a skipped file relative to its source root, as the scan does."""
    prefix = str(root) + os.sep
    if skip["file"].startswith(prefix):
        skip["file"] = skip["file"][len(prefix) :]
    return skip


def _reusable(rec: dict | None, item: Item, out: Path, max_side: int | None = None) -> bool:
    if rec is None or rec.get("fingerprint") != item.fingerprint() or rec.get("max_side") != max_side:
        return False
    image_rel, mask_rel = output_paths(item)
    img, mask = out / image_rel, out / mask_rel
    return mask.is_file() and img.is_file()


def _run(
    items: list[Item], out: Path, workers: int, pool, max_side: int | None = None
) -> Iterator[tuple[Item, Result]]:
    fn = functools.partial(convert_item, out_root=str(out), **({} if max_side is None else {"max_side": max_side}))
    if pool is None or workers <= 1 or len(items) < 2:
        for it in items:
            yield it, fn(it)
        return
    # Memory stays bounded: only metadata crosses processes (each worker reads and writes one image at a
    # time), tasks wait in a pipe that blocks when full, and results are consumed as they arrive.
    by_id = {it.sample_id: it for it in items}
    chunk = max(1, min(16, len(items) // (workers * 8)))
    for res in pool.imap_unordered(fn, items, chunksize=chunk):
        yield by_id[res.sample_id], res


def _sample(item: Item, res: dict, seed: int, info=None) -> Sample:
    info = SUBSETS[item.subset] if info is None else info
    sid = item.sample_id
    return Sample(
        id=sid,
        subset=item.subset,
        modality=info.modality,
        split=item.split,
        image=res["image"],
        mask=res["mask"],
        query=prompts.make_query(info, seed, sid),
        diagnosis=item.label,
        answers=Answers(**prompts.make_answers(item.label, seed, sid)),
        source=Source(
            dataset=item.subset,
            files=list(item.files),
            annotation_ids=list(res["ann_ids"]),
            mask_from=res["mask_from"] if res["instances"] else "empty",
            instances=res["instances"],
            original_size=res.get("original_size"),
        ),
    )


def build(
    out: str | os.PathLike,
    sources: dict[str, str | os.PathLike],
    *,
    workers: int = 1,
    seed: int = 0,
    paper_sizes: bool = False,
    progress: bool = False,
    max_side: int | None = None,
) -> dict:
    """Build an M3DS in ``out`` from ``{source name: path}``; return the build report.

    ``max_side``: store images whose longer side is larger downscaled to it (masks with them, nearest;
    the displayed size in ``source.original_size``), so training does not decode full-size files.
    """
    check_max_side(max_side)
    t0 = time.perf_counter()
    out = Path(out)
    roots = {name: get_source(name).locate(path) for name, path in sources.items()}
    scans: dict[str, Scan] = {}
    for name, root in roots.items():
        scans[name] = get_source(name).scan(root, seed)
        audit_scan(scans[name], root)
        _unique_keys(scans[name].items)
        log.info(
            "%s: %d samples found, %d skipped, %d excluded",
            name,
            len(scans[name].items),
            len(scans[name].skipped),
            len(scans[name].excluded),
        )
    report: dict = {
        "out": str(out),
        "seed": seed,
        "paper_sizes": paper_sizes,
        "max_side": max_side,
        "workers": workers,
        "sources": {},
    }
    samples: list[Sample] = []
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    # fork: workers inherit the imported modules and need no importable __main__ (spawn does).
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        for name, scan in scans.items():
            samples += _build_source(
                name, roots[name], scan, out, workers, pool, seed, paper_sizes, progress, report, max_side=max_side
            )
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    samples.sort(key=lambda s: (list(SOURCES).index(s.source.dataset), SPLITS.index(s.split), s.id))
    info = DatasetInfo(
        subsets={SUBSETS[get_source(n).SUBSET].name: SUBSETS[get_source(n).SUBSET] for n in scans},
        build={
            "command": "build",
            "seed": seed,
            "paper_sizes": paper_sizes,
            "max_side": max_side,
            "sources": {n: str(r) for n, r in roots.items()},
        },
    )
    write_manifest(out, samples, info)
    report["totals"] = {split: sum(1 for s in samples if s.split == split) for split in SPLITS}
    report["skipped"] = sum(len(r["skipped"]) for r in report["sources"].values())
    report["excluded"] = sum(len(r["excluded"]) for r in report["sources"].values())
    report["elapsed_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / REPORT_FILE, report)
    return report


class _Converter:
    """Converts items of one source, appending each finished one to the state file."""

    def __init__(
        self, name: str, root: Path, out: Path, workers: int, pool, progress: bool, max_side: int | None = None
    ):
        self.root, self.out, self.workers, self.pool, self.max_side = root, out, workers, pool, max_side
        self.state_path = out / STATE_DIR / f"{name}.jsonl"
        with AppendLog(self.state_path) as log_:
            self.state = {rec["id"]: rec for rec in log_.records}
        self.done: dict[str, dict] = {}
        self.skipped: list[dict] = []
        self.writes: Counter = Counter()
        self.converted = self.reused = 0
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=0, desc=name, unit="img")

    def run(self, items: list[Item]) -> None:
        """Convert (or reuse) ``items``; successes land in ``done``."""
        pending = []
        for it in items:
            rec = self.state.get(it.sample_id)
            if _reusable(rec, it, self.out, self.max_side):
                self.done[it.sample_id] = rec
                self.skipped += rec.get("dropped", [])
                self.writes["exists"] += 1
                self.reused += 1
            else:
                pending.append(it)
        if self.bar is not None:
            self.bar.total += len(pending)
            self.bar.refresh()
        with AppendLog(self.state_path, fsync="close") as state_file:
            for item, res in _run(pending, self.out, self.workers, self.pool, self.max_side):
                self.converted += 1
                dropped = [_relative(s.to_json(), self.root) for s in res.skipped]
                self.skipped += dropped
                if res.ok:
                    rec = {
                        "id": item.sample_id,
                        "fingerprint": item.fingerprint(),
                        "image": res.image,
                        "mask": res.mask,
                        "instances": res.instances,
                        "mask_from": res.mask_from,
                        "ann_ids": res.ann_ids,
                        "dropped": dropped,
                        "max_side": self.max_side,
                        "original_size": res.original_size,
                    }
                    state_file.append(rec)
                    self.done[item.sample_id] = rec
                    self.writes[res.image_write] += 1
                if self.bar is not None:
                    self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _build_source(
    name: str,
    root: Path,
    scan: Scan,
    out: Path,
    workers: int,
    pool,
    seed: int,
    paper_sizes: bool,
    progress: bool,
    report: dict,
    *,
    max_side: int | None = None,
    info=None,
) -> list[Sample]:
    """Convert one source's items (``info``: its subset, default the registry's) and report on them."""
    subset = get_source(name).SUBSET if info is None else info.name
    items = sorted(scan.items, key=lambda it: it.sample_id)
    _remove_stale_tmp(out, subset)
    conv = _Converter(name, root, out, workers, pool, progress, max_side)
    dropped = {s: 0 for s in SPLITS}
    try:
        if not paper_sizes:
            conv.run(items)
            kept = items
        else:
            # Take candidates in paper order until each split has its Table 1 count of
            # converted samples (a candidate that fails to convert is replaced by the next).
            info = SUBSETS[subset] if info is None else info
            order = paper_order(items, info.no_finding, seed)
            kept, cursor = [], {s: 0 for s in SPLITS}
            while True:
                batch = []
                for split, target in zip(SPLITS, info.paper_sizes):
                    have = sum(1 for it in kept if it.split == split and it.sample_id in conv.done)
                    take = order[split][cursor[split] : cursor[split] + max(target - have, 0)]
                    cursor[split] += len(take)
                    batch += take
                if not batch:
                    break
                conv.run(batch)
                kept += batch
            for split in SPLITS:
                dropped[split] = len(order[split]) - cursor[split]
            kept.sort(key=lambda it: it.sample_id)
    finally:
        conv.close()
    samples = [_sample(it, conv.done[it.sample_id], seed, info) for it in kept if it.sample_id in conv.done]
    counts: dict[str, dict[str, int]] = {}
    for s in samples:
        counts.setdefault(s.split, {}).setdefault(s.diagnosis, 0)
        counts[s.split][s.diagnosis] += 1
    report["sources"][name] = {
        "root": str(root),
        "subset": subset,
        "counts": {sp: dict(sorted(counts[sp].items())) for sp in SPLITS if sp in counts},
        "total": len(samples),
        "converted": conv.converted,
        "reused": conv.reused,
        "images": dict(conv.writes),
        "dropped_by_paper_sizes": dropped,
        "skipped": [s.to_json() for s in scan.skipped] + conv.skipped,
        "excluded": [s.to_json() for s in scan.excluded],
    }
    return samples


def summary(report: dict) -> str:
    """A printable summary of a build report."""
    lines = []
    for name, r in report["sources"].items():
        per = " ".join(f"{sp}={sum(r['counts'].get(sp, {}).values())}" for sp in SPLITS)
        lines.append(
            f"{name:<14} {r['total']:>6} samples ({per}); reused {r['reused']}, "
            f"skipped {len(r['skipped'])}, excluded {len(r['excluded'])}"
        )
        for label in sorted({lb for sp in r["counts"].values() for lb in sp}):
            n = sum(sp.get(label, 0) for sp in r["counts"].values())
            lines.append(f"{'':<16}{label}: {n}")
        for s in r["skipped"][:10]:
            lines.append(f"{'':<16}skipped {s['file']}: {s['reason']}")
        if len(r["skipped"]) > 10:
            lines.append(f"{'':<16}... {len(r['skipped']) - 10} more in {REPORT_FILE}")
    t = report["totals"]
    lines.append(
        f"total: {sum(t.values())} samples ("
        + ", ".join(f"{k} {v}" for k, v in t.items())
        + f"); {report['skipped']} skipped, {report['excluded']} excluded; {report['elapsed_s']}s"
    )
    return "\n".join(lines)
