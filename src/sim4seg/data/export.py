"""Export a manifest to Parquet in the Hugging Face layout, streamed and sharded.

``OUT/data/{split}-00000-of-0000N.parquet`` (the file names ``datasets`` and the Hub
recognise without a dataset card), each file at most ``max_shard_size`` bytes, plus a copy
of ``dataset_info.json``. The files load with::

    datasets.load_dataset("parquet", data_files={"train": "OUT/data/train-*.parquet", ...})
    datasets.load_dataset("OUT")                    # the same, found by the layout
    datasets.load_dataset("OUT", streaming=True)    # without reading it all

Image and mask columns hold ``{"bytes": ..., "path": ...}`` structs, the layout of
``datasets.Image`` features, and the schema carries the ``datasets`` features so that they
decode as images.

Memory is bounded whatever the split's size: samples are read one at a time and written
as a row group when ``row_group_rows`` rows or ``row_group_bytes`` bytes have gathered
(``datasets`` itself writes image data in groups of 100 rows, which keeps random access
cheap); a shard is closed before a row group would take it past ``max_shard_size``.
The file names hold the number of shards, known only at the end, so every file is written
under a temporary folder ``OUT/.export-tmp-<pid>/`` and the finished ``data/`` folder
replaces the old one at the end: a killed export leaves no half-written final file (the
next export removes its temporary folder).
A DICOM image (a manifest written by hand or by an older sim4seg) is embedded as a PNG of the
image as displayed, never as its DICOM bytes, so no patient field reaches the export; its
``path`` gets the ``.png`` suffix.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from pathlib import Path

from sim4seg._atomic import write_text
from sim4seg.data.io import is_dicom, read_display
from sim4seg.data.schema import INFO_FILE, iter_split, read_info
from sim4seg.data.subsets import SPLITS
from sim4seg.errors import InputError

log = logging.getLogger(__name__)

DATA_DIR = "data"
MAX_SHARD_SIZE = 500 * 1000**2
ROW_GROUP_ROWS = 100
ROW_GROUP_BYTES = 32 * 1024**2
_TEXT = (
    "id",
    "subset",
    "modality",
    "split",
    "image.path",
    "mask.path",
    "query",
    "diagnosis",
    "answers",
    "cot",
    "source",
)
_FOOTER = 16 * 1024
"""Bytes kept free in a shard for the Parquet footer and page headers."""
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """``"500MB"`` → 500,000,000 bytes; ``"2GiB"``, ``"1.5GB"``, ``"1000000"`` likewise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"not a size: {text!r} (e.g. 500MB, 2GB, 512MiB or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def _schema(pa):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [
        ("id", pa.string()),
        ("subset", pa.string()),
        ("modality", pa.string()),
        ("split", pa.string()),
        ("image", image),
        ("mask", image),
        ("query", pa.string()),
        ("diagnosis", pa.string()),
        ("answers", pa.string()),
        ("cot", pa.string()),
        ("source", pa.string()),
    ]
    features = {
        name: ({"_type": "Image"} if name in ("image", "mask") else {"dtype": "string", "_type": "Value"})
        for name, _ in fields
    }
    meta = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(fields, metadata=meta)


