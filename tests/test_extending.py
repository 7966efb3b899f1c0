"""docs/extending.md's examples run as written, and what they register works end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8").split("## Adding a backbone")[0]  # backbones: tests/model/test_backbones.py
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture
def registered():
    """Run the doc's code blocks; undo their registrations afterwards."""
    from sim4seg.data.sources import SOURCES
    from sim4seg.data.subsets import SUBSETS
    from sim4seg.eval.metrics import MASK_METRICS
    from sim4seg.infer.tts import SELECTORS

    before = {id(r): dict(r) for r in (SOURCES, SUBSETS, MASK_METRICS, SELECTORS)}
    namespace: dict = {}
    for code in _blocks():
        exec(compile(code, str(DOC), "exec"), namespace)
    yield namespace
    for r in (SOURCES, SUBSETS, MASK_METRICS, SELECTORS):
        r.clear()
        r.update(before[id(r)])


def test_the_doc_has_the_four_examples():
    assert len(_blocks()) == 3
    text = DOC.read_text(encoding="utf-8")
    for heading in (
        "Adding a dataset source",
        "Adding a test-time-scaling selector",
        "Adding a metric",
        "Adding a backbone",
    ):
        assert f"## {heading}" in text


def _wound_tree(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, n in (("infected", 5), ("clean", 4)):
        (root / "wounds" / label).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / "wounds" / label / f"case{i}.png")
            mask = np.zeros((24, 32), np.uint8)
            mask[4:12, 6:20] = 255
            if i != 3:  # case3 has no mask: reported, not dropped silently
                Image.fromarray(mask).save(root / "wounds" / label / f"case{i}_mask.png")


def test_a_new_source_builds_verifies_and_reports(registered, tmp_path):
    from sim4seg.data.build import build
    from sim4seg.data.verify import verify
    from sim4seg.eval.report import subset_columns

    _wound_tree(tmp_path / "src")
    out = tmp_path / "m3ds"
    report = build(out, {"wounds": tmp_path / "src"}, workers=1, progress=False)
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["subsets"]["wounds"]["short"] == "WND" and info["subsets"]["wounds"]["labels"] == ["infected", "clean"]
    rows = [
        json.loads(line) for s in ("train", "val", "test") for line in (out / f"{s}.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 7 and {r["diagnosis"] for r in rows} == {"infected", "clean"}
    assert "case3" in json.dumps(report["sources"]["wounds"]) and "no mask" in json.dumps(report["sources"]["wounds"])
    checked, problems = verify(out)
    assert checked == 7 and not problems
    assert ("wounds", "WND") in subset_columns(
        [("m", {"per_subset": {"wounds": {}}})], {"wounds": registered["wounds"].SUBSET_INFO}
    )


def test_a_new_selector_and_metric_are_used(registered):
    from sim4seg.eval.metrics import MetricAccumulator
    from sim4seg.infer.tts import select

    c = np.zeros((3, 4, 4), bool)
    c[1, :1] = True
    c[2, :3] = True
    mask, i = select("largest", c)
    assert i == 2 and int(mask.sum()) == 12 and registered["config"].selector == "largest"
    acc = MetricAccumulator()
    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    acc.add_masks("wounds", c[1], gt)  # 4 of 8 ground-truth pixels found
    assert acc.summary()["overall"]["recall"] == pytest.approx(0.5)
