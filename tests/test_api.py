"""The public API: names resolve lazily, and ``import sim4seg`` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sim4seg


@pytest.mark.parametrize("name", [n for n in sim4seg.__all__ if n != "__version__"])
def test_every_public_name_resolves_and_is_documented(name):
    obj = getattr(sim4seg, name)
    assert obj is not None
    if callable(obj):
        assert (obj.__doc__ or "").strip(), f"sim4seg.{name} has no docstring"


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sim4seg.nope  # noqa: B018


def test_import_loads_neither_torch_nor_transformers():
    code = "import sys, sim4seg; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_readme_example_runs(tmp_path):
    """The quick path of the module docstring, on the synthetic data (no model needed)."""
    sim4seg.synthesize(tmp_path, 20, seed=0, size_range=(32, 48))
    info, samples = sim4seg.load_split(tmp_path, "train")
    image = sim4seg.read_image(tmp_path / samples[0].image)
    assert image.ndim == 3 and image.shape[2] == 3 and samples[0].subset in info.subsets
