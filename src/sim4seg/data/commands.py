"""``sim4seg data ...`` subcommands."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def synth(
    out: str,
    n: int,
    seed: int,
    subsets: list[str] | None,
    min_size: int,
    max_size: int,
    lesion_scale: list[float],
    distractors: list[int],
) -> int:
    """Write a synthetic M3DS of N samples to OUT (harder with a smaller --lesion-scale and --distractors)."""
    from sim4seg.data.synthetic import synthesize

    t0 = time.perf_counter()
    try:
        info = synthesize(
            out,
            n,
            seed,
            subsets=subsets,
            size_range=(min_size, max_size),
            progress=True,
            lesion_scale=tuple(lesion_scale),
            distractors=tuple(distractors),
        )
    except ValueError as e:
        from sim4seg.errors import InputError

        raise InputError(str(e)) from None
    total = sum(sum(v.values()) for v in info.counts.values())
    print(f"wrote {total} samples to {out} in {time.perf_counter() - t0:.1f}s")
    return 0


def stats(root: str) -> int:
    """Print the Table 1 layout and the label distribution of the manifest at ROOT."""
    from sim4seg.data.stats import collect, label_table, table1

    info, samples = collect(root)
    print(table1(info, samples))
    print()
    print(label_table(info, samples))
    return 0


def verify(root: str, quick: bool) -> int:
    """Check every record of ROOT; list all problems; exit 1 if there are any."""
    from sim4seg.data.verify import verify as run_verify

    checked, problems = run_verify(root, decode=not quick)
    for p in problems:
        print(p)
    status = "OK" if not problems else f"{len(problems)} problem(s)"
    print(f"checked {checked} record(s): {status}")
    return 1 if problems else 0


def export(root: str, out: str, max_shard_size: str) -> int:
    """Export the manifest at ROOT to sharded Parquet files in OUT/data (the Hugging Face layout)."""
    from sim4seg.data.export import export_parquet, parse_size

    rows = export_parquet(root, out, max_shard_size=parse_size(max_shard_size))
    print("wrote " + ", ".join(f"{split}: {n}" for split, n in rows.items()) + f" rows to {Path(out) / 'data'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build, inspect and check M3DS manifests")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("synth", help=synth.__doc__, description=synth.__doc__)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n", type=int, required=True, help="number of samples (shared equally by the subsets)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--subsets", nargs="+", default=None, metavar="NAME", help="subsets to draw (default: all ten)")
    p.add_argument("--min-size", type=int, default=160, help="smallest image side in pixels (default 160)")
    p.add_argument("--max-size", type=int, default=256, help="largest image side in pixels (default 256)")
    p.add_argument(
        "--lesion-scale",
        type=float,
        nargs=2,
        default=[0.10, 0.22],
        metavar=("LO", "HI"),
        help="lesion radius range as a fraction of the shorter side (default 0.10 0.22; "
        "0.06 0.09 makes each lesion about 1-2.5%% of the image)",
    )
    p.add_argument(
        "--distractors",
        type=int,
        nargs=2,
        default=[0, 0],
        metavar=("MIN", "MAX"),
        help="blobs per image in styles of no label of the subset, not in the mask (default 0 0)",
    )
    p.set_defaults(handler=synth)

    p = dsub.add_parser("stats", help=stats.__doc__, description=stats.__doc__)
    p.add_argument("root", metavar="DIR", help="M3DS directory")
    p.set_defaults(handler=stats)

    p = dsub.add_parser("verify", help=verify.__doc__, description=verify.__doc__)
    p.add_argument("root", metavar="DIR", help="M3DS directory")
    p.add_argument("--quick", action="store_true", help="read image headers only instead of decoding every image")
    p.set_defaults(handler=verify)

    p = dsub.add_parser("export", help=export.__doc__, description=export.__doc__)
    p.add_argument("root", metavar="DIR", help="M3DS directory")
    p.add_argument(
        "--out", required=True, help="output directory: OUT/data/{split}-NNNNN-of-NNNNN.parquet and dataset_info.json"
    )
    p.add_argument(
        "--max-shard-size", default="500MB", help="largest Parquet file, e.g. 500MB, 2GB, 512MiB (default 500MB)"
    )
    p.set_defaults(handler=export)

    _register_build(dsub)


def build(sources: list[str], out: str, workers: int, seed: int, paper_sizes: bool, max_side: int | None) -> int:
    """Convert downloaded public datasets (--source NAME=PATH ...) into one M3DS in OUT.

    Exit status 1 when any file or annotation was skipped (listed in OUT/build_report.json).
    """
    from sim4seg.data.build import REPORT_FILE, parse_sources, summary
    from sim4seg.data.build import build as run_build

    if workers < 1:
        from sim4seg.errors import InputError

        raise InputError(f"--workers must be >= 1, got {workers}")
    report = run_build(
        out,
        parse_sources(sources),
        workers=workers,
        seed=seed,
        paper_sizes=paper_sizes,
        progress=True,
        max_side=max_side,
    )
    print(summary(report))
    print(f"report: {out}/{REPORT_FILE}")
    return 1 if report["skipped"] else 0


def import_(
    images: str,
    masks: str,
    labels: str | None,
    label: str | None,
    no_finding: str | None,
    subset: str,
    modality: str,
    target: str,
    title: str | None,
    mask_suffix: str,
    ratios: list[int],
    seed: int,
    max_side: int | None,
    out: str,
    workers: int,
) -> int:
    """Turn your own folder of images + masks (+ a labels CSV) into a subset of the M3DS in OUT.

    Images and masks are matched by file stem; the subset is declared in OUT/dataset_info.json (a new M3DS, or
    added beside the subsets already there) and every record is checked. Exit status 1 when any file was left
    unmatched or unreadable (listed in OUT/import_<subset>_report.json). Guide: docs/custom-data.md."""
    from sim4seg.data.importer import import_folder
    from sim4seg.data.verify import verify as run_verify
    from sim4seg.errors import InputError

    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    t0 = time.perf_counter()
    r = import_folder(
        out,
        images,
        masks,
        subset=subset,
        modality=modality,
        labels_csv=labels,
        label=label,
        no_finding=no_finding,
        target=target,
        title=title,
        mask_suffix=mask_suffix,
        ratios=tuple(ratios),
        seed=seed,
        max_side=max_side,
        workers=workers,
        progress=True,
    )
    per = ", ".join(f"{sp} {sum(r['counts'].get(sp, {}).values())}" for sp in ("train", "val", "test"))
    print(
        f"{subset}: {r['total']} samples ({per}); labels: "
        + ", ".join(f"{lb} {sum(c.get(lb, 0) for c in r['counts'].values())}" for lb in r["label_set"])
    )
    if r["images"].get("resized"):
        print(f"  {r['images']['resized']} image(s) stored downscaled to a longer side of {max_side} px")
    for s in r["skipped"][:20]:
        print(f"  skipped {s['file']}: {s['reason']}")
    if len(r["skipped"]) > 20:
        print(f"  ... {len(r['skipped']) - 20} more in {out}/import_{subset}_report.json")
    checked, problems = run_verify(out, decode=False)
    for p in problems:
        print(p)
    print(
        f"checked {checked} record(s) of {out}: {'OK' if not problems else f'{len(problems)} problem(s)'}; "
        f"{len(r['skipped'])} file(s) skipped; {time.perf_counter() - t0:.1f}s; report: "
        f"{out}/import_{subset}_report.json"
    )
    return 1 if problems or r["skipped"] else 0


def _register_build(dsub: argparse._SubParsersAction) -> None:
    import os

    from sim4seg.data.sources import SOURCES

    p = dsub.add_parser(
        "build",
        help="convert the downloaded public datasets into one M3DS",
        description=build.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sources and their expected layouts:\n"
        + "\n".join(f"  {n:<14} {m.LAYOUT}" for n, m in SOURCES.items())
        + "\n\nexample:\n  sim4seg data build --source busi=~/data/Dataset_BUSI_with_GT "
        "--source kvasir_seg=~/data/Kvasir-SEG --out m3ds --workers 4",
    )
    p.add_argument(
        "--source",
        dest="sources",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a dataset to convert and its folder (repeat for several)",
    )
    p.add_argument("--out", required=True, help="output M3DS directory (re-running resumes)")
    p.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="worker processes (default: CPU count, at most 8)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for splits, subsampling and prompts (default 0)")
    p.add_argument(
        "--paper-sizes",
        action="store_true",
        help="subsample each subset deterministically to the paper's Table 1 counts",
    )
    _max_side_arg(p)
    p.set_defaults(handler=build)

    from sim4seg.data.subsets import MODALITIES

    p = dsub.add_parser(
        "import",
        help="turn your own folder of images + masks (+ labels CSV) into an M3DS subset",
        description=import_.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  sim4seg data import --images my/images --masks my/masks --labels "
        "my/labels.csv --subset wrist_xr --modality xray --target fracture --out m3ds-mine",
    )
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images (JPEG, PNG, BMP, TIFF, DICOM)")
    p.add_argument(
        "--masks",
        required=True,
        metavar="DIR",
        help="folder of masks named like the images (<stem>.png or <stem>_mask.png; nonzero = finding)",
    )
    p.add_argument(
        "--labels",
        default=None,
        metavar="CSV",
        help="CSV with a header: an image column (image/file/filename/name/stem/id), a label column "
        "(label/diagnosis/class) and optionally split (train/val/test)",
    )
    p.add_argument("--label", default=None, help="without --labels: the one label of every sample (default: --target)")
    p.add_argument(
        "--no-finding",
        default=None,
        metavar="LABEL",
        help="the label of images with nothing to segment (their mask is empty; no mask file needed)",
    )
    p.add_argument("--subset", required=True, metavar="NAME", help="name of the new subset (lower case, e.g. wrist_xr)")
    p.add_argument("--modality", required=True, choices=tuple(MODALITIES))
    p.add_argument("--target", default="lesion", help="what the masks show, as queries name it (default: lesion)")
    p.add_argument("--title", default=None, help="the subset's name in tables (default: NAME)")
    p.add_argument("--mask-suffix", default="_mask", help="a mask may be named <stem><suffix>.png (default _mask)")
    p.add_argument(
        "--ratios",
        type=int,
        nargs=3,
        default=[80, 10, 10],
        metavar=("TRAIN", "VAL", "TEST"),
        help="split ratios, seeded and stratified by label, unless the CSV has a split column (default 80 10 10)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for splits and prompts (default 0)")
    _max_side_arg(p)
    p.add_argument("--out", required=True, help="M3DS directory to create or add the subset to (re-running resumes)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.set_defaults(handler=import_)


def _max_side_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-side",
        type=int,
        default=None,
        metavar="PX",
        help="store images whose longer side exceeds PX downscaled to PX (masks with them, nearest; the "
        "original size kept in each record's source.original_size), so training does not decode "
        "full-size files at every step (default: store images as they are)",
    )
