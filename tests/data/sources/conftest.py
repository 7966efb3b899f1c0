"""Fixtures for the source-converter tests: the fixture-tree writers and a one-source build."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest


def load_trees():
    name = "sim4seg_test_source_trees"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("trees.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def trees():
    return load_trees()


class Built:
    """A one-source build: its report, samples by id and a mask reader."""

    def __init__(self, out: Path, report: dict):
        from sim4seg.data.schema import iter_split, read_info

        self.out, self.report = out, report
        info = read_info(out)
        self.samples = {s.id: s for split in ("train", "val", "test") for s in iter_split(out, split, info)}
        self.source = next(iter(report["sources"].values()))

    def mask(self, sid: str) -> np.ndarray:
        from sim4seg.data.io import read_mask

        return read_mask(self.out / self.samples[sid].mask)

    def image_hw(self, sid: str) -> tuple[int, int]:
        from sim4seg.data.io import read_image

        return read_image(self.out / self.samples[sid].image).shape[:2]

    def skipped(self) -> dict[str, str]:
        return {s["file"]: s["reason"] for s in self.source["skipped"]}

    def splits(self) -> dict[str, str]:
        return {sid: s.split for sid, s in self.samples.items()}


@pytest.fixture
def build_one(tmp_path, trees):
    """``build_one(name)`` → ``Built`` for that source's fixture tree (one worker)."""
    from sim4seg.data.build import build

    def run(name: str, **kwargs) -> Built:
        src = trees.WRITERS[name](tmp_path / "src" / name)
        out = tmp_path / "out" / name
        return Built(out, build(out, {name: src}, workers=1, seed=0, **kwargs))

    return run
