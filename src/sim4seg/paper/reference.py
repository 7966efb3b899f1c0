"""The paper's published numbers (``reference.json``): one cell per table, row, column and metric."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REFERENCE_FILE = Path(__file__).with_name("reference.json")


@dataclass(frozen=True)
class Reference:
    cells: dict[tuple[str, str, str, str], float | None]
    """``{(table, row, column, metric): percent}``; ``None`` where the paper prints ``-``."""
    not_in_paper: dict[tuple[str, str], str]
    """``{(table, row): why}``; row ``*``: the whole table (a figure without values in the text)."""

    def lookup(self, table: str, row: str, column: str, metric: str) -> tuple[bool, float | None, str]:
        """``(known, paper value, note)``: ``known`` is False only for a cell the reference does not cover."""
        key = (table, row, column, metric)
        if key in self.cells:
            return True, self.cells[key], ""
        for k in ((table, row), (table, "*")):
            if k in self.not_in_paper:
                return True, None, f"not in the paper: {self.not_in_paper[k]}"
        return False, None, ""


@lru_cache(maxsize=1)
def load_reference() -> Reference:
    raw = json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))
    cells = {(c["table"], c["row"], c["column"], c["metric"]): c["value"] for c in raw["cells"]}
    notes = {(n["table"], n["row"]): n["reason"] for n in raw["not_in_paper"]}
    return Reference(cells, notes)
