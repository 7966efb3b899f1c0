"""The append-only results store: one JSON line per finished sample, fsync'ed as it is written.

A record (``status`` is the sample's state after it)::

    {"id": ..., "split": ..., "diagnosis": ..., "stage": "pipeline" | "human",
     "status": "accepted" | "queued" | "failed" | "rejected",
     "cot": ..., "rounds": n, "critic_notes": [...], "history": [...], "error": ..., ...}

``queued`` waits for human review; ``rejected`` is a human's rejection; ``failed`` is a
sample the pipeline could not process (unreadable image, server failures), with
``error``. A sample's state is its *latest* record: human decisions are appended after
the pipeline's, never written over them. A run killed mid-write leaves at most one
partial last line; opening the store cuts it off (that sample is simply redone), so a
resumed run neither loses nor duplicates a sample.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Iterator

from sim4seg._jsonl import iter_jsonl
from sim4seg.errors import InputError

log = logging.getLogger(__name__)

STATUSES = ("accepted", "queued", "failed", "rejected")
RESULTS_FILE = "results.jsonl"


def results_path(out: str | os.PathLike) -> Path:
    """``OUT/results.jsonl`` for a directory, ``OUT`` itself for a ``.jsonl`` file."""
    out = Path(out)
    return out if out.suffix == ".jsonl" else out / RESULTS_FILE


def _repair_tail(path: Path) -> None:
    """Cut off a partial last line (a write interrupted by a kill)."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline.
        pos, block = size, 1 << 16
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            data = f.read(pos - start)
            i = data.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: removed a partial last line (%d bytes) left by an interrupted run", path, size - keep)


def read_records(path: str | os.PathLike) -> Iterator[dict]:
    """Every record in file order; a malformed line raises ``InputError`` naming it."""
    path = Path(path)
    for lineno, rec in iter_jsonl(path):
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or rec.get("status") not in STATUSES:
            raise InputError(f"not a results record (needs 'id' and a 'status' in {STATUSES})", path, lineno)
        yield rec


def latest(path: str | os.PathLike) -> dict[str, dict]:
    """``{id: latest record}``."""
    out: dict[str, dict] = {}
    for rec in read_records(path):
        out[rec["id"]] = rec
    return out


class ResultStore:
    """Open (creating it if needed) ``path`` for appending; thread-safe ``append``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _repair_tail(self.path)
        self.state = latest(self.path) if self.path.exists() else {}
        """``{id: latest record}``, kept current by ``append``."""
        self._f = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        """Write one record and make it durable before returning."""
        if record.get("status") not in STATUSES or not isinstance(record.get("id"), str):
            raise ValueError(f"invalid record: status={record.get('status')!r} id={record.get('id')!r}")
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())
            self.state[record["id"]] = record

    def close(self) -> None:
        with self._lock:
            self._f.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
