"""Human review (export / import) and ``cot apply`` into the manifest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cot_fake_server import FakeServer, Script
from cot_helpers import make_pipeline
from sim4seg.apps.cli import main
from sim4seg.cot.runner import pending_samples, run
from sim4seg.cot.store import ResultStore, read_records
from sim4seg.data.prompts import cot_answer, parse_diagnosis_line
from sim4seg.data.schema import read_info, read_split
from sim4seg.errors import InputError


def _generate(manifest, samples, out, script):
    with FakeServer(script) as srv, ResultStore(out / "results.jsonl") as store:
        todo, _ = pending_samples(samples, store)
        run(make_pipeline(srv.url, manifest, max_rounds=1), todo, store, concurrency=4, progress=False)


@pytest.fixture
def mixed(manifest, train, tmp_path):
    """4 accepted and 3 queued samples in ``tmp_path/out``."""
    out = tmp_path / "out"
    _generate(manifest, train[:4], out, Script(critic="accept"))
    _generate(manifest, train[4:7], out, Script(critic="always_reject"))
    return out


def test_apply_writes_accepted_chains_atomically_and_valid(manifest, train, mixed, capsys):
    assert main(["cot", "apply", "--manifest", str(manifest), "--results", str(mixed)]) == 0
    assert "applied: 4" in capsys.readouterr().out
    after = {s.id: s for s in read_split(manifest, "train")}  # re-validates every record
    state = {r["id"]: r for r in read_records(mixed / "results.jsonl")}
    for s in train[:4]:
        new = after[s.id]
        assert new.cot == state[s.id]["cot"] and new.cot
        assert new.answers.cot == cot_answer(s.diagnosis, new.cot)
        assert new.answers.cot.startswith("It is [SEG]. ") and parse_diagnosis_line(new.answers.cot) == s.diagnosis
        assert new.answers.diagnosis == s.answers.diagnosis and new.query == s.query
    for s in train[4:]:
        assert after[s.id].cot == "" and after[s.id].answers.cot == ""
    assert len(read_split(manifest, "val")) > 0 and len(read_split(manifest, "test")) > 0
    assert read_info(manifest).build["cot_apply"]["applied"] == 4
    assert not list(manifest.glob(".*.tmp"))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_review_roundtrip(manifest, train, mixed, tmp_path, suffix):
    sheet = tmp_path / f"review{suffix}"
    assert (
        main(
            [
                "cot",
                "review-export",
                "--manifest",
                str(manifest),
                "--results",
                str(mixed),
                "--out",
                str(sheet),
                "--spot-check",
                "2",
            ]
        )
        == 0
    )
    if suffix == ".csv":
        with open(sheet, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in sheet.read_text(encoding="utf-8").splitlines()]
    assert [r["status"] for r in rows] == ["queued"] * 3 + ["accepted"] * 2
    queued = {s.id for s in train[4:7]}
    assert {r["id"] for r in rows[:3]} == queued
    first = rows[0]
    assert (manifest / next(s.image for s in train if s.id == first["id"])).resolve() == Path(first["image"])
    assert first["chain"] and "findings are not visible" in first["critic_notes"] and first["decision"] == ""
    # The reviewer: accept one as is, accept one with an edit, reject one spot-checked chain, skip the rest.
    rows[0]["decision"] = "accept"
    rows[1]["decision"], rows[1]["edit"] = "Accept", "Edited by a radiologist: the lesion is clearly visible."
    rows[3]["decision"], rows[3]["note"] = "reject", "describes a finding that is not there"
    if suffix == ".csv":
        with open(sheet, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        sheet.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert main(["cot", "apply", "--manifest", str(manifest), "--results", str(mixed)]) == 0  # before review
    assert next(s for s in read_split(manifest, "train") if s.id == rows[3]["id"]).cot == rows[3]["chain"]
    assert main(["cot", "review-import", "--results", str(mixed), "--review", str(sheet)]) == 0
    assert main(["cot", "review-import", "--results", str(mixed), "--review", str(sheet)]) == 0  # idempotent
    recs = list(read_records(mixed / "results.jsonl"))
    human = [r for r in recs if r["stage"] == "human"]
    assert len(human) == 3
    assert main(["cot", "apply", "--manifest", str(manifest), "--results", str(mixed)]) == 0
    after = {s.id: s for s in read_split(manifest, "train")}
    assert after[rows[0]["id"]].cot == rows[0]["chain"]
    assert after[rows[1]["id"]].cot == "Edited by a radiologist: the lesion is clearly visible."
    assert after[rows[2]["id"]].cot == ""  # still queued
    assert after[rows[3]["id"]].cot == ""  # the human rejected the critic-accepted chain
    assert after[rows[4]["id"]].cot == rows[4]["chain"]


def test_review_import_errors_name_file_and_line(manifest, mixed, tmp_path):
    sheet = tmp_path / "r.jsonl"
    main(["cot", "review-export", "--manifest", str(manifest), "--results", str(mixed), "--out", str(sheet)])
    rows = [json.loads(line) for line in sheet.read_text().splitlines()]

    def attempt(row_changes: dict, match: str):
        bad = [dict(rows[0], **row_changes)] + rows[1:]
        sheet.write_text("".join(json.dumps(r) + "\n" for r in bad), encoding="utf-8")
        with ResultStore(mixed / "results.jsonl") as store, pytest.raises(InputError, match=match):
            from sim4seg.cot.review import import_review

            import_review(sheet, store)

    attempt({"decision": "maybe"}, r"r\.jsonl:1: .*decision must be 'accept', 'reject' or empty")
    attempt({"decision": "", "edit": "new"}, r"r\.jsonl:1: .*an edit without a decision")
    attempt({"id": "nope"}, r"r\.jsonl:1: sample id 'nope' is not in the results store")
    attempt({"decision": "accept", "edit": "Text.\nDiagnosis: something else."}, r"r\.jsonl:1: .*edit rejected")
    before = len(list(read_records(mixed / "results.jsonl")))
    assert before == 7  # nothing was written by the failed imports


def test_apply_skips_records_for_another_diagnosis(manifest, train, mixed, caplog):
    sid = train[0].id
    with ResultStore(mixed / "results.jsonl") as store:
        store.append({**store.state[sid], "diagnosis": "not-the-label"})
    assert main(["cot", "apply", "--manifest", str(manifest), "--results", str(mixed)]) == 0
    assert next(s for s in read_split(manifest, "train") if s.id == sid).cot == ""
    assert "results record is for diagnosis 'not-the-label'" in caplog.text
