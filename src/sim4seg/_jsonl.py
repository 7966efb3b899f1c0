"""JSON Lines: reading with bad lines reported by file and line, and the append-only resume log."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sim4seg.errors import InputError

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"


def decode_line(raw: bytes | str, path: str | os.PathLike, lineno: int) -> str:
    """One line as text: UTF-8 (a byte-order mark at the start of the file is dropped).

    Invalid UTF-8 raises ``InputError`` naming the file, the line and the byte's column.
    """
    if isinstance(raw, str):
        return raw[1:] if lineno == 1 and raw.startswith("\ufeff") else raw
    if lineno == 1 and raw.startswith(BOM):
        raw = raw[len(BOM) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"not valid UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start + 1} (save the file as UTF-8)",
            path,
            lineno,
        ) from None


def parse_line(line: str, path: str | os.PathLike, lineno: int) -> Any:
    """``json.loads`` of one line; anything wrong is an ``InputError`` naming the file and line."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON: {e.msg} (column {e.colno})", path, lineno) from None
    except RecursionError:
        raise InputError("malformed JSON: nested too deeply", path, lineno) from None
    except ValueError as e:  # e.g. an integer past Python's digit limit
        raise InputError(f"malformed JSON: {e}", path, lineno) from None


def iter_jsonl(path: str | os.PathLike, f=None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for every non-blank line of ``path`` (or of the open file ``f``).

    A line that is not valid UTF-8 or not valid JSON raises ``InputError`` naming the file and
    line; a UTF-8 byte-order mark at the start of the file is accepted. ``f`` may be opened in
    binary (preferred) or text mode.
    """
    if f is None:
        with open(path, "rb") as fh:
            yield from iter_jsonl(path, fh)
        return
    lineno = 0
    while True:
        try:
            raw = f.readline()
        except UnicodeDecodeError as e:  # a text-mode f
            raise InputError(f"not valid UTF-8 text: {e.reason}", path, lineno + 1) from None
        if not raw:
            return
        lineno += 1
        line = decode_line(raw, path, lineno)
        if not line.strip():
            continue
        yield lineno, parse_line(line, path, lineno)


class AppendLog:
    """An append-only JSON Lines file that survives ``kill -9``: the resume log of every long job.

    Opening it (creating the file and its folder if needed) cuts off a torn last line — a write
    killed mid-way, which the job simply redoes — with a warning, and reads the records already
    there into ``records`` (a malformed complete line is an ``InputError`` naming file and
    line; ``check(record, path, line)`` may refuse a record the same way, or return it changed). ``append`` writes one record as one line, flushes it and, with ``fsync="each"`` (the
    default), makes it durable before returning; ``fsync="close"`` syncs once on ``close`` (for
    jobs whose records are cheap to redo). ``append`` is thread-safe.
    """

    def __init__(
        self, path: str | os.PathLike, *, fsync: str = "each", check: Callable[[Any, Path, int], Any] | None = None
    ):
        if fsync not in ("each", "close"):
            raise ValueError(f"fsync must be 'each' or 'close', got {fsync!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _repair_tail(self.path)
        check = check or (lambda record, path, line: record)
        self.records: list[Any] = (
            [check(v, self.path, n) for n, v in iter_jsonl(self.path)] if self.path.exists() else []
        )
        """The records found when the log was opened, in file order."""
        self._sync_each = fsync == "each"
        self._f = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, record: Any) -> None:
        """Write ``record`` as one line (durable before returning with ``fsync="each"``)."""
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            if self._sync_each:
                os.fsync(self._f.fileno())

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _repair_tail(path: Path) -> None:
    """Cut off a partial last line (a write interrupted by a kill)."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos, block, keep = size, 1 << 16, 0
        while pos > 0:  # walk back to the last newline
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
