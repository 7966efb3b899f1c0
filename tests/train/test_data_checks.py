"""The data is checked before the model is built: a 7B run must not load 14 GB to learn its manifest is bad."""

from __future__ import annotations

import shutil

import pytest

from sim4seg.errors import InputError
from sim4seg.train import task
from sim4seg.train.loop import train
from sim4seg.train.recipe import config_from_dict


@pytest.fixture
def no_model(monkeypatch):
    def refuse(config):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(task, "build_model", refuse)


def cfg(tmp_path, manifest, **data):
    return config_from_dict(
        {
            "model": {"preset": "tiny"},
            "data": {"manifest": str(manifest), **data},
            "train": {"output_dir": str(tmp_path / "run"), "progress": False},
        }
    )


def test_a_missing_manifest_fails_before_the_model_is_built(tmp_path, no_model):
    with pytest.raises(InputError, match="dataset_info.json not found"):
        train(cfg(tmp_path, tmp_path / "nowhere"))


def test_missing_cot_answers_fail_before_the_model_is_built(synth_m3ds, tmp_path, no_model):
    with pytest.raises(InputError, match=r"sample\(s\) have no 'cot' answer .*sim4seg cot generate"):
        train(cfg(tmp_path, synth_m3ds, answer_format="cot"))


def test_an_empty_split_fails_before_the_model_is_built(synth_m3ds, tmp_path, no_model):
    root = tmp_path / "m3ds"
    shutil.copytree(synth_m3ds, root)
    (root / "train.jsonl").write_text("")
    with pytest.raises(InputError, match="'train' split has no samples"):
        train(cfg(tmp_path, root))


def test_unknown_subsets_are_an_error_listing_what_exists(synth_m3ds, tmp_path, no_model):
    with pytest.raises(InputError, match=r"\['my_subset'\] of data.subsets are not in this manifest; it has: .*busi"):
        train(cfg(tmp_path, synth_m3ds, subsets=["busi", "my_subset"]))


def test_mix_must_name_trained_subsets(synth_m3ds, tmp_path, no_model):
    with pytest.raises(InputError, match=r"data.mix names subset\(s\) with no training samples: \['kvasir_seg'\]"):
        train(cfg(tmp_path, synth_m3ds, subsets=["busi"], mix={"busi": 1.0, "kvasir_seg": 1.0}))


def test_subsets_present_but_not_listed_are_named_in_a_warning(synth_m3ds, tmp_path, caplog):
    from sim4seg.data.schema import read_split

    train_all = read_split(synth_m3ds, "train")
    others = sorted({s.subset for s in train_all} - {"busi"})
    with caplog.at_level("WARNING", logger="sim4seg.data.dataset"):
        checked = task.check_data(cfg(tmp_path, synth_m3ds, subsets=["busi"]))
    assert checked.train and {s.subset for s in checked.train} == {"busi"}
    msg = next(r.getMessage() for r in caplog.records if "left out" in r.getMessage())
    n_left = sum(s.subset != "busi" for s in train_all)
    assert f"{n_left} of {len(train_all)} sample(s) left out" in msg
    assert all(o in msg for o in others)
