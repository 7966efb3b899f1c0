"""docs/custom-data.md, run as written: every ``sim4seg`` command of its bash blocks, in order, on a small
generated folder (the CoT server is the tests' fake OpenAI-compatible server; training is cut to a few steps)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cot_fake_server import FakeServer
from sim4seg.apps.cli import main
from sim4seg.data.io import read_mask
from sim4seg.data.schema import load_split

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "custom-data.md"
FAST_TRAIN = ["--set", "train.max_steps=3", "train.progress=false", "optim.batch_size=2", "data.max_val_samples=2"]


def doc_commands() -> list[str]:
    """The lines of the doc's ```bash blocks, continuation lines joined, comments dropped."""
    text = DOC.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                out.append(line)
    return out


def _make_folder(tmp: Path) -> None:
    """24 X-ray-like images with masks and labels (no mask file for the no-finding ones), 4 of them 1280×1024."""
    from sim4seg.data.synthetic import synthesize

    syn = tmp / "syn"
    synthesize(syn, 24, seed=1, subsets=["fracatlas"], size_range=(64, 96))
    (tmp / "my-data" / "images").mkdir(parents=True)
    (tmp / "my-data" / "masks").mkdir()
    rows = ["image,label"]
    i = 0
    for split in ("train", "val", "test"):
        for s in load_split(syn, split)[1]:
            i += 1
            name = f"case-{i:03d}"
            img, mask = Image.open(syn / s.image).convert("RGB"), Image.open(syn / s.mask)
            if i % 6 == 1:
                img, mask = img.resize((1280, 1024), Image.BILINEAR), mask.resize((1280, 1024), Image.NEAREST)
            img.save(tmp / "my-data" / "images" / f"{name}.png")
            label = "no fracture" if s.diagnosis == "no fracture" else "wrist fracture"
            if label != "no fracture":
                mask.save(tmp / "my-data" / "masks" / f"{name}.png")
            rows.append(f"{name}.png,{label}")
    (tmp / "my-data" / "labels.csv").write_text("\n".join(rows) + "\n")
    (tmp / "new-cases").mkdir()
    for k in (2, 3, 4):
        shutil.copy(tmp / "my-data" / "images" / f"case-{k:03d}.png", tmp / "new-cases")


@pytest.mark.timeout(600)
def test_custom_data_doc_runs_as_written(tmp_path, monkeypatch, capsys):
    commands = doc_commands()
    assert [c.split()[1] for c in commands if c.startswith("sim4seg")] == [
        "data",
        "data",
        "data",
        "cot",
        "cot",
        "cot",
        "cot",
        "train",
        "model",
        "evaluate",
        "predict",
    ]
    _make_folder(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    printed = {}
    with FakeServer() as srv:
        for cmd in commands:
            argv = shlex.split(cmd)
            if argv[0] == "export":  # the server of the doc is the fake one here
                name, _, _ = argv[1].partition("=")
                assert name in ("SIM4SEG_COT_BASE_URL", "SIM4SEG_COT_MODEL")
                monkeypatch.setenv(name, srv.url if name.endswith("URL") else "tiny-med")
                continue
            assert argv[0] == "sim4seg", cmd
            args = argv[1:] + (FAST_TRAIN if argv[1] == "train" else [])
            assert main(args) == 0, cmd
            printed[" ".join(argv[1:3])] = capsys.readouterr().out
    doc = DOC.read_text(encoding="utf-8")
    # the doc quotes what the import and model info print
    lines = printed["data import"].splitlines()
    assert lines[0] in doc and lines[1] in doc and lines[2].split("; 0 file(s) skipped")[0] in doc
    assert all(x in doc for x in printed["data stats"].splitlines() if "fracture" in x)
    label_line = next(x for x in printed["model info"].splitlines() if x.strip().startswith("wrist_xr ["))
    assert label_line in doc and "(built by `data import`)" in printed["model info"]
    # --max-side: 4 images stored downscaled, masks with them, the original size kept
    info, samples = load_split(tmp_path / "m3ds-mine", "train")
    assert set(info.subsets["wrist_xr"].labels) == {"no fracture", "wrist fracture"}
    big = [
        s
        for split in ("train", "val", "test")
        for s in load_split(tmp_path / "m3ds-mine", split)[1]
        if s.source.original_size
    ]
    assert len(big) == 4 and all(s.source.original_size == [1024, 1280] for s in big)
    for s in big:
        assert Image.open(tmp_path / "m3ds-mine" / s.image).size == (1024, 819)
        assert read_mask(tmp_path / "m3ds-mine" / s.mask).shape == (819, 1024)
    # CoT applied, trained on it, evaluated and predicted
    assert all(s.answers.cot for s in samples + load_split(tmp_path / "m3ds-mine", "val")[1])
    training = json.loads((tmp_path / "runs/mine/final/training.json").read_text())
    assert training["data"]["answer_format"] == "cot" and list(training["subsets"]) == ["wrist_xr"]
    assert json.loads((tmp_path / "eval-mine" / "metrics.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "preds-mine" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert "3 image(s): 3 prediction(s) written" in printed["predict --checkpoint"]
    assert np.all([(tmp_path / "preds-mine" / r["mask"]).is_file() for r in rows])
