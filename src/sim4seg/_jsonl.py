"""Reading JSON Lines files whose bad lines are reported by file and line."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from sim4seg.errors import InputError


def iter_jsonl(path: str | os.PathLike, f=None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for every non-blank line of ``path`` (or of the open file ``f``).

    A line that is not valid JSON raises ``InputError`` naming the file and line.
    """
    if f is None:
        with open(path, encoding="utf-8") as fh:
            yield from iter_jsonl(path, fh)
        return
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON: {e.msg} (column {e.colno})", path, lineno) from None
        yield lineno, value
