"""``scripts/docs_figures.py`` (``make docs-figures``): the docs quote the demo's results.md, pasted, not typed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "scripts" / "docs_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RESULTS = """Table 2 layout — overall (%):

| Method | gIoU | cIoU | Acc |
|---|---:|---:|---:|
| baseline: empty mask | 5.08 | 0.00 | - |
| Sim4Seg | 70.79 | 73.49 | 90.68 |

| Method | Dice | n | unparseable answers |
|---|---:|---:|---:|
| Sim4Seg | 80.00 | 118 | 0 |

Table 3 layout — per subset (%):

| Method | | BUSI | Avg. |
|---|---|---:|---:|
| Sim4Seg | gIoU | 70.79 | 70.79 |

Sim4Seg (RVLS2M, greedy) on the synthetic test split: gIoU 70.79%, cIoU 73.49%, Acc 90.68% — bar gIoU 50% and Acc 80%: LEARNED
"""


def test_regions_are_pasted_from_results_md(tmp_path):
    mod = load()
    summary = {
        "timings": {"total_s": 150.0},
        "environment": {"threads": 1, "processes": 2, "cpus": 2, "loadavg_start": [3.0, 2, 1], "torch": "2.x"},
    }
    readme = mod.region("README.md", RESULTS, summary)
    assert "1 intra-op thread(s) in each of 2 processes" in readme
    assert "| Sim4Seg | 70.79 | 73.49 | 90.68 |" in readme and "Table 3" not in readme
    assert readme.rstrip().endswith("LEARNED\n" + mod.END) and "load average 3.0" in readme
    inference = mod.region("docs/inference.md", RESULTS, summary)
    assert "| Sim4Seg | gIoU | 70.79 | 70.79 |" in inference and "timings: total_s 150.0s" in inference
    doc = tmp_path / "d.md"
    text = f"before\n{mod.START}\nold figures\n{mod.END}\nafter\n"
    new = mod.rewrite(text, readme, doc)
    assert new.startswith("before\n") and new.endswith("\nafter\n") and "old figures" not in new
    assert mod.rewrite(new, readme, doc) == new  # idempotent


def test_cli_check_and_errors(tmp_path, capsys):
    mod = load()
    assert mod.main([str(tmp_path / "none")]) == 2
    assert "run `make demo`" in capsys.readouterr().err
    (tmp_path / "results.md").write_text(RESULTS)
    (tmp_path / "summary.json").write_text(json.dumps({"timings": {"total_s": 1.0}}))
    before = {d: (ROOT / d).read_text() for d in mod.DOCS}
    rc = mod.main([str(tmp_path), "--check"])  # these made-up figures are not what the docs quote
    assert rc == 1 and "differ from the demo output" in capsys.readouterr().out
    assert {d: (ROOT / d).read_text() for d in mod.DOCS} == before  # --check writes nothing


def test_docs_have_one_region_and_name_only_files_that_exist():
    mod = load()
    for doc in mod.DOCS:
        text = (ROOT / doc).read_text()
        assert text.count(mod.START) == text.count(mod.END) == 1, doc
    readme = (ROOT / "README.md").read_text()
    assert "ARCHITECTURE.md" not in readme
    assert "docs-figures:" in (ROOT / "Makefile").read_text()
