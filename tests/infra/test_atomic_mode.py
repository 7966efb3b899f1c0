"""Regression test of issue 13: files written atomically respect the umask (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import numpy as np

from sim4seg._atomic import write_json
from sim4seg.data.io import write_mask


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_mask(tmp_path / "m.png", np.zeros((4, 4), bool))
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        assert _mode(tmp_path / "a.json") == _mode(tmp_path / "plain.txt") == 0o644
        assert _mode(tmp_path / "m.png") == 0o644
        os.umask(0o002)
        write_json(tmp_path / "b.json", {})
        assert _mode(tmp_path / "b.json") == 0o664
        os.umask(0o077)
        write_json(tmp_path / "c.json", {})
        assert _mode(tmp_path / "c.json") == 0o600
    finally:
        os.umask(old)
