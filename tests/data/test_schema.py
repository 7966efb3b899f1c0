import json

import pytest

from sim4seg.data import prompts
from sim4seg.data.schema import (
    Answers,
    DatasetInfo,
    Sample,
    Source,
    iter_split,
    read_info,
    read_split,
    write_manifest,
)
from sim4seg.data.subsets import SUBSETS
from sim4seg.errors import ManifestError


def make(i=0, split="train", subset="busi", label="benign", **kw):
    sid = f"{subset}-{i}"
    d = dict(
        id=sid,
        subset=subset,
        modality=SUBSETS[subset].modality,
        split=split,
        image=f"images/{sid}.png",
        mask=f"masks/{sid}.png",
        query=prompts.make_query(SUBSETS[subset], 0, sid),
        diagnosis=label,
        answers=Answers(**prompts.make_answers(label, 0, sid, cot="The lesion is oval.")),
        source=Source(dataset="busi", files=[f"benign ({i}).png"], annotation_ids=[], mask_from="pixel", instances=1),
    )
    d.update(kw)
    return Sample(**d)


def test_round_trip(tmp_path):
    samples = [make(0), make(1, "val"), make(2, "test", label="normal"), make(3, subset="fives", label="glaucoma")]
    info = write_manifest(tmp_path, samples, DatasetInfo(subsets=dict(SUBSETS), build={"seed": 1}))
    assert info.counts == {"train": {"busi": 1, "fives": 1}, "val": {"busi": 1}, "test": {"busi": 1}}
    back = read_info(tmp_path)
    assert back.counts == info.counts and back.build == {"seed": 1}
    assert back.subsets["busi"] == SUBSETS["busi"]
    loaded = [s for split in ("train", "val", "test") for s in read_split(tmp_path, split, back)]
    assert sorted(s.id for s in loaded) == sorted(s.id for s in samples)
    by_id = {s.id: s for s in loaded}
    assert by_id["busi-0"] == samples[0]
    assert by_id["busi-0"].answers.cot.endswith("Diagnosis: benign.")


def test_no_temp_files_left(tmp_path):
    write_manifest(tmp_path, [make(0)], DatasetInfo(subsets=dict(SUBSETS)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_info.json", "test.jsonl", "train.jsonl", "val.jsonl"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(diagnosis="cancer"), "not in the label set"),
        (lambda d: d.pop("query"), "missing field(s): query"),
        (lambda d: d.update(split="dev"), "split must be one of"),
        (lambda d: d.update(modality="ultrasound", subset="fives"), "subset 'fives' is fundus"),
        (lambda d: d.update(image="/abs/x.png"), "must be relative"),
        (lambda d: d.update(mask="../x.png"), "must be relative"),
        (lambda d: d.update(extra=1), "unknown field(s): extra"),
        (lambda d: d["source"].update(mask_from="magic"), "source.mask_from"),
        (lambda d: d["answers"].update(plain="It is."), "must contain [SEG]"),
    ],
)
def test_bad_record_names_file_and_line(tmp_path, mutate, message):
    write_manifest(tmp_path, [make(0), make(1)], DatasetInfo(subsets=dict(SUBSETS)))
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    mutate(bad)
    lines[1] = json.dumps(bad)
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as e:
        read_split(tmp_path, "train")
    assert str(e.value).startswith(f"{tmp_path / 'train.jsonl'}:2: ")
    assert message in str(e.value)


def test_malformed_json_line_collected(tmp_path):
    write_manifest(tmp_path, [make(0), make(1)], DatasetInfo(subsets=dict(SUBSETS)))
    with open(tmp_path / "train.jsonl", "a") as f:
        f.write('{"id": "oops", \n')
    errors = []
    good = list(iter_split(tmp_path, "train", errors=errors))
    assert len(good) == 2 and len(errors) == 1
    assert errors[0].line == 3 and "malformed JSON" in errors[0].problem


def test_record_in_wrong_split_file(tmp_path):
    write_manifest(tmp_path, [make(0)], DatasetInfo(subsets=dict(SUBSETS)))
    (tmp_path / "val.jsonl").write_text((tmp_path / "train.jsonl").read_text())
    with pytest.raises(ManifestError, match="split 'train' but is in val.jsonl"):
        read_split(tmp_path, "val")


def test_info_errors(tmp_path):
    with pytest.raises(ManifestError, match="not an M3DS directory"):
        read_info(tmp_path)
    (tmp_path / "dataset_info.json").write_text("{")
    with pytest.raises(ManifestError, match="invalid JSON"):
        read_info(tmp_path)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"schema_version": "9.0", "subsets": {}}))
    with pytest.raises(ManifestError, match="schema_version '9.0' is not supported"):
        read_info(tmp_path)


def test_custom_subset_label_set(tmp_path):
    """A user's own subset: the manifest's label sets are authoritative."""
    from sim4seg.data.subsets import SubsetInfo

    mine = SubsetInfo("mine", "Mine", "endoscopy", ("ulcer", "normal"), target="ulcer", no_finding="normal")
    s = make(0, subset="busi", label="benign")
    s.subset, s.modality, s.diagnosis = "mine", "endoscopy", "ulcer"
    write_manifest(tmp_path, [s], DatasetInfo(subsets={"mine": mine}))
    assert read_split(tmp_path, "train")[0].diagnosis == "ulcer"


def test_answers_parse_back():
    for label in [lb for s in SUBSETS.values() for lb in s.labels]:
        ans = prompts.make_answers(label, 7, "k", cot="Step 1. Step 2.\nStep 3.")
        assert ans["plain"] == "It is [SEG]."
        assert prompts.parse_diagnosis_line(ans["diagnosis"]) == label
        assert prompts.parse_diagnosis_line(ans["cot"]) == label
        assert ans["cot"].startswith("It is [SEG]. Step 1.")
    assert prompts.cot_answer("benign", "  ") == ""
    assert prompts.parse_diagnosis_line("no label here") is None
    assert prompts.parse_diagnosis_line("DIAGNOSIS :  Nevus ") == "Nevus"


def test_prompt_choice_is_deterministic_and_varied():
    info = SUBSETS["kvasir_seg"]
    qs = {prompts.make_query(info, 0, f"id{i}") for i in range(40)}
    assert len(qs) == len(prompts.QUERY_TEMPLATES)
    assert all("polyp" in q and "endoscopy" in q for q in qs)
    assert prompts.make_query(info, 0, "a") == prompts.make_query(info, 0, "a")
    assert [prompts.make_query(info, 1, f"id{i}") for i in range(10)] != [
        prompts.make_query(info, 2, f"id{i}") for i in range(10)
    ]
