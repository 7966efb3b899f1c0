"""Fuzzing the text parsers of outside input: the diagnosis parser, the CoT verdict and chain parsers."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim4seg.cot.verdict import Chain, Verdict, extract_chain, parse_verdict
from sim4seg.data.prompts import parse_diagnosis_line
from sim4seg.data.subsets import SUBSETS
from sim4seg.errors import InputError
from sim4seg.eval.diagnosis import AMBIGUOUS, FROM_LINE, FROM_TEXT, NOT_FOUND, DiagnosisParser

PARSER = DiagnosisParser()
WORDS = [
    "Diagnosis:",
    "diagnosis :",
    "VERDICT:",
    "verdict=",
    "REASONS:",
    "Decision -",
    "accept",
    "reject",
    "ACCEPTED",
    "no",
    "yes",
    "[SEG]",
    "It is",
    ".",
    "\n",
    "\r\n",
    " ",
    "  ",
    "\t",
    "**",
    "```",
    "```json",
    "{",
    "}",
    "[",
    "]",
    '"verdict"',
    '"reasons"',
    ":",
    ",",
    "- ",
    "1.",
    "•",
    "no fracture",
    "fracture",
    "hand fracture",
    "benign",
    "malignant",
    "normal",
    "polyp",
    "Effusion",
    "_",
    "-",
    "\u00a0",
    "\u2028",
    "\ufeff",
    "É",
    "ß",
    "İ",
]
# Texts built from the parsers' own vocabulary reach their branches far more often than random text.
texts = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(WORDS) | st.text(max_size=8), max_size=60).map("".join),
    st.builds(lambda w, n, tail: w + " " * n + tail, st.sampled_from(WORDS), st.integers(0, 5000), st.text(max_size=5)),
)

# The whole test's bound: the ci profile finishes in seconds; `make fuzz` runs far more examples.
TIMEOUT = 3600 if os.environ.get("SIM4SEG_FUZZ_PROFILE") == "fuzz" else 300


@given(texts, st.sampled_from(sorted(SUBSETS)))
@pytest.mark.timeout(TIMEOUT)
def test_diagnosis_parser(answer, subset):
    try:
        parsed = PARSER.parse(answer, subset)
    except InputError:
        assert len(answer) > 100_000
        return
    assert parsed.source in (FROM_LINE, FROM_TEXT, AMBIGUOUS, NOT_FOUND)
    assert parsed.label is None or parsed.label in SUBSETS[subset].labels
    line = parse_diagnosis_line(answer)
    assert line is None or (line and "\n" not in line)


@given(texts)
@pytest.mark.timeout(TIMEOUT)
def test_verdict_parser(reply):
    v = parse_verdict(reply)
    assert isinstance(v, Verdict) and isinstance(v.accepted, bool)
    assert all(isinstance(r, str) for r in v.reasons)
    assert v.parsed or not v.accepted


@given(texts, st.sampled_from(["benign", "no fracture", "hand fracture", "polyp"]))
@pytest.mark.timeout(TIMEOUT)
def test_chain_extractor(reply, label):
    c = extract_chain(reply, label)
    assert isinstance(c, Chain) and isinstance(c.text, str)
    assert all(isinstance(p, str) for p in c.problems)
