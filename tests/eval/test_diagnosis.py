"""Parsing free-text answers into canonical labels."""

from __future__ import annotations

import pytest

from sim4seg.data.subsets import SUBSETS, SubsetInfo
from sim4seg.eval.diagnosis import DiagnosisParser, normalize, parse_diagnosis

P = DiagnosisParser()


@pytest.mark.parametrize(
    "answer,subset,label,source",
    [
        ("It is [SEG]. Looks bad.\nDiagnosis: malignant.", "busi", "malignant", "line"),
        ("It is [SEG].\nDIAGNOSIS:   MALIGNANT", "busi", "malignant", "line"),
        ("Diagnosis: Benign Tumour.", "busi", "benign", "line"),  # synonym
        ("Diagnosis: seborrheic_keratosis.", "isic2017", "seborrheic keratosis", "line"),  # underscore
        ("Diagnosis: Age related macular-degeneration!", "fives", "age-related macular degeneration", "line"),
        ("Diagnosis: messed-up angle", "bone_fracture", "messed up angle", "line"),
        ("Diagnosis: most likely a melanoma, given the borders.", "isic2017", "melanoma", "line"),  # search in line
        ("I see a benign lesion here.\nDiagnosis: malignant.", "isbi2016", "malignant", "line"),  # line wins
        ("It is [SEG]. The findings suggest a nevus.", "isic2017", "nevus", "text"),
        ("It is [SEG]. There is no fracture.", "bone_fracture", "no fracture", "text"),  # longest beats 'fracture'
        ("The humerus fracture is visible.", "bfd", "humerus fracture", "text"),  # beats 'humerus'
        ("The image is consistent with AMD.", "fives", "age-related macular degeneration", "text"),
        ("Findings: pleural_thickening (left).", "chestx_det", "pleural thickening", "text"),
    ],
)
def test_parses(answer, subset, label, source):
    parsed = P.parse(answer, subset)
    assert (parsed.label, parsed.source) == (label, source)
    assert not parsed.unparseable


@pytest.mark.parametrize(
    "answer,subset,source",
    [
        ("It is [SEG]. Benign or malignant, hard to say.", "busi", "ambiguous"),  # two labels, no line
        ("Diagnosis: benign or malignant.", "tn3k", "ambiguous"),  # ambiguous line
        ("It is [SEG].", "busi", "none"),
        ("", "isic2017", "none"),
        ("Diagnosis: pneumonia.", "chestx_det", "none"),
        ("The melanomas are many.", "isic2017", "none"),  # word boundary
    ],
)
def test_unparseable(answer, subset, source):
    parsed = P.parse(answer, subset)
    assert parsed.label is None and parsed.unparseable and parsed.source == source


def test_same_label_twice_is_not_ambiguous():
    assert P.label("Malignant features; overall malignant tumor.", "busi") == "malignant"


def test_longest_match_across_overlap_starting_later():
    info = SubsetInfo("t", "T", "xray", ("a b", "b c d"), target="x")
    assert parse_diagnosis("seen: a b c d", info) == "b c d"


def test_normalize():
    assert normalize("  Age-Related__Macular, Degeneration!! ") == "age related macular degeneration"


def test_every_paper_subset_builds_and_parses_its_own_labels():
    for name, info in SUBSETS.items():
        for label in info.labels:
            assert P.label(f"It is [SEG].\nDiagnosis: {label}.", name) == label
            for syn in info.synonyms.get(label, ()):
                assert P.label(f"Diagnosis: {syn}.", name) == label


def test_unknown_subset():
    with pytest.raises(KeyError, match="unknown subset"):
        P.parse("Diagnosis: x.", "nope")
