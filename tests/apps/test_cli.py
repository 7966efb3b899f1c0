"""The command table: every subcommand's options are exactly its handler's parameters."""

from __future__ import annotations

import argparse
import inspect

import pytest

from sim4seg.apps import cli


def _leaves(parser: argparse.ArgumentParser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
        return
    for name, p in subs[0].choices.items():
        yield from _leaves(p, path + (name,))


LEAVES = dict(_leaves(cli.build_parser()))


def test_the_table_has_every_command():
    assert {
        "data synth",
        "data build",
        "data verify",
        "cot generate",
        "model presets",
        "convert lisa",
        "train",
        "predict",
        "evaluate",
        "sweep tau",
        "sweep tts",
        "sweep seeds",
        "demo",
        "serve",
        "paper",
        "model info",
        "data import",
    } <= set(LEAVES)


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_options_are_the_handlers_parameters(command):
    parser = LEAVES[command]
    handler = parser.get_default("handler")
    assert handler is not None, f"{command} sets no handler"
    assert (handler.__doc__ or "").strip(), f"{command}: the handler has no docstring (it is the help text)"
    dests = {a.dest for a in parser._actions if a.dest not in ("help", "handler") and a.default != argparse.SUPPRESS}
    dests |= set(parser._defaults) - {"handler"}  # fixed values a subcommand sets (e.g. sweep's kind)
    params = inspect.signature(handler).parameters
    assert dests == set(params), (
        f"{command}: options {sorted(dests - set(params))} have no parameter, "
        f"parameters {sorted(set(params) - dests)} have no option"
    )


def test_a_mismatch_is_reported_not_dropped():
    def handler(a: int) -> int:
        """A handler."""
        return a

    with pytest.raises(TypeError, match=r"options without a parameter \['b'\]"):
        cli.run(handler, argparse.Namespace(a=1, b=2, handler=handler, verbose=False, command="x"))
    with pytest.raises(TypeError, match=r"parameters without an option \['a'\]"):
        cli.run(handler, argparse.Namespace(handler=handler, verbose=False, command="x"))
    assert cli.run(handler, argparse.Namespace(a=3, handler=handler, verbose=False, command="x")) == 3
