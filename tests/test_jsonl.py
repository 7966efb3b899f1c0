"""The append-only resume log shared by data build, batch prediction and CoT generation."""

from __future__ import annotations

import json
import threading

import pytest

from sim4seg._jsonl import AppendLog, iter_jsonl
from sim4seg.errors import InputError


def test_append_then_reopen_reads_the_records(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    with AppendLog(path) as log:
        assert log.records == []
        log.append({"id": "a", "n": 1})
        log.append({"id": "b", "text": "Diagnosis: benign.\nnon-ascii é"})
    assert AppendLog(path).records == [{"id": "a", "n": 1}, {"id": "b", "text": "Diagnosis: benign.\nnon-ascii é"}]
    assert path.read_text(encoding="utf-8").count("\n") == 2


def test_a_torn_last_line_is_cut_off_and_the_log_goes_on(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "ha')
    with AppendLog(path) as log:
        assert log.records == [{"id": "a"}]
        log.append({"id": "b"})
    assert [v for _, v in iter_jsonl(path)] == [{"id": "a"}, {"id": "b"}]
    assert "partial last line" in caplog.text


def test_a_malformed_complete_line_names_file_and_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "a"}\n\nnot json\n{"id": "c"}\n')
    with pytest.raises(InputError, match=r"log.jsonl:3: malformed JSON"):
        AppendLog(path)


def test_check_refuses_records_with_their_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "a"}\n\n[1, 2]\n')

    def check(rec, p, line):
        if not isinstance(rec, dict):
            raise InputError("not a record", p, line)
        return rec

    with pytest.raises(InputError, match=r"log.jsonl:3: not a record"):
        AppendLog(path, check=check)


def test_concurrent_appends_stay_whole_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    with AppendLog(path, fsync="close") as log:
        threads = [
            threading.Thread(target=lambda k=k: [log.append({"id": f"{k}-{i}", "pad": "x" * 500}) for i in range(50)])
            for k in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"{k}-{i}" for k in range(4) for i in range(50))


def test_bad_fsync_mode(tmp_path):
    with pytest.raises(ValueError, match="fsync"):
        AppendLog(tmp_path / "x.jsonl", fsync="never")
