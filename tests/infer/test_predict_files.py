"""``predict`` over a folder, a glob or a list file (NIfTI slices, DICOM frames, unreadable files recorded as
failed, resumable), and the checkpoint's label sets: ``subset=`` parsed by itself, a warning for an unseen subset."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib  # noqa: E402  (the serve extra)
import numpy as np
import pytest

from helpers import trained_checkpoint  # noqa: E402
from sim4seg.apps.cli import main  # noqa: E402
from sim4seg.data.io import read_image, read_mask  # noqa: E402
from sim4seg.data.schema import load_split  # noqa: E402
from sim4seg.data.subsets import SubsetInfo  # noqa: E402
from sim4seg.errors import InputError  # noqa: E402
from sim4seg.infer.files import collect, expand  # noqa: E402
from sim4seg.infer.predictor import Predictor  # noqa: E402
from sim4seg.infer.tts import TTSConfig  # noqa: E402
from tests_dicom import multiframe  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(synth_m3ds, tmp_path_factory):
    return trained_checkpoint(synth_m3ds, tmp_path_factory.mktemp("ckpt") / "ckpt")


@pytest.fixture()
def folder(synth_m3ds, tmp_path):
    """Two PNGs, a corrupt file, a NIfTI volume of 3 slices and a multi-frame DICOM of 2 frames."""
    _, samples = load_split(synth_m3ds, "test")
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for s in samples[:2]:
        shutil.copy(synth_m3ds / s.image, d / Path(s.image).name)
    (d / "broken.png").write_bytes(b"\x89PNG not really")
    (d / "notes.csv").write_text("not an image\n")
    vol = np.stack([read_image(synth_m3ds / samples[0].image)[..., 0]] * 3, axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(d / "sub" / "ct.nii.gz"))
    multiframe(d / "sub" / "cine.dcm", [vol[..., 0].astype(np.uint8)] * 2)
    return d


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_folder_of_images_volumes_and_a_broken_file_resumes(ckpt, folder, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "predict",
        "--checkpoint",
        str(ckpt),
        "--images",
        str(folder),
        "--query",
        "What is the diagnosis?",
        "--nifti-index",
        "all",
        "--frame",
        "all",
        "--overlays",
        "1",
        "--max-new-tokens",
        "24",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    rows = _lines(out / "predictions.jsonl")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 2 + 1 + 3 + 2
    assert {"sub/ct.nii.gz#axis=2,slice=2", "sub/cine.dcm#frame=1", "broken.png"} <= set(ids)
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["id"] for r in failed] == ["broken.png"] and "broken.png" in failed[0]["error"]
    for r in rows:
        if r["status"] == "ok":
            mask = read_mask(out / r["mask"])
            assert list(mask.shape) == r["size"] and r["query"] == "What is the diagnosis?"
    assert len(list((out / "overlays").glob("*.png"))) == 1
    printed = capsys.readouterr().out
    assert "8 image(s): 7 prediction(s) written, 1 failed, 0 already done" in printed
    # a re-run skips everything; a file cut after 3 lines is completed without duplicates
    assert main(args) == 0
    assert "0 prediction(s) written, 0 failed, 8 already done" in capsys.readouterr().out
    text = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(text[:3]) + text[3][:10])  # a killed write
    assert main(args) == 0
    again = _lines(out / "predictions.jsonl")
    assert sorted(r["id"] for r in again) == sorted(ids)


def test_volume_without_a_chosen_slice_is_recorded_with_the_reason(ckpt, folder, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--images",
                str(folder / "sub"),
                "--query",
                "x",
                "--max-new-tokens",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = {r["id"]: r for r in _lines(out / "predictions.jsonl")}
    assert rows["ct.nii.gz"]["status"] == "failed" and "3 slices" in rows["ct.nii.gz"]["error"]
    assert "--nifti-index" in rows["ct.nii.gz"]["error"]
    assert rows["cine.dcm"]["status"] == "failed" and "2 frames" in rows["cine.dcm"]["error"]
    # one chosen slice of one volume: the single-image outputs
    out1 = tmp_path / "one"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--image",
                str(folder / "sub" / "ct.nii.gz"),
                "--nifti-index",
                "1",
                "--query",
                "x",
                "--max-new-tokens",
                "8",
                "--out",
                str(out1),
            ]
        )
        == 0
    )
    assert (out1 / "ct_axis_2_slice_1_mask.png").is_file()


def test_glob_and_list_inputs(folder, tmp_path):
    assert [p.name for p in collect(None, [str(folder / "*.png")])] == sorted(p.name for p in folder.glob("*.png"))
    lst = tmp_path / "list.txt"
    lst.write_text("# my cases\n../in/broken.png\n\nmissing.png\n" + str(folder / "sub" / "ct.nii.gz") + "\n")
    (tmp_path / "lists").mkdir()
    shutil.move(lst, tmp_path / "lists" / "list.txt")
    paths = collect(None, [str(tmp_path / "lists" / "list.txt")])
    assert [p.name for p in paths] == ["broken.png", "missing.png", "ct.nii.gz"]
    units = expand(paths, index=0)
    assert [u.id for u in units] == ["in/broken.png", "lists/missing.png", "in/sub/ct.nii.gz#axis=2,slice=0"]
    one = multiframe(tmp_path / "one.dcm", [np.zeros((4, 4), np.uint8)])  # --frame applies to multi-frame files only
    assert [(u.id, u.frame) for u in expand([one], frame=1)] == [("one.dcm", None)]
    with pytest.raises(InputError, match="matches no file"):
        collect(None, [str(tmp_path / "*.jpg")])
    with pytest.raises(InputError, match="a folder, a glob pattern or a .txt list"):
        collect(None, [str(tmp_path / "nope")])
    with pytest.raises(InputError, match="no image"):
        (tmp_path / "empty").mkdir()
        collect(None, [str(tmp_path / "empty")])


def test_subset_maps_to_the_checkpoint_label_set_and_warns_when_unseen(ckpt, synth_m3ds, caplog):
    _, samples = load_split(synth_m3ds, "test")
    s = samples[0]
    plain = Predictor.from_checkpoint(ckpt, tts=TTSConfig(max_new_tokens=24))
    plain.set_image(synth_m3ds / s.image)
    said = plain.predict(s.query).diagnosis  # the Diagnosis line as written
    assert said
    mine = SubsetInfo(
        "mine", "Mine", s.modality, ("my label", "other"), target="lesion", synonyms={"my label": (said,)}
    )
    p = Predictor(plain.model, plain.processor, plain.tts, subsets={"mine": mine})
    p.set_image(synth_m3ds / s.image)
    assert p.predict(s.query, subset="mine").diagnosis == "my label"  # no parser= needed
    with caplog.at_level(logging.WARNING):
        p.predict(s.query, subset="chestx_det")
    assert "never trained on subset 'chestx_det'" in caplog.text and "it knows mine" in caplog.text
    with pytest.raises(InputError, match="unknown subset 'nope'.*mine"):
        p.predict(s.query, subset="nope")
