"""Reading JSON Lines files whose bad lines are reported by file and line."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from sim4seg.errors import InputError

BOM = b"\xef\xbb\xbf"


def decode_line(raw: bytes | str, path: str | os.PathLike, lineno: int) -> str:
    """One line as text: UTF-8 (a byte-order mark at the start of the file is dropped).

    Invalid UTF-8 raises ``InputError`` naming the file, the line and the byte's column.
    """
    if isinstance(raw, str):
        return raw[1:] if lineno == 1 and raw.startswith("\ufeff") else raw
    if lineno == 1 and raw.startswith(BOM):
        raw = raw[len(BOM):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not valid UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start + 1} "
                         "(save the file as UTF-8)", path, lineno) from None


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
