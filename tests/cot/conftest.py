"""Fixtures for the cot tests: a small synthetic M3DS."""

from __future__ import annotations

import shutil

import pytest

from cot_helpers import SUBSETS  # noqa: E402
from sim4seg.data.schema import read_split  # noqa: E402
from sim4seg.data.synthetic import synthesize  # noqa: E402


@pytest.fixture(scope="session")
def _manifest_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("m3ds-template")
    synthesize(root, 40, 0, subsets=SUBSETS, size_range=(48, 64))
    return root


@pytest.fixture
def manifest(_manifest_template, tmp_path):
    """A fresh copy of a 40-sample synthetic M3DS (its ``train`` split has ``len(read_split(...))`` samples)."""
    root = tmp_path / "m3ds"
    shutil.copytree(_manifest_template, root)
    return root


@pytest.fixture
def train(manifest):
    return read_split(manifest, "train")
