"""Regression tests of issue 13: a tampered or truncated training state is refused with the file named;
``device="cuda"`` without CUDA is a clear error."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest
import torch

from sim4seg.errors import InputError

_spec = importlib.util.spec_from_file_location("_test_train", Path(__file__).with_name("test_train.py"))
_tt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tt)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    _tt.run_toy(out, train={"keep_last": 1})
    return out


def _fresh_resume(finished: Path, tmp_path: Path, damage) -> Path:
    import shutil

    ckpt = sorted(finished.glob("checkpoint-*"))[-1]
    copy = tmp_path / ckpt.name
    shutil.copytree(ckpt, copy)
    target = copy / "optimizer.bin"
    assert target.is_file(), sorted(p.name for p in copy.iterdir())
    damage(target)
    return copy


@pytest.mark.parametrize("how", ["truncated", "pickle"])
def test_damaged_state_is_refused_naming_the_file(finished, tmp_path, how, capsys):
    def damage(p: Path) -> None:
        if how == "truncated":
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        else:
            with open(p, "wb") as f:
                pickle.dump({"state": _Evil()}, f)

    ckpt = _fresh_resume(finished, tmp_path, damage)
    with pytest.raises(InputError) as e:
        _tt.run_toy(tmp_path / "new", resume=str(ckpt), train={"keep_last": 1})
    msg = str(e.value)
    assert msg.startswith(str(ckpt / "optimizer.bin")) and "refused to load this training state" in msg
    assert "this must never run" not in capsys.readouterr().out


def test_cuda_without_cuda_is_a_clear_error(tmp_path, monkeypatch):
    from sim4seg._device import check_device
    from sim4seg.infer.predictor import load_model
    from sim4seg.model import checkpoint

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=r"device 'cuda' was requested but CUDA is not available"):
        check_device("cuda")
    with pytest.raises(InputError, match="CUDA is not available"):
        load_model(tmp_path, device="cuda")
    with pytest.raises(InputError, match="CUDA is not available"):
        checkpoint.load(tmp_path, device="cuda:0")
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        check_device("gpu0")
    assert check_device("cpu") == torch.device("cpu")
