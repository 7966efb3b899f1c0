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

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sim4seg._jsonl import AppendLog, iter_jsonl
from sim4seg.errors import InputError

log = logging.getLogger(__name__)

STATUSES = ("accepted", "queued", "failed", "rejected")
RESULTS_FILE = "results.jsonl"


def results_path(out: str | os.PathLike) -> Path:
    """``OUT/results.jsonl`` for a directory, ``OUT`` itself for a ``.jsonl`` file."""
    out = Path(out)
    return out if out.suffix == ".jsonl" else out / RESULTS_FILE


def read_records(path: str | os.PathLike) -> Iterator[dict]:
    """Every record in file order; a malformed line raises ``InputError`` naming it."""
    path = Path(path)
    for lineno, rec in iter_jsonl(path):
        yield _check(rec, path, lineno)


def _check(rec, path: Path, lineno: int) -> dict:
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or rec.get("status") not in STATUSES:
        raise InputError(f"not a results record (needs 'id' and a 'status' in {STATUSES})", path, lineno)
    return rec


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
        self._log = AppendLog(self.path, check=_check)
        self.state = {rec["id"]: rec for rec in self._log.records}
        """``{id: latest record}``, kept current by ``append``."""

    def append(self, record: dict) -> None:
        """Write one record and make it durable before returning."""
        if record.get("status") not in STATUSES or not isinstance(record.get("id"), str):
            raise ValueError(f"invalid record: status={record.get('status')!r} id={record.get('id')!r}")
        self._log.append(record)
        self.state[record["id"]] = record

    def close(self) -> None:
        self._log.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
