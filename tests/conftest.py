"""Shared fixtures: a small synthetic M3DS built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def synth_m3ds(tmp_path_factory):
    """A 60-sample synthetic M3DS (all ten subsets). Treat as read-only; copy before damaging."""
    from sim4seg.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("m3ds")
    synthesize(root, 60, seed=3, size_range=(48, 80))
    return root
