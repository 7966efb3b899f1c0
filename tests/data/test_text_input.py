"""Regression tests of issue 13: invalid UTF-8 and byte-order marks in JSONL inputs; duplicate-id lines."""

from __future__ import annotations

import json
import shutil

import pytest

from sim4seg._jsonl import iter_jsonl
from sim4seg.data.schema import read_split
from sim4seg.data.verify import verify
from sim4seg.errors import InputError, ManifestError
from sim4seg.eval.evaluate import read_predictions


def test_iter_jsonl_invalid_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"x\.jsonl:2: not valid UTF-8 text: byte 0xe9 at column 11"):
        list(iter_jsonl(p))


def test_iter_jsonl_accepts_a_bom(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"b": 2}\n')
    assert list(iter_jsonl(p)) == [(1, {"a": 1}), (3, {"b": 2})]
    with open(p, encoding="utf-8") as f:  # a text-mode file too
        assert list(iter_jsonl(p, f)) == [(1, {"a": 1}), (3, {"b": 2})]


def test_iter_jsonl_deep_nesting_is_an_input_error(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InputError, match=r"x\.jsonl:1: malformed JSON"):
        list(iter_jsonl(p))


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_manifest_invalid_utf8_and_bom(tmp_path, synth_m3ds):
    root = _copy(synth_m3ds, tmp_path / "ds")
    path = root / "val.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    n = len(read_split(root, "val"))
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(lines))
    assert len(read_split(root, "val")) == n  # a BOM is accepted
    path.write_bytes(lines[0] + lines[1].replace(b'"query": "', b'"query": "\xff', 1) + b"".join(lines[2:]))
    with pytest.raises(ManifestError, match=r"val\.jsonl:2: not valid UTF-8 text: byte 0xff"):
        read_split(root, "val")
    _, problems = verify(root, decode=False)
    assert any(p.where.endswith("val.jsonl:2") and "UTF-8" in p.problem for p in problems)


def test_manifest_info_with_bom_and_bad_bytes(tmp_path, synth_m3ds):
    root = _copy(synth_m3ds, tmp_path / "ds")
    info = root / "dataset_info.json"
    data = info.read_bytes()
    info.write_bytes(b"\xef\xbb\xbf" + data)
    assert read_split(root, "val")
    info.write_bytes(data.replace(b'"', b'\xfe"', 1))
    with pytest.raises(ManifestError, match="dataset_info.json: not valid UTF-8"):
        read_split(root, "val")


def test_verify_reports_a_duplicate_id_at_its_own_line(tmp_path, synth_m3ds):
    root = _copy(synth_m3ds, tmp_path / "ds")
    path = root / "train.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.append(lines[0])  # the first record again, on the last line
    path.write_text("".join(lines), encoding="utf-8")
    _, problems = verify(root, decode=False)
    dup = [p for p in problems if "duplicate id" in p.problem]
    assert len(dup) == 1
    assert dup[0].where == f"{path}:{len(lines)}"
    assert f"first at {path}:1" in dup[0].problem


def test_predictions_invalid_utf8_and_bom(tmp_path):
    p = tmp_path / "p.jsonl"
    rows = [json.dumps({"id": f"s{i}", "answer": "Diagnosis: benign."}).encode() for i in range(3)]
    p.write_bytes(b"\xef\xbb\xbf" + b"\n".join(rows) + b"\n")
    assert list(read_predictions(p)) == ["s0", "s1", "s2"]
    p.write_bytes(rows[0] + b"\n" + rows[1] + b"\n" + rows[2][:-2] + b'\x80"}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:3: not valid UTF-8 text"):
        read_predictions(p)
