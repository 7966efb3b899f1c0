import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sim4seg.apps.cli import build_parser, main


@pytest.fixture
def m3ds(synth_m3ds, tmp_path):
    root = tmp_path / "m3ds"
    shutil.copytree(synth_m3ds, root)
    return root


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    for cmd in ("synth", "stats", "verify", "export"):
        assert cmd in out
    assert build_parser().prog == "sim4seg"


def test_synth_stats_verify(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["data", "synth", "--out", str(out), "--n", "30", "--seed", "2", "--min-size", "40", "--max-size", "60"]) == 0
    assert main(["data", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    busi = next(l for l in lines if l.startswith("BUSI "))
    cells = [c.strip() for c in busi.split("|")]
    assert cells[1].split() == ["x"] and sum(map(int, cells[2].split())) == 3 and cells[3] == "3"
    total = next(l for l in lines if l.startswith("Total"))
    assert total.split("|")[1].split() == ["4", "2", "1", "2", "1"] and total.split("|")[-1].strip() == "30"
    assert any(l.startswith("ChestX-Det") and "| pneumothorax" in l for l in lines)
    assert main(["data", "verify", str(out)]) == 0
    assert "checked 30 record(s): OK" in capsys.readouterr().out


def test_verify_lists_every_problem(m3ds, capsys):
    train = [json.loads(l) for l in (m3ds / "train.jsonl").read_text().splitlines()]
    a, b, c, d = train[0], train[1], train[2], train[3]
    Image.new("L", (7, 5), 255).save(m3ds / a["mask"])  # wrong size
    Image.fromarray(np.full((9, 9), 128, np.uint8)).resize(Image.open(m3ds / b["image"]).size).save(m3ds / b["mask"])
    (m3ds / c["image"]).unlink()  # missing image
    lines = (m3ds / "train.jsonl").read_text().splitlines()
    d["diagnosis"] = "flu"
    lines[3] = json.dumps(d)
    lines.append("{not json")
    (m3ds / "train.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["data", "verify", str(m3ds)]) == 1
    out = capsys.readouterr().out
    assert f"train.jsonl:1: mask {a['id']}.png is 7x5 but the image is" in out
    assert f"train.jsonl:2: mask {b['id']}.png is not binary 0/255 (values: 128)" in out
    assert f"train.jsonl:3: image: {m3ds / c['image']}: file not found" in out
    assert "train.jsonl:4: diagnosis 'flu' is not in the label set" in out
    assert f"train.jsonl:{len(lines)}: malformed JSON" in out
    assert "counts do not match" in out
    assert "6 problem(s)" in out


def test_verify_not_a_dataset(tmp_path, capsys):
    assert main(["data", "verify", str(tmp_path)]) == 1
    assert "dataset_info.json: not an M3DS directory" in capsys.readouterr().out


def test_stats_bad_dir_is_clear_error(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "nope")]) == 2
    assert "error:" in capsys.readouterr().err


def test_synth_bad_subset(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "3", "--subsets", "mri"]) == 2
    assert "unknown subset" in capsys.readouterr().err


def test_synth_clutter_options(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["data", "synth", "--out", str(out), "--n", "4", "--subsets", "fracatlas", "--min-size", "40",
                 "--max-size", "40", "--lesion-scale", "0.06", "0.09", "--distractors", "2", "5"]) == 0
    build = json.loads((out / "dataset_info.json").read_text())["build"]
    assert build["lesion_scale"] == [0.06, 0.09] and build["distractors"] == [2, 5]
    assert main(["data", "synth", "--out", str(out), "--n", "4", "--lesion-scale", "0.3", "0.1"]) == 2
    assert "lesion scale must satisfy" in capsys.readouterr().err


def test_export_parquet_round_trip(synth_m3ds, tmp_path, capsys):
    import pyarrow.parquet as pq

    assert main(["data", "export", str(synth_m3ds), "--out", str(tmp_path / "pq")]) == 0
    table = pq.read_table(tmp_path / "pq" / "train.parquet")
    rows = table.to_pylist()
    first = json.loads((synth_m3ds / "train.jsonl").read_text().splitlines()[0])
    assert rows[0]["id"] == first["id"] and rows[0]["image"]["path"] == first["image"]
    assert rows[0]["image"]["bytes"] == (synth_m3ds / first["image"]).read_bytes()
    assert json.loads(rows[0]["answers"]) == first["answers"]
    info = json.loads((synth_m3ds / "dataset_info.json").read_text())
    assert table.num_rows == sum(info["counts"]["train"].values())
