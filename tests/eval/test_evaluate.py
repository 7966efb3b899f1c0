"""``sim4seg evaluate`` end to end on the synthetic M3DS: perfect predictions, baselines, bad input."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sim4seg.apps.cli import main
from sim4seg.data.io import read_mask, write_mask
from sim4seg.data.schema import read_info, read_split
from sim4seg.errors import InputError
from sim4seg.eval.evaluate import evaluate, evaluate_baseline, evaluate_predictions


@pytest.fixture(scope="module")
def test_samples(synth_m3ds):
    samples = read_split(synth_m3ds, "test")
    assert len(samples) >= 5
    return samples


def write_preds(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def perfect_rows(root: Path, samples, pred_dir: Path) -> list[dict]:
    return [
        {"id": s.id, "mask": os.path.relpath(root / s.mask, pred_dir), "answer": s.answers.diagnosis} for s in samples
    ]


def test_perfect_predictions_via_cli(synth_m3ds, test_samples, tmp_path, capsys):
    preds = write_preds(tmp_path / "p" / "preds.jsonl", perfect_rows(synth_m3ds, test_samples, tmp_path / "p"))
    out = tmp_path / "out"
    rc = main(
        ["evaluate", "--manifest", str(synth_m3ds), "--split", "test", "--predictions", str(preds), "--out", str(out)]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    o = metrics["overall"]
    assert o == {"giou": 1.0, "ciou": 1.0, "dice": 1.0, "acc": 1.0, "n": len(test_samples), "unparseable": 0}
    assert set(metrics["per_subset"]) == {s.subset for s in test_samples}
    for v in metrics["per_subset"].values():
        assert v["giou"] == v["ciou"] == v["acc"] == 1.0
    assert (out / "metrics.md").read_text().count("100.00") >= 3
    assert (out / "metrics.csv").is_file()
    rows = [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [s.id for s in test_samples]
    assert all(r["correct"] and r["iou"] == 1.0 for r in rows)
    assert "| preds | 100.00 | 100.00 | 100.00 |" in capsys.readouterr().out


def test_unparseable_answers_are_wrong_and_counted(synth_m3ds, test_samples, tmp_path):
    rows = perfect_rows(synth_m3ds, test_samples, tmp_path)
    rows[0]["answer"] = "It is [SEG]."
    rows[1]["answer"] = "It is [SEG]. I cannot tell."
    ev = evaluate_predictions(synth_m3ds, "test", write_preds(tmp_path / "p.jsonl", rows))
    o = ev.summary()["overall"]
    assert o["unparseable"] == 2
    assert o["acc"] == pytest.approx((len(rows) - 2) / len(rows))


def test_baselines_against_independent_computation(synth_m3ds, test_samples):
    gts = [read_mask(synth_m3ds / s.mask) for s in test_samples]
    empty = evaluate_baseline(synth_m3ds, "test", "empty").summary()["overall"]
    assert empty["giou"] == pytest.approx(np.mean([0.0 if g.any() else 1.0 for g in gts]))
    assert empty["ciou"] == (0.0 if any(g.any() for g in gts) else 1.0)
    assert empty["acc"] is None and empty["n"] == len(gts)
    full = evaluate_baseline(synth_m3ds, "test", "full").summary()["overall"]
    assert full["giou"] == pytest.approx(np.mean([g.mean() for g in gts]))
    assert full["ciou"] == pytest.approx(sum(g.sum() for g in gts) / sum(g.size for g in gts))
    train = read_split(synth_m3ds, "train")
    info = read_info(synth_m3ds)
    majority = {}
    for name, sub in info.subsets.items():
        c = Counter(s.diagnosis for s in train if s.subset == name)
        top = max(c.values(), default=0)
        majority[name] = next(label for label in sub.labels if c[label] == top)
    maj = evaluate_baseline(synth_m3ds, "test", "majority").summary()["overall"]
    assert maj["giou"] is None
    assert maj["acc"] == pytest.approx(np.mean([majority[s.subset] == s.diagnosis for s in test_samples]))


def test_evaluate_triples_api(synth_m3ds, test_samples):
    items = [(s, read_mask(synth_m3ds / s.mask), s.answers.diagnosis) for s in test_samples[:3]]
    assert evaluate(items, synth_m3ds).summary()["overall"]["giou"] == 1.0
    s = test_samples[0]
    with pytest.raises(InputError, match=f"predicted mask of {s.id} is 3x2"):
        evaluate([(s, np.zeros((2, 3), bool), None)], synth_m3ds)


def run_bad(synth_m3ds, preds: Path, capsys) -> str:
    rc = main(
        ["evaluate", "--manifest", str(synth_m3ds), "--predictions", str(preds), "--out", str(preds.parent / "o")]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not (preds.parent / "o" / "metrics.json").exists()
    return err


def test_missing_ids_listed(synth_m3ds, test_samples, tmp_path, capsys):
    rows = perfect_rows(synth_m3ds, test_samples, tmp_path)
    dropped = [r["id"] for r in rows[:2]]
    err = run_bad(synth_m3ds, write_preds(tmp_path / "p.jsonl", rows[2:]), capsys)
    assert "p.jsonl" in err and "2 id(s) of the 'test' split have no prediction" in err
    assert all(d in err for d in dropped)


def test_many_missing_ids_show_first_few(synth_m3ds, test_samples, tmp_path, capsys):
    rows = perfect_rows(synth_m3ds, test_samples, tmp_path)[:1]
    err = run_bad(synth_m3ds, write_preds(tmp_path / "p.jsonl", rows), capsys)
    assert f"{len(test_samples) - 1} id(s)" in err and "more)" in err


def test_unknown_ids(synth_m3ds, test_samples, tmp_path, capsys):
    rows = perfect_rows(synth_m3ds, test_samples, tmp_path) + [{"id": "ghost-1", "mask": None, "answer": "x"}]
    rows[-1]["mask"] = rows[0]["mask"]
    err = run_bad(synth_m3ds, write_preds(tmp_path / "p.jsonl", rows), capsys)
    assert "1 id(s) are not in the 'test' split" in err and "ghost-1" in err and f"line {len(rows)}" in err


def test_wrong_size_mask(synth_m3ds, test_samples, tmp_path, capsys):
    rows = perfect_rows(synth_m3ds, test_samples, tmp_path)
    write_mask(tmp_path / "small.png", np.zeros((5, 7), bool))
    rows[3]["mask"] = "small.png"
    err = run_bad(synth_m3ds, write_preds(tmp_path / "p.jsonl", rows), capsys)
    assert "p.jsonl:4" in err and "is 7x5 but its ground truth" in err


def test_unreadable_and_missing_mask(synth_m3ds, test_samples, tmp_path, capsys):
    rows = perfect_rows(synth_m3ds, test_samples, tmp_path)
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    rows[1]["mask"] = "junk.png"
    err = run_bad(synth_m3ds, write_preds(tmp_path / "p.jsonl", rows), capsys)
    assert "p.jsonl:2" in err and "junk.png" in err
    rows[1]["mask"] = "nowhere.png"
    err = run_bad(synth_m3ds, write_preds(tmp_path / "p.jsonl", rows), capsys)
    assert "p.jsonl:2" in err and "file not found" in err


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"id": "a", "mask": "m.png", "answer": "x"', "malformed JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"mask": "m.png", "answer": "x"}', "'id' must be a non-empty string"),
        ('{"id": "a", "mask": 3, "answer": "x"}', "'mask' must be a string or null"),
    ],
)
def test_malformed_lines(synth_m3ds, test_samples, tmp_path, capsys, line, message):
    rows = perfect_rows(synth_m3ds, test_samples, tmp_path)
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n" + line + "\n", encoding="utf-8")
    err = run_bad(synth_m3ds, path, capsys)
    assert "p.jsonl:3" in err and message in err


def test_duplicate_and_inconsistent_fields(synth_m3ds, test_samples, tmp_path, capsys):
    rows = perfect_rows(synth_m3ds, test_samples, tmp_path)
    err = run_bad(synth_m3ds, write_preds(tmp_path / "p.jsonl", rows + [rows[0]]), capsys)
    assert f"p.jsonl:{len(rows) + 1}" in err and "appears twice (first on line 1)" in err
    rows[2]["mask"] = None
    err = run_bad(synth_m3ds, write_preds(tmp_path / "p.jsonl", rows), capsys)
    assert "'mask' is given on line 1 but missing or null on line 3" in err


def test_masks_absent_everywhere_scores_diagnosis_only(synth_m3ds, test_samples, tmp_path):
    rows = [{"id": s.id, "answer": f"Diagnosis: {s.diagnosis}."} for s in test_samples]
    o = evaluate_predictions(synth_m3ds, "test", write_preds(tmp_path / "p.jsonl", rows)).summary()["overall"]
    assert o["giou"] is None and o["acc"] == 1.0


def test_missing_file_and_bad_manifest(synth_m3ds, tmp_path, capsys):
    err = run_bad(synth_m3ds, tmp_path / "none.jsonl", capsys)
    assert "none.jsonl" in err and "not found" in err
    rc = main(["evaluate", "--manifest", str(tmp_path), "--baseline", "empty", "--out", str(tmp_path / "o")])
    assert rc == 2 and "not an M3DS directory" in capsys.readouterr().err
