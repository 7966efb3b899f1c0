"""``sim4seg paper``: the reference numbers, every protocol's commands and tables, table5/table6 end to end."""

from __future__ import annotations

import json
import shlex

import pytest

from sim4seg.apps.cli import main
from sim4seg.eval.report import TABLE3_COLUMNS
from sim4seg.paper import collect
from sim4seg.paper.protocols import PROTOCOLS, RUNS, item
from sim4seg.paper.reference import load_reference
from sim4seg.paper.runner import item_result

SMALL = ["--tiny", "--samples", "60", "--steps", "2"]
"""The smallest toy settings: 6 samples per subset (one test sample each), 2 optimizer steps per run."""


def fake_result(layout: str, value: float) -> dict:
    """A metrics.json (or sweep summaries) with every metric at ``value`` (test-local, not a model's)."""
    o = {"giou": value, "ciou": value, "acc": value, "dice": value, "n": 1, "unparseable": 0}
    if layout == "sweep":
        return {k: {"overall": o} for k in ("topk=12", "grid=8", "m=1", "n=1")}
    return {"overall": o, "per_subset": {s: dict(o) for s, _ in TABLE3_COLUMNS}}


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_every_cell_a_protocol_produces_has_a_reference(name):
    ref = load_reference()
    p = PROTOCOLS[name]
    for row in p.rows:
        for label, column, metric, ours in collect.row_values(row, fake_result(row.layout, 0.5)):
            assert ours == 50.0
            known, paper, note = ref.lookup(name, label, column, metric)
            assert known, f"{name}: no reference cell and no 'not in the paper' for {label!r} {column!r} {metric!r}"
            assert paper is not None or note.startswith("not in the paper")


def test_reference_is_typed_consistently():
    """The paper's own arithmetic holds in the typed numbers: Table 3's Avg. and Table 4's Avg."""
    cells = load_reference().cells
    rows3 = {r for t, r, _, _ in cells if t == "table3"}
    assert len(rows3) == 7
    for row in rows3:
        for metric in ("gIoU", "cIoU", "Acc"):
            vals = [cells["table3", row, title, metric] for _, title in TABLE3_COLUMNS]
            assert abs(sum(vals) / 10 - cells["table3", row, "Avg.", metric]) < 0.02, (row, metric)
    for row in ("LISA", "LISA w/ RVLS2M module"):
        g, c = cells["table4", row, "overall", "gIoU"], cells["table4", row, "overall", "cIoU"]
        assert abs((g + c) / 2 - cells["table4", row, "overall", "Avg."]) < 0.01
    assert cells["table2", "Sim4Seg (ft-CoT) +test-time scaling", "overall", "Acc"] == 82.63
    assert cells["table2", "LLaVA-Med (Li et al. 2023a)", "overall", "gIoU"] is None  # '-' in the paper


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_print_commands_one_line_per_run(name, tmp_path, capsys):
    out = tmp_path / "OUT"
    assert (
        main(
            [
                "paper",
                name,
                "--out",
                str(out),
                "--manifest",
                "/data/m3ds",
                "--base",
                "LISA",
                "--set",
                "train.deepspeed=configs/deepspeed/zero2.json",
                "--print-commands",
            ]
        )
        == 0
    )
    lines = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")]
    from sim4seg.train.recipe import load_config

    for run in PROTOCOLS[name].runs:  # the full-scale recipes are written out, the paper's settings in them
        if RUNS[run].recipe is None:
            assert not (out / "runs" / run / "recipe.yaml").exists()
            continue
        cfg = load_config(out / "runs" / run / "recipe.yaml")
        assert cfg.model.preset == "lisa-7b" and cfg.optim.grad_accum == 10 and cfg.data.manifest == "/data/m3ds"
        assert cfg.train.deepspeed == "configs/deepspeed/zero2.json"
        assert cfg.data.answer_format == RUNS[run].recipe["data.answer_format"]
        assert cfg.model.rvls2m.train is RUNS[run].recipe["model.rvls2m.train"]
    assert len(lines) == len(PROTOCOLS[name].runs)
    for line, run in zip(lines, PROTOCOLS[name].runs):
        argv = shlex.split(line)
        assert argv[:3] == ["sim4seg", "paper", name] and argv[-2:] == ["--run", run]
        assert "--manifest" in argv and "train.deepspeed=configs/deepspeed/zero2.json" in argv


