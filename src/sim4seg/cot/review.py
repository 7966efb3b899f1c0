"""Human review (the paper's human-assisted phase): export a worksheet, import the decisions.

The worksheet is CSV (for a spreadsheet) or JSONL (for a script or an annotation tool),
chosen by the file's suffix, with one row per sample and the columns ``COLUMNS``. A
reviewer fills ``decision`` (``accept`` or ``reject``; empty: not reviewed yet) and may
put a corrected chain in ``edit``. Importing appends the decisions to the results store
as ``stage: human`` records, which ``cot apply`` then writes into the manifest.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

from sim4seg._atomic import atomic_open
from sim4seg._jsonl import iter_jsonl
from sim4seg.cot.store import ResultStore
from sim4seg.cot.verdict import extract_chain
from sim4seg.data.schema import iter_split, read_info
from sim4seg.data.subsets import SPLITS
from sim4seg.errors import InputError

COLUMNS = (
    "id",
    "split",
    "status",
    "image",
    "question",
    "diagnosis",
    "chain",
    "critic_notes",
    "rounds",
    "decision",
    "edit",
    "note",
)
ACCEPT = {"accept", "accepted", "a", "yes", "y", "ok"}
REJECT = {"reject", "rejected", "r", "no", "n"}


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise InputError("review file must end in .csv or .jsonl", path)
    return suffix[1:]


def export_review(
    root: str | os.PathLike, store: ResultStore, out: str | os.PathLike, *, spot_check: int = 0, seed: int = 0
) -> dict[str, int]:
    """Write the queued samples, plus ``spot_check`` random accepted ones, to ``out``."""
    root, out = Path(root), Path(out)
    fmt = _format(out)
    info = read_info(root)
    samples = {s.id: s for split in SPLITS for s in iter_split(root, split, info)}
    state = {i: r for i, r in store.state.items() if i in samples}
    queued = sorted(i for i, r in state.items() if r["status"] == "queued")
    accepted = sorted(i for i, r in state.items() if r["status"] == "accepted" and r.get("stage") == "pipeline")
    spot = sorted(random.Random(seed).sample(accepted, min(spot_check, len(accepted)))) if spot_check > 0 else []
    rows = []
    for i in queued + spot:
        rec, s = state[i], samples[i]
        rows.append(
            {
                "id": i,
                "split": s.split,
                "status": rec["status"],
                "image": str((root / s.image).resolve()),
                "question": s.query,
                "diagnosis": s.diagnosis,
                "chain": rec.get("cot", ""),
                "critic_notes": "; ".join(rec.get("critic_notes", [])),
                "rounds": rec.get("rounds", 0),
                "decision": "",
                "edit": "",
                "note": "",
            }
        )
    with atomic_open(out, "w", encoding="utf-8", newline="") as f:
        if fmt == "csv":
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
        else:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"queued": len(queued), "spot_check": len(spot)}


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    fmt = _format(path)
    if not path.is_file():
        raise InputError("review file not found", path)
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        if fmt == "csv":
            reader = csv.DictReader(f)
            missing = [c for c in ("id", "decision") if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"missing column(s) {missing}; expected {list(COLUMNS)}", path, 1)
            rows = [(reader.line_num, row) for row in reader]
        else:
            for lineno, row in iter_jsonl(path, f):
                if not isinstance(row, dict) or "id" not in row:
                    raise InputError("each line must be an object with at least 'id' and 'decision'", path, lineno)
                rows.append((lineno, row))
    return rows


def import_review(path: str | os.PathLike, store: ResultStore) -> dict[str, int]:
    """Append the worksheet's decisions to ``store``; every row is checked before anything is written."""
    path = Path(path)
    records, counts = [], {"accepted": 0, "rejected": 0, "edited": 0, "pending": 0, "unchanged": 0}
    for lineno, row in _read_rows(path):
        sid = str(row.get("id") or "").strip()
        decision = str(row.get("decision") or "").strip().lower()
        edit = str(row.get("edit") or "").strip()
        note = str(row.get("note") or "").strip()
        prior = store.state.get(sid)
        if prior is None:
            raise InputError(f"sample id {sid!r} is not in the results store {store.path}", path, lineno)
        if not decision:
            if edit:
                raise InputError(
                    f"{sid}: an edit without a decision; write 'accept' (or 'reject') in 'decision'", path, lineno
                )
            counts["pending"] += 1
            continue
        if decision not in ACCEPT | REJECT:
            raise InputError(f"{sid}: decision must be 'accept', 'reject' or empty, got {decision!r}", path, lineno)
        accepted = decision in ACCEPT
        cot = prior.get("cot", "")
        if accepted and edit:
            chain = extract_chain(
                edit if "diagnosis:" in edit.lower() else f"{edit}\nDiagnosis: {prior['diagnosis']}.",
                prior["diagnosis"],
            )
            if chain.problems:
                raise InputError(f"{sid}: edit rejected: {'; '.join(chain.problems)}", path, lineno)
            cot = chain.text
        if accepted and not cot:
            raise InputError(f"{sid}: accepted, but there is no chain; put one in 'edit'", path, lineno)
        status = "accepted" if accepted else "rejected"
        if prior.get("stage") == "human" and prior["status"] == status and prior.get("cot", "") == cot:
            counts["unchanged"] += 1
            continue
        rec = {
            k: prior[k]
            for k in ("id", "split", "diagnosis", "rounds", "critic_notes", "model", "critic_model", "prompts")
            if k in prior
        }
        rec.update(
            stage="human",
            status=status,
            cot=cot if accepted else prior.get("cot", ""),
            edited=bool(accepted and edit),
            note=note,
            previous_status=prior["status"],
        )
        records.append(rec)
        counts[status] += 1
        counts["edited"] += int(rec["edited"])
    for rec in records:
        store.append(rec)
    return counts
