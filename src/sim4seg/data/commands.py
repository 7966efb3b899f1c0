"""``sim4seg data ...`` subcommands."""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def synth(out: str, n: int, seed: int, subsets: list[str] | None, min_size: int, max_size: int,
          lesion_scale: list[float], distractors: list[int]) -> int:
    """Write a synthetic M3DS of N samples to OUT (harder with a smaller --lesion-scale and --distractors)."""
    from sim4seg.data.synthetic import synthesize

    t0 = time.perf_counter()
    try:
        info = synthesize(out, n, seed, subsets=subsets, size_range=(min_size, max_size), progress=True,
                          lesion_scale=tuple(lesion_scale), distractors=tuple(distractors))
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


def export(root: str, out: str) -> int:
    """Export the manifest at ROOT to Parquet files in OUT (loadable with HF datasets)."""
    from sim4seg.data.export import export_parquet

    rows = export_parquet(root, out)
    print("wrote " + ", ".join(f"{split}: {n}" for split, n in rows.items()) + f" rows to {out}")
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
    p.add_argument("--lesion-scale", type=float, nargs=2, default=[0.10, 0.22], metavar=("LO", "HI"),
                   help="lesion radius range as a fraction of the shorter side (default 0.10 0.22; "
                        "0.06 0.09 makes each lesion about 1-2.5%% of the image)")
    p.add_argument("--distractors", type=int, nargs=2, default=[0, 0], metavar=("MIN", "MAX"),
                   help="blobs per image in styles of no label of the subset, not in the mask (default 0 0)")
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
    p.add_argument("--out", required=True, help="output directory for {train,val,test}.parquet")
    p.set_defaults(handler=export)

    _register_build(dsub)


def build(sources: list[str], out: str, workers: int, seed: int, paper_sizes: bool) -> int:
    """Convert downloaded public datasets (--source NAME=PATH ...) into one M3DS in OUT.

    Exit status 1 when any file or annotation was skipped (listed in OUT/build_report.json).
    """
    from sim4seg.data.build import REPORT_FILE, build as run_build, parse_sources, summary

    if workers < 1:
        from sim4seg.errors import InputError

        raise InputError(f"--workers must be >= 1, got {workers}")
    report = run_build(out, parse_sources(sources), workers=workers, seed=seed, paper_sizes=paper_sizes,
                       progress=True)
    print(summary(report))
    print(f"report: {out}/{REPORT_FILE}")
    return 1 if report["skipped"] else 0


def _register_build(dsub: argparse._SubParsersAction) -> None:
    import os

    from sim4seg.data.sources import SOURCES

    p = dsub.add_parser("build", help="convert the downloaded public datasets into one M3DS",
                        description=build.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="sources and their expected layouts:\n" + "\n".join(
                            f"  {n:<14} {m.LAYOUT}" for n, m in SOURCES.items())
                        + "\n\nexample:\n  sim4seg data build --source busi=~/data/Dataset_BUSI_with_GT "
                          "--source kvasir_seg=~/data/Kvasir-SEG --out m3ds --workers 4")
    p.add_argument("--source", dest="sources", action="append", required=True, metavar="NAME=PATH",
                   help="a dataset to convert and its folder (repeat for several)")
    p.add_argument("--out", required=True, help="output M3DS directory (re-running resumes)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="worker processes (default: CPU count, at most 8)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, subsampling and prompts (default 0)")
    p.add_argument("--paper-sizes", action="store_true",
                   help="subsample each subset deterministically to the paper's Table 1 counts")
    p.set_defaults(handler=build)
