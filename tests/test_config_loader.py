"""The shared typed config loader: YAML 1.2 booleans, coercion, and options generated from dataclasses."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from sim4seg._config import add_options, from_dict, from_options, parse_yaml
from sim4seg.errors import InputError


@dataclass
class Knobs:
    rate: float = 0.5
    """How fast it goes."""
    steps: int = 3
    """How many ``steps``."""
    mode: str = "fast"
    """``fast`` or ``slow``."""
    verbose: bool = False
    """Say more."""
    strict: bool = True
    """Refuse odd input."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def test_yaml_12_booleans():
    assert parse_yaml("a: no\nb: yes\nc: off\nd: false\ne: True") == {
        "a": "no",
        "b": "yes",
        "c": "off",
        "d": False,
        "e": True,
    }


def test_options_come_from_the_dataclass():
    p = argparse.ArgumentParser()
    dests = add_options(p, Knobs, choices={"mode": ["fast", "slow"]})
    assert dests == ["rate", "steps", "mode", "verbose", "strict"]
    ns = vars(p.parse_args(["--rate", "2", "--steps", "5", "--mode", "slow", "--verbose", "--no-strict"]))
    assert from_options(Knobs, ns) == Knobs(2.0, 5, "slow", True, False)
    assert from_options(Knobs, vars(p.parse_args([]))) == Knobs()
    help_text = p.format_help()
    assert "How many steps. (default 3)" in help_text and "``" not in help_text
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "medium"])
    with pytest.raises(InputError, match="steps must be >= 1"):
        from_options(Knobs, {"steps": 0})


def test_from_dict_coerces_and_names_the_key():
    assert from_dict(Knobs, {"rate": "1e-3", "verbose": "yes"}) == Knobs(rate=1e-3, verbose=True)
    with pytest.raises(InputError, match="unknown key 'speed' in the top level; known: rate, steps"):
        from_dict(Knobs, {"speed": 1})
    with pytest.raises(InputError, match="steps must be an integer"):
        from_dict(Knobs, {"steps": 1.5})
