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
    assert (
        main(["data", "synth", "--out", str(out), "--n", "30", "--seed", "2", "--min-size", "40", "--max-size", "60"])
        == 0
    )
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
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--n",
                "4",
                "--subsets",
                "fracatlas",
                "--min-size",
                "40",
                "--max-size",
                "40",
                "--lesion-scale",
                "0.06",
                "0.09",
                "--distractors",
                "2",
                "5",
            ]
        )
        == 0
    )
    build = json.loads((out / "dataset_info.json").read_text())["build"]
    assert build["lesion_scale"] == [0.06, 0.09] and build["distractors"] == [2, 5]
    assert main(["data", "synth", "--out", str(out), "--n", "4", "--lesion-scale", "0.3", "0.1"]) == 2
    assert "lesion scale must satisfy" in capsys.readouterr().err


def _shards(out, split):
    return sorted((out / "data").glob(f"{split}-*.parquet"))


def test_export_parquet_round_trip_in_shards(synth_m3ds, tmp_path, capsys):
    import re

    import pyarrow.parquet as pq

    out = tmp_path / "pq"
    assert main(["data", "export", str(synth_m3ds), "--out", str(out), "--max-shard-size", "40KB"]) == 0
    info = json.loads((synth_m3ds / "dataset_info.json").read_text())
    for split in ("train", "val", "test"):
        records = [json.loads(l) for l in (synth_m3ds / f"{split}.jsonl").read_text().splitlines()]
        shards = _shards(out, split)
        n = len(shards)
        assert [p.name for p in shards] == [f"{split}-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        assert all(p.stat().st_size <= 40_000 for p in shards)
        rows = [r for p in shards for r in pq.read_table(p).to_pylist()]
        assert [r["id"] for r in rows] == [r["id"] for r in records]  # every sample once, in manifest order
        assert len(rows) == sum(info["counts"][split].values())
        for row, rec in zip(rows[:3], records):
            assert row["image"]["path"] == rec["image"]
            assert row["image"]["bytes"] == (synth_m3ds / rec["image"]).read_bytes()
            assert row["mask"]["bytes"] == (synth_m3ds / rec["mask"]).read_bytes()
            assert json.loads(row["answers"]) == rec["answers"] and json.loads(row["source"]) == rec["source"]
    assert len(_shards(out, "train")) > 1
    assert json.loads((out / "dataset_info.json").read_text()) == info
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert re.search(r"wrote train: \d+, val: \d+, test: \d+ rows", capsys.readouterr().out)


def test_export_row_groups_are_bounded(synth_m3ds, tmp_path):
    import pyarrow.parquet as pq

    from sim4seg.data.export import export_parquet

    export_parquet(synth_m3ds, tmp_path / "a", row_group_rows=7)
    groups = [pq.ParquetFile(p).metadata for p in _shards(tmp_path / "a", "train")]
    sizes = [m.row_group(i).num_rows for m in groups for i in range(m.num_row_groups)]
    assert len(sizes) > 3 and max(sizes) == 7
    export_parquet(synth_m3ds, tmp_path / "b", row_group_bytes=30_000)
    for p in _shards(tmp_path / "b", "train"):
        m = pq.ParquetFile(p).metadata
        for i in range(m.num_row_groups):
            g = m.row_group(i)
            assert g.num_rows == 1 or g.total_byte_size <= 33_000  # the estimate leaves out page headers


def test_export_loads_with_hf_datasets_also_streaming(synth_m3ds, tmp_path):
    import datasets  # in the dev extra

    out = tmp_path / "pq"
    assert main(["data", "export", str(synth_m3ds), "--out", str(out), "--max-shard-size", "40KB"]) == 0
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    info = json.loads((synth_m3ds / "dataset_info.json").read_text())
    assert {k: ds[k].num_rows for k in ds} == {k: sum(v.values()) for k, v in info["counts"].items()}
    first = json.loads((synth_m3ds / "train.jsonl").read_text().splitlines()[0])
    row = ds["train"][0]
    assert row["id"] == first["id"]
    assert np.array_equal(np.asarray(row["mask"]), np.asarray(Image.open(synth_m3ds / first["mask"])))
    files = {"train": [str(p) for p in _shards(out, "train")]}
    stream = datasets.load_dataset("parquet", data_files=files, streaming=True)["train"]
    ids = [json.loads(l)["id"] for l in (synth_m3ds / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in stream] == ids


def test_killed_export_leaves_no_final_file_and_the_next_one_cleans_up(synth_m3ds, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "pq"
    assert main(["data", "export", str(synth_m3ds), "--out", str(out), "--max-shard-size", "40KB"]) == 0
    before = {p.name: p.read_bytes() for p in (out / "data").iterdir()}
    # A process that dies (os._exit: no cleanup, like kill -9) in the middle of writing shards.
    script = (
        "import os, sys\n"
        "import sim4seg.data.export as e\n"
        "orig, n = e._ShardWriter.write, [0]\n"
        "def write(self, *a):\n"
        "    n[0] += 1\n"
        "    if n[0] == 4:\n"
        "        os._exit(9)\n"
        "    return orig(self, *a)\n"
        "e._ShardWriter.write = write\n"
        "e.export_parquet(sys.argv[1], sys.argv[2], max_shard_size=20_000, row_group_rows=2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    assert subprocess.run([sys.executable, "-c", script, str(synth_m3ds), str(out)], env=env).returncode == 9
    assert {p.name: p.read_bytes() for p in (out / "data").iterdir()} == before  # the old export, untouched
    left = [p for p in out.iterdir() if p.name.startswith(".export-tmp-")]
    assert len(left) == 1 and list(left[0].rglob("*.parquet"))  # the half-done work is only there
    assert main(["data", "export", str(synth_m3ds), "--out", str(out), "--max-shard-size", "20KB"]) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert len(_shards(out, "train")) > len([n for n in before if n.startswith("train-")])


def test_export_bad_size_and_missing_image(m3ds, tmp_path, capsys):
    from sim4seg.data.export import parse_size

    assert parse_size("500MB") == 500_000_000 and parse_size("2GiB") == 2 * 1024**3 and parse_size("1000") == 1000
    assert main(["data", "export", str(m3ds), "--out", str(tmp_path / "o"), "--max-shard-size", "lots"]) == 2
    assert "not a size: 'lots'" in capsys.readouterr().err
    first = json.loads((m3ds / "test.jsonl").read_text().splitlines()[0])
    (m3ds / first["image"]).unlink()
    assert main(["data", "export", str(m3ds), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "image file not found" in err and "test.jsonl" in err
    assert not (tmp_path / "o" / "data").exists()
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]
