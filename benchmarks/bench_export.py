"""Peak memory of ``sim4seg data export`` as the split grows: streamed vs all in memory.

Synthesizes ``--n`` images (``sim4seg data synth``, small images), then for each size in
``--sizes`` makes a manifest whose train split holds that many samples (the same image
files) and exports it in a fresh ``sim4seg data export`` process, measuring its peak
resident memory (``wait4`` rusage). Both exports run the same way, in a child process of
this script that imports only what the export needs (the ``sim4seg`` CLI process itself
starts larger, from the modules it imports). The baseline, measured in the same run, is
the former export, which gathered a whole split's rows and Arrow table in memory.

    python benchmarks/bench_export.py [--n 10000] [--sizes 1000 4000 10000] [--max-shard-size 50MB]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def export_in_memory(root: str, out: str) -> None:
    """The former ``export_parquet`` (before streaming): one table per split, built in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sim4seg.data.schema import iter_split, read_info

    root_p, out_p = Path(root), Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    info = read_info(root_p)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("subset", pa.string()),
            ("modality", pa.string()),
            ("split", pa.string()),
            ("image", image_type),
            ("mask", image_type),
            ("query", pa.string()),
            ("diagnosis", pa.string()),
            ("answers", pa.string()),
            ("cot", pa.string()),
            ("source", pa.string()),
        ]
    )
    for split in ("train", "val", "test"):
        rows = []
        for s in iter_split(root_p, split, info):
            row = s.to_json()
            for key in ("image", "mask"):
                row[key] = {"bytes": (root_p / row[key]).read_bytes(), "path": row[key]}
            row["answers"] = json.dumps(row["answers"])
            row["source"] = json.dumps(row["source"])
            rows.append(row)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out_p / f"{split}.parquet")


def make_split(full: Path, dst: Path, records: list[dict], n: int) -> int:
    """A manifest at ``dst`` whose train split is the first ``n`` records; returns its image + mask bytes."""
    dst.mkdir(parents=True)
    for d in ("images", "masks"):
        (dst / d).symlink_to(full / d)
    shutil.copy(full / "dataset_info.json", dst / "dataset_info.json")
    size = 0
    with open(dst / "train.jsonl", "w", encoding="utf-8") as f:
        for rec in records[:n]:
            f.write(json.dumps({**rec, "split": "train"}) + "\n")
            size += (full / rec["image"]).stat().st_size + (full / rec["mask"]).stat().st_size
    for split in ("val", "test"):
        (dst / f"{split}.jsonl").write_text("")
    return size


def measure(cmd: list[str]) -> tuple[float, int]:
    """Seconds and peak RSS (MiB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="images to synthesize (default 10000)")
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="split sizes to export (default: n/10, 4n/10, n)"
    )
    ap.add_argument("--min-size", type=int, default=96, help="smallest image side, px (default 96)")
    ap.add_argument("--max-size", type=int, default=160, help="largest image side, px (default 160)")
    ap.add_argument("--max-shard-size", default="50MB", help="shard size of the export (default 50MB)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the in-memory baseline")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it")
    ap.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:  # one export in this (fresh) process
        how, root, out, shard = args._child
        if how == "memory":
            return export_in_memory(root, out)
        from sim4seg.data.export import export_parquet, parse_size

        export_parquet(root, out, max_shard_size=parse_size(shard))
        return None

    from sim4seg.data.synthetic import synthesize

    sizes = args.sizes or [args.n // 10, 4 * args.n // 10, args.n]
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench_export_"))
    try:
        t0 = time.perf_counter()
        full = base / "full"
        synthesize(full, args.n, 0, size_range=(args.min_size, args.max_size))
        records = [
            json.loads(line)
            for split in ("train", "val", "test")
            for line in (full / f"{split}.jsonl").read_text().splitlines()
        ]
        print(
            f"synthesized {len(records)} images ({args.min_size}-{args.max_size} px) in "
            f"{time.perf_counter() - t0:.0f}s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        print(
            f"{'samples':>8} {'split MB':>9} {'shards':>7} {'export s':>9} {'peak RSS MiB':>13}"
            + ("" if args.no_baseline else f" {'in-memory MiB':>14} {'ratio':>6}")
        )
        for n in sizes:
            root = base / f"split-{n}"
            size = make_split(full, root, records, min(n, len(records)))
            out = base / f"out-{n}"
            seconds, rss = measure(
                [sys.executable, __file__, "--_child", "streamed", str(root), str(out), args.max_shard_size]
            )
            shards = len(list((out / "data").glob("train-*.parquet")))
            line = f"{min(n, len(records)):>8} {size / 1e6:>9.1f} {shards:>7} {seconds:>9.1f} {rss:>13}"
            if not args.no_baseline:
                mem = base / f"mem-{n}"
                _, rss0 = measure([sys.executable, __file__, "--_child", "memory", str(root), str(mem), ""])
                line += f" {rss0:>14} {rss / rss0:>6.2f}"
                shutil.rmtree(mem)
            print(line, flush=True)
            shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
