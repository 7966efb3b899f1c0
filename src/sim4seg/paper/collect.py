"""Gather a protocol's results into the paper's layout, with the paper's numbers beside ours.

Every cell is ``{table, row, column, metric, ours, paper, diff, note}`` in percent (``diff`` =
ours − paper); ``ours`` is ``None`` for a result not produced yet, ``paper`` for a cell the paper
does not have (the note says why). Written as ``OUT/<protocol>.json``, ``.csv`` and ``.md``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sim4seg.eval.report import TABLE3_COLUMNS
from sim4seg.paper.protocols import Protocol, Row, item
from sim4seg.paper.reference import load_reference
from sim4seg.paper.runner import item_result

_KEYS = {"gIoU": "giou", "cIoU": "ciou", "Acc": "acc"}


def _pct(v: float | None) -> float | None:
    return None if v is None else round(100.0 * v, 2)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def row_values(row: Row, result: dict | None) -> list[tuple[str, str, str, float | None]]:
    """``(row label, column, metric, ours in percent)`` of one protocol row (``None`` values if not run)."""
    r = result or {}
    o = r.get("overall", {})
    if row.layout == "overall":
        return [(row.label, "overall", m, _pct(o.get(k))) for m, k in _KEYS.items()]
    if row.layout == "avg":
        g, c = o.get("giou"), o.get("ciou")
        avg = None if g is None or c is None else (g + c) / 2
        return [
            (row.label, "overall", "gIoU", _pct(g)),
            (row.label, "overall", "cIoU", _pct(c)),
            (row.label, "overall", "Avg.", _pct(avg)),
        ]
    if row.layout == "heldout":
        return [(row.label, row.column, m, _pct(o.get(_KEYS[m]))) for m in ("gIoU", "cIoU")]
    if row.layout == "subsets":
        per = r.get("per_subset", {})
        out = []
        for m, k in _KEYS.items():
            vals = [per[s][k] if s in per else None for s, _ in TABLE3_COLUMNS]
            out += [(row.label, title, m, _pct(v)) for (_, title), v in zip(TABLE3_COLUMNS, vals)]
            out.append((row.label, "Avg.", m, _pct(_mean(vals))))
        return out
    # sweep: {"topk=12": summary, ...} (τ) or {"m=1": ..., "n=1": ...} (TTS)
    out = []
    for setting, summary in r.items():
        metrics = ("Acc",) if setting.startswith("m=") else ("gIoU", "cIoU")
        out += [(setting, row.column, m, _pct(summary["overall"].get(_KEYS[m]))) for m in metrics]
    return out


def collect(protocol: Protocol, out: Path) -> list[dict]:
    """The protocol's cells, ours beside the paper's."""
    ref = load_reference()
    cells = []
    for row in protocol.rows:
        path = item_result(out, row.run, item(row.run, row.item))
        result = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        values = row_values(row, result)
        if result is None and row.layout == "sweep":
            values = [(row.label, row.column, "-", None)]
        for label, column, metric, ours in values:
            known, paper, note = ref.lookup(protocol.name, label, column, metric)
            if not known:
                note = "no reference cell"
            if ours is None:
                note = (note + "; " if note else "") + f"not run yet ({path})"
            cells.append(
                {
                    "table": protocol.name,
                    "row": label,
                    "column": column,
                    "metric": metric,
                    "ours": ours,
                    "paper": paper,
                    "diff": None if ours is None or paper is None else round(ours - paper, 2),
                    "note": note,
                }
            )
    return cells


def _cell(c: dict) -> str:
    ours = "-" if c["ours"] is None else f"{c['ours']:.2f}"
    if c["paper"] is None:
        return ours
    diff = "" if c["diff"] is None else f" ({c['diff']:+.2f})"
    return f"{ours} / {c['paper']:.2f}{diff}"


def markdown(protocol: Protocol, cells: list[dict]) -> str:
    """The paper's layout: one line per row (per row and metric in Table 3), cells ``ours / paper (ours − paper)``."""
    by_subset = protocol.rows and protocol.rows[0].layout == "subsets"
    line_key = (lambda c: (c["row"], c["metric"])) if by_subset else (lambda c: (c["row"], c["column"]))
    head_key = (lambda c: c["column"]) if by_subset else (lambda c: c["metric"])
    heads, lines = [], {}
    for c in cells:
        if head_key(c) not in heads:
            heads.append(head_key(c))
        lines.setdefault(line_key(c), {})[head_key(c)] = c
    first = ("Method", "metric") if by_subset else ("Row", "column")
    text = [
        f"{protocol.title} — cells: ours / paper (ours − paper), percent",
        "",
        f"| {first[0]} | {first[1]} | " + " | ".join(heads) + " |",
        "|---|---|" + "---:|" * len(heads),
    ]
    for (a, b), row in lines.items():
        text.append(f"| {a} | {b} | " + " | ".join(_cell(row[h]) if h in row else "" for h in heads) + " |")
    notes = sorted({c["note"] for c in cells if c["note"]})
    if notes:
        text += [""] + [f"- {n}" for n in notes]
    return "\n".join(text) + "\n"


def csv_text(cells: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(
        buf, fieldnames=["table", "row", "column", "metric", "ours", "paper", "diff", "note"], lineterminator="\n"
    )
    w.writeheader()
    w.writerows(cells)
    return buf.getvalue()


def write(protocol: Protocol, out: Path) -> tuple[str, list[Path]]:
    """Collect and write ``OUT/<protocol>.{json,csv,md}``; return the Markdown and the paths."""
    from sim4seg._atomic import write_json, write_text

    cells = collect(protocol, out)
    md = markdown(protocol, cells)
    paths = [out / f"{protocol.name}.{ext}" for ext in ("json", "csv", "md")]
    write_json(paths[0], {"protocol": protocol.name, "title": protocol.title, "unit": "percent", "cells": cells})
    write_text(paths[1], csv_text(cells))
    write_text(paths[2], md)
    return md, paths
