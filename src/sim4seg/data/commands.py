"""``sim4seg data ...`` subcommands."""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def synth(out: str, n: int, seed: int, subsets: list[str] | None, min_size: int, max_size: int) -> int:
    """Write a synthetic M3DS of N samples to OUT."""
    from sim4seg.data.synthetic import synthesize

    t0 = time.perf_counter()
    try:
        info = synthesize(out, n, seed, subsets=subsets, size_range=(min_size, max_size), progress=True)
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


def demo(out: str, n: int, seed: int) -> int:
    """The main job (data stage): synthesize an M3DS in OUT/m3ds, verify it and print its tables."""
    from pathlib import Path

    root = str(Path(out) / "m3ds")
    synth(root, n, seed, None, 160, 256)
    stats(root)
    return verify(root, quick=False)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded default (synthetic M3DS)",
                       description=demo.__doc__)
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    p.add_argument("--n", type=int, default=500, help="synthetic samples (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(handler=demo)

    data = sub.add_parser("data", help="build, inspect and check M3DS manifests")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("synth", help=synth.__doc__, description=synth.__doc__)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n", type=int, required=True, help="number of samples (shared equally by the subsets)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--subsets", nargs="+", default=None, metavar="NAME", help="subsets to draw (default: all ten)")
    p.add_argument("--min-size", type=int, default=160, help="smallest image side in pixels (default 160)")
    p.add_argument("--max-size", type=int, default=256, help="largest image side in pixels (default 256)")
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
