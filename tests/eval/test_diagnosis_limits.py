"""Regression tests of issue 13: the diagnosis and verdict parsers in linear time; the answer-length cap."""

from __future__ import annotations

import json

import pytest

from sim4seg.cot.verdict import parse_verdict
from sim4seg.data.prompts import parse_diagnosis_line
from sim4seg.errors import InputError
from sim4seg.eval.diagnosis import MAX_ANSWER_CHARS, DiagnosisParser
from sim4seg.eval.evaluate import read_predictions


@pytest.mark.timeout(30)
def test_long_runs_of_spaces_do_not_hang():
    # The old line regex (lazy label before optional trailing spaces) backtracked
    # quadratically here: 20,000 spaces already took minutes. Linear now; the bound is the timeout.
    answer = "Diagnosis: x" + " " * (MAX_ANSWER_CHARS - 20) + "y"
    assert parse_diagnosis_line(answer) == "x" + " " * (MAX_ANSWER_CHARS - 20) + "y"
    assert DiagnosisParser().parse(answer, "busi").label is None
    verdict = parse_verdict("VERDICT:" + " " * MAX_ANSWER_CHARS + "1")
    assert not verdict.accepted and not verdict.parsed


def test_diagnosis_line_semantics_are_kept():
    assert parse_diagnosis_line("It is [SEG].\n  diagnosis :  no fracture .  ") == "no fracture"
    assert parse_diagnosis_line("Diagnosis: benign.\nDiagnosis: malignant") == "malignant"
    assert parse_diagnosis_line("Diagnosis: .") == "."
    assert parse_diagnosis_line("Diagnosis:   \nno line") is None
    assert parse_diagnosis_line("Diagnosis: a..") == "a."


def test_many_overlapping_phrases_keep_the_longest():
    answer = "no fracture " * 8000  # 96,000 characters: 8,000 'no fracture' and 8,000 'fracture' hits
    parsed = DiagnosisParser().parse(answer, "fracatlas")
    assert parsed.label == "no fracture"
    assert DiagnosisParser().parse("hand fracture " * 7000, "fracatlas").label == "hand fracture"
    assert DiagnosisParser().parse("hand fracture, leg fracture " * 3000, "fracatlas").source == "ambiguous"


def test_answers_over_the_cap_are_refused_with_a_clear_message(tmp_path):
    with pytest.raises(InputError, match=r"answer is 100,001 characters long, over the limit of 100,000"):
        DiagnosisParser().parse("a" * (MAX_ANSWER_CHARS + 1), "busi")
    p = tmp_path / "p.jsonl"
    rows = [{"id": "a", "answer": "Diagnosis: benign."}, {"id": "b", "answer": "x" * (MAX_ANSWER_CHARS + 5)}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(InputError, match=r"p\.jsonl:2: answer is 100,005 characters long, over the limit"):
        read_predictions(p)


def test_verdict_json_oddities_are_read_not_raised():
    v = parse_verdict('{"verdict": "reject", "reasons": 5}')
    assert v.accepted is False and v.reasons == ["5"]
    v = parse_verdict('{"verdict": "accept", "reasons": null}')
    assert v.accepted is True and v.reasons == []
    v = parse_verdict('{"verdict": ' + "[" * 100_000)
    assert v.accepted is False and v.parsed is False