class _ShardWriter:
    """Row groups into numbered temporary shards of at most ``max_bytes`` bytes each."""

    def __init__(self, pa, pq, schema, tmp: Path, split: str, max_bytes: int):
        self.pa, self.pq, self.schema = pa, pq, schema
        self.tmp, self.split = tmp, split
        self.limit = max(1, max_bytes - _FOOTER - max_bytes // 100)
        self.paths: list[Path] = []
        self._file = self._writer = None
        self.size = 0
        """Bytes written to the open shard so far."""

    def room(self) -> int:
        return self.limit - self.size if self._writer is not None else self.limit

    def write(self, rows: list[dict], nbytes: int) -> None:
        if self._writer is not None and self.size + nbytes > self.limit:
            self.close_shard()
        if self._writer is None:
            path = self.tmp / f"{self.split}-{len(self.paths):05d}.parquet"
            self.paths.append(path)
            self._file = open(path, "wb")
            # Image bytes are PNG/JPEG already: no dictionary, no second compression.
            small = ["id", "subset", "modality", "split", "diagnosis"]
            self._writer = self.pq.ParquetWriter(
                self._file,
                self.schema,
                use_dictionary=small,
                write_statistics=small,
                compression={"image.bytes": "none", "mask.bytes": "none", **{c: "snappy" for c in _TEXT}},
            )
            self.size = 0
        table = self.pa.Table.from_pylist(rows, schema=self.schema)
        self._writer.write_table(table, row_group_size=len(rows))
        self.size = self._file.tell()

    def close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if self.size > self.limit + _FOOTER:
                log.warning(
                    "%s: shard %d is %d bytes, above the shard size (one row group holds a sample larger than it)",
                    self.split,
                    len(self.paths) - 1,
                    self.size,
                )
        self._writer = self._file = None
        self.size = 0


def _row(root: Path, split: str, sample) -> tuple[dict, int]:
    row = sample.to_json()
    nbytes = 0
    for key in ("image", "mask"):
        path = root / row[key]
        try:
            row[key] = _embedded(path, row[key])
        except FileNotFoundError:
            raise InputError(f"{key} file not found: {path}", root / f"{split}.jsonl") from None
        except OSError as e:
            raise InputError(
                f"cannot read the {key} file {path} ({type(e).__name__}: {e})", root / f"{split}.jsonl"
            ) from None
        nbytes += len(row[key]["bytes"])
    row["answers"] = json.dumps(row["answers"], ensure_ascii=False)
    row["source"] = json.dumps(row["source"], ensure_ascii=False)
    nbytes += sum(len(v) for v in row.values() if isinstance(v, str)) + 64
    return row, nbytes


def _embedded(path: Path, name: str) -> dict:
    """``{"bytes", "path"}`` of a dataset file; DICOM re-encoded as PNG without its header."""
    if not is_dicom(path):
        return {"bytes": path.read_bytes(), "path": name}
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(read_display(path)).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": str(Path(name).with_suffix(".png").as_posix())}


def _remove_stale(out: Path) -> None:
    for p in out.glob(".export-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def export_parquet(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    max_shard_size: int = MAX_SHARD_SIZE,
    row_group_rows: int = ROW_GROUP_ROWS,
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> dict[str, int]:
    """Write ``OUT/data/{split}-NNNNN-of-NNNNN.parquet`` and a copy of ``dataset_info.json``; return rows per split."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("Parquet export needs pyarrow: pip install 'sim4seg[parquet]'") from None
    if max_shard_size < 1 or row_group_rows < 1 or row_group_bytes < 1:
        raise InputError("max_shard_size, row_group_rows and row_group_bytes must be >= 1")
    root, out = Path(root), Path(out)
    info = read_info(root)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out / f".export-tmp-{os.getpid()}"
    final = tmp / DATA_DIR
    final.mkdir(parents=True)
    schema = _schema(pa)
    rows_per_split = {}
    try:
        for split in SPLITS:
            shards = _ShardWriter(pa, pq, schema, tmp, split, max_shard_size)
            rows, buffered, count = [], 0, 0
            for sample in iter_split(root, split, info):
                row, nbytes = _row(root, split, sample)
                if rows and (len(rows) >= row_group_rows or buffered + nbytes > min(row_group_bytes, shards.room())):
                    shards.write(rows, buffered)
                    rows, buffered = [], 0
                rows.append(row)
                buffered += nbytes
                count += 1
            if rows:
                shards.write(rows, buffered)
            shards.close_shard()
            for i, path in enumerate(shards.paths):
                path.rename(final / shard_name(split, i, len(shards.paths)))
            rows_per_split[split] = count
            log.info("%s: %d rows in %d shard(s)", split, count, len(shards.paths))
        # Swap the finished folder in: whoever reads OUT/data sees a complete export, old or new.
        target = out / DATA_DIR
        old = out / f".export-old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        final.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        write_text(out / INFO_FILE, (root / INFO_FILE).read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows_per_split
