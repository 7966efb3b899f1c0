"""The model CLI: convert sam, merge, presets, and clear errors."""

from __future__ import annotations

import torch

from sim4seg.apps.cli import main
from sim4seg.model import checkpoint


def test_cli_convert_sam_merge_and_errors(tiny, tmp_path, capsys, official_sam_state_dict):
    model, processor = tiny
    torch.save(official_sam_state_dict(model.sam), tmp_path / "sam.pth")
    model.sam.config.save_pretrained(tmp_path / "base")
    assert (
        main(["convert", "sam", str(tmp_path / "sam.pth"), str(tmp_path / "hf"), "--base", str(tmp_path / "base")]) == 0
    )
    assert (tmp_path / "hf" / "config.json").is_file()
    checkpoint.save(model, processor, tmp_path / "ckpt")
    assert main(["model", "merge", str(tmp_path / "ckpt"), str(tmp_path / "merged")]) == 0
    assert main(["model", "merge", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2
    assert "not a Sim4Seg checkpoint" in capsys.readouterr().err
    assert main(["model", "presets"]) == 0
    assert "lisa-7b" in capsys.readouterr().out
