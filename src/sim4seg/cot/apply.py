"""``cot apply``: write accepted chains into the manifest's ``cot`` field and ``answers.cot``.

A sample whose latest results record is ``accepted`` gets its chain (and the CoT answer
``It is [SEG]. <cot>\\nDiagnosis: <label>.``); one a human ``rejected`` has both cleared
(so that re-applying after review removes a chain applied earlier); ``queued`` and
``failed`` samples are left as they are. A record whose diagnosis differs from the
manifest's (the manifest was rebuilt since) is skipped with a warning. Every manifest
file is replaced atomically.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from sim4seg.cot.store import latest, results_path
from sim4seg.data.prompts import cot_answer
from sim4seg.data.schema import iter_split, read_info, write_manifest
from sim4seg.data.subsets import SPLITS
from sim4seg.errors import InputError

log = logging.getLogger(__name__)


def apply_results(root: str | os.PathLike, results: str | os.PathLike) -> dict[str, int]:
    """Update the manifest at ``root`` from the results store ``results`` (a directory or a ``.jsonl``)."""
    root, path = Path(root), results_path(results)
    if not path.is_file():
        raise InputError("results file not found", path)
    state = latest(path)
    info = read_info(root)
    samples = [s for split in SPLITS for s in iter_split(root, split, info)]
    counts = {"applied": 0, "cleared": 0, "unchanged": 0, "mismatch": 0, "not_in_store": 0}
    known = set()
    for s in samples:
        known.add(s.id)
        rec = state.get(s.id)
        if rec is None:
            counts["not_in_store"] += 1
            continue
        if rec.get("diagnosis", s.diagnosis) != s.diagnosis:
            log.warning(
                "%s: results record is for diagnosis %r, the manifest says %r; skipped",
                s.id,
                rec.get("diagnosis"),
                s.diagnosis,
            )
            counts["mismatch"] += 1
            continue
        if rec["status"] == "accepted":
            cot = rec.get("cot", "").strip()
            if not cot:
                raise InputError(f"record for {s.id!r} is accepted but has no chain", path)
            s.cot, s.answers.cot = cot, cot_answer(s.diagnosis, cot)
            counts["applied"] += 1
        elif rec["status"] == "rejected" and rec.get("stage") == "human" and s.cot:
            s.cot, s.answers.cot = "", ""
            counts["cleared"] += 1
        else:
            counts["unchanged"] += 1
    unknown = len(set(state) - known)
    if unknown:
        log.warning("%d results record(s) name samples that are not in %s", unknown, root)
    counts["unknown_ids"] = unknown
    info.build = {
        **info.build,
        "cot_apply": {
            "results": str(path.resolve()),
            "applied": counts["applied"],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    write_manifest(root, samples, info)
    return counts
