"""Report layouts: metrics.json, the Table 2 / Table 3 Markdown and CSV, and the sweep writers."""

from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image

from sim4seg.eval import report

COLUMNS = ["FracAtlas", "BF", "BFD", "ISBI", "ISIC", "KS", "BUSI", "TN3K", "CXD", "FIVES", "Avg."]


def entry(giou, ciou, acc, dice=0.5, n=4, unparseable=0):
    return {"giou": giou, "ciou": ciou, "dice": dice, "acc": acc, "n": n, "unparseable": unparseable}


SUMMARY = {
    "overall": entry(0.51, 0.5406, 0.6904, n=8, unparseable=1),
    "per_subset": {"busi": entry(0.25, 0.125, 0.5), "fives": entry(0.75, 0.5, 1.0), "mine": entry(1.0, 1.0, 0.0)},
}


def test_write_metrics_files(tmp_path):
    paths = report.write_metrics(tmp_path, SUMMARY, "Sim4Seg (ft-CoT)")
    assert [p.name for p in paths] == ["metrics.json", "metrics.md", "metrics.csv"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == SUMMARY
    md = (tmp_path / "metrics.md").read_text()
    assert "| Method | gIoU | cIoU | Acc |" in md
    assert "| Sim4Seg (ft-CoT) | 51.00 | 54.06 | 69.04 |" in md
    assert "| Sim4Seg (ft-CoT) | 50.00 | 8 | 1 |" in md  # Dice, n, unparseable
    header = "| Method | | " + " | ".join(COLUMNS[:-1] + ["mine", "Avg."]) + " |"
    assert header in md
    # Avg. = mean of the subsets present: (25 + 75 + 100) / 3
    assert "| Sim4Seg (ft-CoT) | gIoU | - | - | - | - | - | - | 25.00 | - | - | 75.00 | 100.00 | 66.67 |" in md
    assert "|  | Acc | - | - | - | - | - | - | 50.00 | - | - | 100.00 | 0.00 | 50.00 |" in md
    # every table row has as many cells as its header
    for block in md.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        assert len({r.count("|") for r in rows}) <= 1, block


def test_csv_layout(tmp_path):
    report.write_metrics(tmp_path, SUMMARY, "M")
    rows = list(csv.reader(io.StringIO((tmp_path / "metrics.csv").read_text())))
    assert rows[0] == ["method", "metric", "Overall"] + COLUMNS[:-1] + ["mine", "Avg."]
    assert [r[1] for r in rows[1:]] == ["gIoU", "cIoU", "Acc", "Dice"]
    assert rows[1][:3] == ["M", "gIoU", "51.00"] and rows[2][2] == "54.06"
    assert rows[1][rows[0].index("BUSI")] == "25.00" and rows[1][rows[0].index("FracAtlas")] == "-"


def test_none_prints_dash_and_multiple_methods():
    base = {"overall": entry(None, None, 0.3), "per_subset": {"busi": entry(None, None, 0.3)}}
    md = report.markdown([("baseline (majority)", base), ("Sim4Seg", SUMMARY)])
    assert "| baseline (majority) | - | - | 30.00 |" in md
    assert "| Sim4Seg | 51.00 | 54.06 | 69.04 |" in md
    assert report.pct(None) == "-" and report.pct(0.12345) == "12.35"


def test_tau_sweep(tmp_path):
    rows = [{"param": "topk", "value": k, "giou": 0.3 + k / 1000, "ciou": 0.4} for k in (12, 24, 36, 48)]
    rows += [{"param": "grid", "value": g, "giou": 0.2, "ciou": 0.25} for g in (64, 32, 16, 8)]
    csv_path, png = report.write_tau_sweep(tmp_path, rows)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "param,value,giou_pct,ciou_pct"
    assert lines[1:5] == ["grid,8,20.00,25.00", "grid,16,20.00,25.00", "grid,32,20.00,25.00", "grid,64,20.00,25.00"]
    assert lines[5] == "topk,12,31.20,40.00"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > im.height > 100


def test_tts_sweep(tmp_path):
    rows = [{"param": "m", "value": m, "acc": 0.5 + m / 100} for m in (1, 2, 4, 8)]
    rows += [{"param": "n", "value": n, "giou": 0.4, "ciou": 0.45} for n in (1, 2, 4)]
    csv_path, png = report.write_tts_sweep(tmp_path, rows)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "param,value,acc_pct,giou_pct,ciou_pct"
    assert "m,8,58.00,-,-" in lines and "n,4,-,40.00,45.00" in lines
    assert png.stat().st_size > 1000


def test_sweep_rows_validated(tmp_path):
    with pytest.raises(ValueError, match="param must be one of"):
        report.write_tau_sweep(tmp_path, [{"param": "k", "value": 1, "giou": 0, "ciou": 0}])
    with pytest.raises(ValueError, match="missing acc"):
        report.write_tts_sweep(tmp_path, [{"param": "m", "value": 1, "giou": 0.1}])


def test_sweep_error_bars_and_full_axis(tmp_path):
    rows = [
        {"param": "topk", "value": k, "giou": 0.7, "ciou": 0.72, "giou_ci": (0.65, 0.75), "ciou_ci": (0.66, 0.78)}
        for k in (12, 24)
    ]
    rows += [{"param": "grid", "value": 16, "giou": 0.7, "ciou": 0.72, "giou_ci": None, "ciou_ci": None}]
    _, png = report.write_tau_sweep(tmp_path, rows)
    assert png.stat().st_size > 1000
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    report._panel(ax, rows, "topk", (("giou", "gIoU"),), "k", "t")
    assert ax.get_ylim() == (0.0, 100.0)  # never zoomed onto a 0.1-point range
    assert "95 % CI" in ax.get_legend().get_texts()[0].get_text()
