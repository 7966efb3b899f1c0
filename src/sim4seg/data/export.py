"""Export a manifest to Parquet, one file per split, images and masks embedded.

The files load directly with Hugging Face ``datasets``::

    datasets.load_dataset("parquet", data_files={"train": "OUT/train.parquet", ...})

Image and mask columns hold ``{"bytes": ..., "path": ...}`` structs, the layout of
``datasets.Image`` features. A DICOM image (a manifest written by hand or by an older
sim4seg) is embedded as a PNG of the image as displayed, never as its DICOM bytes, so no
patient field reaches the export; its ``path`` gets the ``.png`` suffix.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from sim4seg.data.io import is_dicom, read_display

from sim4seg._atomic import atomic_open
from sim4seg.data.schema import INFO_FILE, iter_split, read_info
from sim4seg.data.subsets import SPLITS
from sim4seg.errors import InputError


def _embedded(path: Path, name: str) -> dict:
    """``{"bytes", "path"}`` of a dataset file; DICOM re-encoded as PNG without its header."""
    if not is_dicom(path):
        return {"bytes": path.read_bytes(), "path": name}
    buf = io.BytesIO()
    _png(read_display(path), buf)
    return {"bytes": buf.getvalue(), "path": str(Path(name).with_suffix(".png").as_posix())}


def _png(arr, f) -> None:
    from PIL import Image

    Image.fromarray(arr).save(f, format="PNG")


def export_parquet(root: str | os.PathLike, out: str | os.PathLike) -> dict[str, int]:
    """Write ``OUT/{split}.parquet`` and a copy of ``dataset_info.json``; return rows per split."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("Parquet export needs pyarrow: pip install 'sim4seg[parquet]'") from None
    root, out = Path(root), Path(out)
    info = read_info(root)
    out.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows_per_split = {}
    for split in SPLITS:
        rows = []
        for s in iter_split(root, split, info):
            row = s.to_json()
            for key in ("image", "mask"):
                path = root / row[key]
                if not path.is_file():
                    raise InputError(f"{key} file not found: {path}", root / f"{split}.jsonl")
                row[key] = _embedded(path, row[key])
            row["answers"] = json.dumps(row["answers"], ensure_ascii=False)
            row["source"] = json.dumps(row["source"], ensure_ascii=False)
            rows.append(row)
        schema = pa.schema([
            ("id", pa.string()), ("subset", pa.string()), ("modality", pa.string()), ("split", pa.string()),
            ("image", image_type), ("mask", image_type), ("query", pa.string()), ("diagnosis", pa.string()),
            ("answers", pa.string()), ("cot", pa.string()), ("source", pa.string()),
        ])
        table = pa.Table.from_pylist(rows, schema=schema)
        with atomic_open(out / f"{split}.parquet", "wb") as f:
            pq.write_table(table, f)
        rows_per_split[split] = len(rows)
    (out / INFO_FILE).write_text((root / INFO_FILE).read_text(encoding="utf-8"), encoding="utf-8")
    return rows_per_split
