"""Parsing the roles' replies, and the prompt files."""

from __future__ import annotations

import pytest

from sim4seg.cot.roles import PROMPT_FIELDS, Prompts, copy_defaults, default_prompt_dir
from sim4seg.cot.verdict import extract_chain, label_matches, parse_verdict
from sim4seg.errors import InputError


@pytest.mark.parametrize(
    "reply",
    [
        "VERDICT: ACCEPT\nREASONS:\n- none",
        "**Verdict:** Accepted",
        "verdict = accept",
        "```\nVERDICT: ACCEPT\n```",
        "Accept. The reasoning is sound.",
        '{"verdict": "accept", "reasons": []}',
        'Here is my review: {"Verdict": "ACCEPT", "reasons": "none"}',
        "Final verdict: APPROVED",
    ],
)
def test_accepting_replies(reply):
    v = parse_verdict(reply)
    assert v.accepted and v.parsed and v.reasons == []


@pytest.mark.parametrize(
    "reply, reasons",
    [
        (
            "VERDICT: REJECT\nREASONS:\n- invents a fracture line\n- wrong modality",
            ["invents a fracture line", "wrong modality"],
        ),
        (
            "**VERDICT**: **REJECT**\nREASONS:\n1. no modality\n2) diagnosis missing",
            ["no modality", "diagnosis missing"],
        ),
        (
            "Reject.\nThe chain describes a mass that is not visible.",
            ["The chain describes a mass that is not visible."],
        ),
        ('{"verdict": "reject", "reasons": ["too short"]}', ["too short"]),
        ("VERDICT: REJECTED", ["rejected without reasons"]),
        ("VERDICT: REJECT\nREASONS: the structure is not followed", ["the structure is not followed"]),
    ],
)
def test_rejecting_replies(reply, reasons):
    v = parse_verdict(reply)
    assert not v.accepted and v.parsed and v.reasons == reasons


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "I think this might be fine but I cannot accept the modality.",
        "Yes",
        "The verdict is unclear.",
        '{"verdict": "maybe"}',
    ],
)
def test_unreadable_replies_are_rejections_never_acceptances(reply):
    v = parse_verdict(reply)
    assert not v.accepted and not v.parsed and v.reasons


def test_extract_chain_strips_seg_and_diagnosis_line():
    reply = (
        "It is [SEG]. This is an X-ray of the wrist.\nA lucent line crosses the radius.\n\nDiagnosis: Wrist Fracture."
    )
    chain = extract_chain(reply, "wrist positive", ("wrist fracture",))
    assert chain.problems == []
    assert chain.text == "This is an X-ray of the wrist.\nA lucent line crosses the radius."


def test_extract_chain_problems():
    assert "known diagnosis is 'benign'" in extract_chain("Looks bad.\nDiagnosis: malignant.", "benign").problems[0]
    assert "must end with a final line 'Diagnosis: benign.'" in extract_chain("Looks fine.", "benign").problems[0]
    assert "empty" in extract_chain("Diagnosis: benign.", "benign").problems[0]


def test_label_matches_ignores_case_punctuation_synonyms():
    assert label_matches("Age related macular-degeneration", "age-related macular degeneration")
    assert label_matches("AMD", "age-related macular degeneration", ("AMD",))
    assert not label_matches("malignant", "benign")


def test_default_prompts_render_all_fields():
    prompts = Prompts.load()
    values = {"question": "Q?", "diagnosis": "polyp", "modality": "endoscopy", "subset": "Kvasir-SEG"}
    medical = prompts.render("medical", **values)
    assert "Q?" in medical and "Known diagnosis: polyp" in medical and "Diagnosis: polyp." in medical
    assert "modality" in medical.lower()
    revision = prompts.render("revision", previous="old chain", feedback="- bad", **values)
    assert "old chain" in revision and "- bad" in revision
    critic = prompts.render("critic", chain="the chain", **values)
    assert "the chain" in critic and "VERDICT: ACCEPT or REJECT" in critic
    # What the critic is told to write, the parser reads.
    assert parse_verdict("VERDICT: ACCEPT\nREASONS:\n- none").accepted
    assert "critical assistant" in prompts.render("critic_system", **values)


def test_user_prompt_dir_overrides_and_falls_back(tmp_path):
    (tmp_path / "medical.txt").write_text("Describe {question} -> {diagnosis}", encoding="utf-8")
    prompts = Prompts.load(tmp_path)
    assert prompts.render("medical", question="q", diagnosis="d", modality="m", subset="s") == "Describe q -> d"
    assert prompts.sources["medical"] == str(tmp_path / "medical.txt")
    assert prompts.sources["critic"].startswith(str(default_prompt_dir()))
    assert prompts.digest() != Prompts.load().digest()


def test_bad_prompt_files_name_the_file(tmp_path):
    (tmp_path / "critic.txt").write_text("Review {chian}", encoding="utf-8")
    with pytest.raises(InputError, match=r"critic\.txt: unknown placeholder\(s\) \['chian'\]"):
        Prompts.load(tmp_path)
    (tmp_path / "critic.txt").write_text("Review {chain", encoding="utf-8")
    with pytest.raises(InputError, match=r"critic\.txt: invalid placeholder syntax"):
        Prompts.load(tmp_path)
    with pytest.raises(InputError, match="prompt directory not found"):
        Prompts.load(tmp_path / "missing")


def test_copy_defaults(tmp_path):
    written = copy_defaults(tmp_path / "p")
    assert sorted(p.stem for p in written) == sorted(PROMPT_FIELDS)
    assert Prompts.load(tmp_path / "p").digest() == Prompts.load().digest()
    with pytest.raises(InputError, match="file exists"):
        copy_defaults(tmp_path / "p")