@pytest.mark.parametrize("name", ["table2", "table3", "table4", "fig6", "fig7"])
def test_collect_lays_out_test_local_results_beside_the_paper(name, tmp_path, capsys):
    p = PROTOCOLS[name]
    for row in p.rows:
        path = item_result(tmp_path, row.run, item(row.run, row.item))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fake_result(row.layout, 0.5)))
    assert main(["paper", name, "--out", str(tmp_path), "--collect"]) == 0
    out = capsys.readouterr().out
    cells = json.loads((tmp_path / f"{name}.json").read_text())["cells"]
    assert cells and all(c["ours"] == 50.0 for c in cells)
    for c in cells:
        if c["paper"] is not None:
            assert c["diff"] == round(50.0 - c["paper"], 2)
    assert (tmp_path / f"{name}.csv").read_text().count("\n") == len(cells) + 1
    if name == "table2":
        assert (
            "| Sim4Seg (ft-CoT) | overall | 50.00 / 51.86 (-1.86) | 50.00 / 53.90 (-3.90) | 50.00 / 69.04 (-19.04) |"
        ) in out
        assert "ground-truth-free" in out
    if name == "fig7":
        assert "not in the paper: Figure 7 is a plot" in out


def test_full_scale_needs_the_manifest_and_the_base(synth_m3ds, tmp_path, capsys):
    assert main(["paper", "table5", "--out", str(tmp_path)]) == 2
    assert "give --manifest" in capsys.readouterr().err
    assert main(["paper", "table4", "--out", str(tmp_path), "--manifest", str(synth_m3ds)]) == 2
    assert "the zero-shot rows need --base" in capsys.readouterr().err
    assert main(["paper", "table5", "--tiny", "--out", str(tmp_path), "--run", "no-fives"]) == 2
    assert "table5 has no run 'no-fives'; its runs: no-xray" in capsys.readouterr().err
    assert main(["paper", "table6", "--out", str(tmp_path), "--tiny", "--samples", "5"]) == 2
    assert "--samples is for --tiny and needs at least 10" in capsys.readouterr().err
    assert main(["paper", "table6", "--out", str(tmp_path), "--collect"]) == 0  # nothing run yet
    out = capsys.readouterr().out
    assert "| FIVES | Sim4Seg | - / 15.76 | - / 16.17 |" in out and "not run yet" in out


@pytest.mark.parametrize("name", ["table5", "table6"])
def test_tiny_protocol_end_to_end_and_resumable(name, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["paper", name, "--out", str(out), *SMALL]) == 0
    text = capsys.readouterr().out
    assert f"{name} --tiny: 5 run(s) done, 0 skipped" in text
    for run in PROTOCOLS[name].runs:
        d = out / "runs" / run
        recipe = (d / "recipe.yaml").read_text()
        left_out = RUNS[run].recipe.get("data.exclude_modalities") or RUNS[run].recipe["data.exclude_subsets"]
        assert f"- {left_out[0]}" in recipe
        metrics = json.loads((d / "eval" / "held-out" / "metrics.json").read_text())
        log = [json.loads(x) for x in (d / "train" / "log.jsonl").read_text().splitlines()]
        assert log, "training wrote no log"
        tested = set(metrics["per_subset"])
        if name == "table6":
            assert tested == set(left_out)
        else:
            from sim4seg.data.subsets import SUBSETS

            assert tested and {SUBSETS[s].modality for s in tested} == set(left_out)
        assert "sim4seg evaluate --checkpoint" in (d / "commands.sh").read_text()
    cells = json.loads((out / f"{name}.json").read_text())["cells"]
    assert len(cells) == 10 and all(c["ours"] is not None and c["paper"] is not None for c in cells)
    assert main(["paper", name, "--out", str(out), *SMALL]) == 0
    assert f"{name} --tiny: 0 run(s) done, 5 skipped" in capsys.readouterr().out
