"""A user's own folder of images and masks as an M3DS subset (``sim4seg data import``).

Input: ``IMAGES/`` and ``MASKS/`` (flat folders), matched by file stem — a mask is
``<stem>.<ext>`` or ``<stem><mask_suffix>.<ext>`` (default suffix ``_mask``) — and optionally
a CSV of labels with a header naming an image column (``image``, ``file``, ``filename``,
``name``, ``stem`` or ``id``; a value with or without its suffix) and a label column
(``label``, ``diagnosis`` or ``class``), plus optionally a ``split`` column (train/val/test)
that is then used as given. Without a CSV every sample gets one label.

The subset is declared in ``OUT/dataset_info.json`` with its label set (the labels found),
modality, target and no-finding label; an image with the no-finding label needs no mask (its
mask is empty). Splits: the CSV's, else seeded and stratified by label (the builder's
``stratified_split``, default 80/10/10). Conversion, resuming, ``--max-side`` and the report
are those of ``data build``; importing into an existing M3DS adds (or replaces) this subset
and keeps the others. Every unmatched file is listed in ``OUT/import_<subset>_report.json``.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

from sim4seg._atomic import write_json
from sim4seg.data.build import _build_source, check_max_side
from sim4seg.data.schema import INFO_FILE, DatasetInfo, read_info, read_split, write_manifest
from sim4seg.data.sources._base import Item, Scan, is_image, read_csv_rows, slug
from sim4seg.data.sources._splits import stratified_split
from sim4seg.data.subsets import MODALITIES, SPLITS, SUBSETS, SubsetInfo
from sim4seg.errors import InputError

IMAGE_COLUMNS = ("image", "file", "filename", "name", "stem", "id")
LABEL_COLUMNS = ("label", "diagnosis", "class")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _stem(name: str) -> str:
    return (
        Path(name).stem
        if Path(name).suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
        else name
    )


def read_labels(path: Path) -> tuple[dict[str, str], dict[str, str], list[tuple[int, str]]]:
    """``({stem: label}, {stem: split}, [(line, stem) of rows naming the same image twice]);`` a bad header is an error."""
    rows = read_csv_rows(path)
    if not rows:
        raise InputError("the labels CSV is empty", path)
    header = [h.casefold() for h in rows[0]]
    img_col = next((header.index(c) for c in IMAGE_COLUMNS if c in header), None)
    lab_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if img_col is None or lab_col is None:
        raise InputError(
            f"the first row must name an image column ({', '.join(IMAGE_COLUMNS)}) and a label column "
            f"({', '.join(LABEL_COLUMNS)}); got {rows[0]}",
            path,
            1,
        )
    split_col = header.index("split") if "split" in header else None
    labels: dict[str, str] = {}
    splits: dict[str, str] = {}
    dupes = []
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) <= max(img_col, lab_col) or not row[img_col] or not row[lab_col]:
            raise InputError("a row needs an image name and a label", path, lineno)
        stem = _stem(Path(row[img_col]).name)
        if stem in labels:
            dupes.append((lineno, stem))
            continue
        labels[stem] = row[lab_col]
        if split_col is not None and len(row) > split_col and row[split_col]:
            if row[split_col] not in SPLITS:
                raise InputError(f"split must be one of {SPLITS}, got {row[split_col]!r}", path, lineno)
            splits[stem] = row[split_col]
    return labels, splits, dupes


def _by_stem(folder: Path, scan: Scan, what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not is_image(p):
            continue
        if p.stem in out:
            scan.skip(p.name, f"two {what} files with the stem {p.stem!r} ({out[p.stem].name} is used)")
            continue
        out[p.stem] = p
    return out


def scan_folder(
    images: Path,
    masks: Path,
    info: SubsetInfo,
    *,
    labels: dict[str, str] | None,
    label: str | None,
    splits: dict[str, str],
    mask_suffix: str,
    ratios: tuple[int, int, int],
    seed: int,
) -> Scan:
    """Match images, masks and labels by stem; every unmatched file is a skip with its reason."""
    scan = Scan()
    imgs = _by_stem(images, scan, "image")
    msks = _by_stem(masks, scan, "mask")
    used_masks: set[str] = set()
    for stem, img in imgs.items():
        lab = label if labels is None else labels.get(stem)
        if lab is None:
            scan.skip(f"{images.name}/{img.name}", "no row in the labels CSV")
            continue
        mask_stem = stem if stem in msks else stem + mask_suffix if stem + mask_suffix in msks else None
        item = Item(
            subset=info.name,
            key=slug(stem),
            label=lab,
            image=str(img.resolve()),
            files=[f"{images.name}/{img.name}"],
            split=splits.get(stem),
        )
        if lab == info.no_finding:
            item.mask_from = "empty"
            if mask_stem is not None:
                used_masks.add(mask_stem)
        elif mask_stem is None:
            scan.skip(f"{images.name}/{img.name}", f"no mask {stem}.* or {stem}{mask_suffix}.* in {masks}")
            continue
        else:
            used_masks.add(mask_stem)
            m = msks[mask_stem]
            item.mask_from, item.mask_files, item.ann_ids = "pixel", [str(m.resolve())], [m.name]
            item.files.append(f"{masks.name}/{m.name}")
        scan.items.append(item)
    for stem, m in msks.items():
        if stem not in used_masks:
            scan.skip(f"{masks.name}/{m.name}", "mask without an image of the same stem")
    if labels is not None:
        for stem in sorted(set(labels) - set(imgs)):
            scan.skip(f"labels CSV: {stem}", "a row without an image of that stem")
    keys = Counter(it.key for it in scan.items)
    for it in scan.items:
        if keys[it.key] > 1:
            it.key = f"{it.key}-{slug(Path(it.image).suffix.lstrip('.'))}"
    if not splits:
        stratified_split(scan.items, ratios, seed)
    else:
        for it in scan.items:
            if it.split is None:
                scan.skip(it.files[0], "no split in the labels CSV (give every row one, or none)")
        scan.items = [it for it in scan.items if it.split is not None]
    return scan


def import_folder(
    out: str | os.PathLike,
    images: str | os.PathLike,
    masks: str | os.PathLike,
    *,
    subset: str,
    modality: str,
    labels_csv: str | os.PathLike | None = None,
    label: str | None = None,
    no_finding: str | None = None,
    target: str = "lesion",
    title: str | None = None,
    mask_suffix: str = "_mask",
    ratios: tuple[int, int, int] = (80, 10, 10),
    seed: int = 0,
    max_side: int | None = None,
    workers: int = 1,
    progress: bool = False,
) -> dict:
    """Import ``images`` + ``masks`` (+ labels) as subset ``subset`` of the M3DS in ``out``; return the report."""
    t0 = time.perf_counter()
    check_max_side(max_side)
    out, images, masks = Path(out), Path(images).expanduser(), Path(masks).expanduser()
    if not _NAME.match(subset):
        raise InputError(
            f"--subset must be lower-case letters, digits and '_' (starting with a letter), got {subset!r}"
        )
    if subset in SUBSETS:
        raise InputError(
            f"{subset!r} is one of the paper's subsets: build it with `sim4seg data build --source "
            f"{subset}=PATH`, or import under another name"
        )
    if modality not in MODALITIES:
        raise InputError(f"--modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    for p, what in ((images, "images"), (masks, "masks")):
        if not p.is_dir():
            raise InputError(f"{what} folder not found", p)
    if sum(ratios) <= 0 or min(ratios) < 0:
        raise InputError(f"--ratios must be three non-negative numbers with a positive sum, got {list(ratios)}")
    labels = splits = None
    dupes: list = []
    if labels_csv is not None:
        labels, splits, dupes = read_labels(Path(labels_csv))
        label_set = sorted(set(labels.values()))
    else:
        label = label or target
        label_set = [label]
    if no_finding is not None and no_finding not in label_set:
        raise InputError(f"--no-finding {no_finding!r} is not among the labels {label_set}")
    info = SubsetInfo(subset, title or subset, modality, tuple(label_set), target=target, no_finding=no_finding)
    scan = scan_folder(
        images,
        masks,
        info,
        labels=labels,
        label=label,
        splits=splits or {},
        mask_suffix=mask_suffix,
        ratios=ratios,
        seed=seed,
    )
    for lineno, stem in dupes:
        scan.skip(f"{Path(labels_csv).name}:{lineno}", f"a second row for {stem!r} (the first is used)")
    if not scan.items:
        raise InputError(
            "no image was matched with a mask and a label; fix the names "
            f"({len(scan.skipped)} file(s) unmatched, e.g. "
            + "; ".join(f"{s.file}: {s.reason}" for s in scan.skipped[:3])
            + ")",
            images,
        )
    used = sorted({it.label for it in scan.items})
    if used != label_set:
        info = SubsetInfo(
            subset,
            info.title,
            modality,
            tuple(used),
            target=target,
            no_finding=no_finding if no_finding in used else None,
        )
    settings = {
        "images": str(images.resolve()),
        "masks": str(masks.resolve()),
        "labels": None if labels_csv is None else str(Path(labels_csv).resolve()),
        "seed": seed,
        "ratios": list(ratios),
        "max_side": max_side,
        "mask_suffix": mask_suffix,
        "splits": "csv" if splits else "stratified",
    }
    report: dict = {"out": str(out), "subset": subset, "settings": settings, "sources": {}}
    out.mkdir(parents=True, exist_ok=True)
    (out / ".build").mkdir(exist_ok=True)
    pool = None
    if workers > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        pool = ctx.Pool(workers)
    try:
        new = _build_source(
            f"import-{subset}",
            images.parent,
            scan,
            out,
            workers,
            pool,
            seed,
            False,
            progress,
            report,
            max_side=max_side,
            info=info,
        )
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    if (out / INFO_FILE).is_file():  # add to an existing M3DS: keep its other subsets
        old = read_info(out)
        kept = [s for split in SPLITS for s in read_split(out, split, old) if s.subset != subset]
        build = dict(old.build)
        subsets = {**{k: v for k, v in old.subsets.items() if k != subset}, subset: info}
    else:
        kept, build, subsets = [], {"command": "import"}, {subset: info}
    build.setdefault("imports", {})[subset] = settings
    write_manifest(
        out, kept + sorted(new, key=lambda s: (SPLITS.index(s.split), s.id)), DatasetInfo(subsets=subsets, build=build)
    )
    src = report["sources"].pop(f"import-{subset}")
    report.update(src)
    report["label_set"] = list(info.labels)
    report["elapsed_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / f"import_{subset}_report.json", report)
    return report
