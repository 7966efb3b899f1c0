"""The ``sim4seg`` command: one entry point, subcommands mapped to typed functions.

``COMMANDS`` is the command table: each module listed there adds its subcommands with a
``register(subparsers)`` function, and every subcommand's handler is a plain function whose
parameters are exactly the subcommand's options (a test checks each one); it returns an exit
status.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
from collections.abc import Sequence

from sim4seg._version import __version__
from sim4seg.errors import Sim4SegError

COMMANDS = (
    "sim4seg.data.commands",  # data synth | stats | verify | export | build
    "sim4seg.cot.commands",  # cot generate | apply | review-export | review-import
    "sim4seg.model.commands",  # model presets | merge, convert lisa | sam
    "sim4seg.train.commands",  # train
    "sim4seg.infer.commands",  # predict, sweep tau | tts, evaluate
    "sim4seg.apps.commands",  # demo
    "sim4seg.serve.commands",  # serve
    "sim4seg.paper.commands",  # paper table2..table6 | fig6 | fig7
)
"""The modules that contribute subcommands, in the order of ``sim4seg --help``."""

GLOBAL_OPTIONS = ("verbose",)
"""Options of ``sim4seg`` itself (not passed to handlers)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sim4seg",
        description="Medical Diagnosis Segmentation with Sim4Seg: data, model, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"sim4seg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def handler_kwargs(handler, args: argparse.Namespace) -> dict:
    """The parsed options as the handler's keyword arguments.

    Every option must be a parameter of the handler and every parameter without a default must
    be an option: a mismatch is a programming error, reported rather than silently dropped.
    """
    params = inspect.signature(handler).parameters
    options = {
        k: v
        for k, v in vars(args).items()
        if k not in GLOBAL_OPTIONS and k != "handler" and not (k == "command" or k.endswith("_command"))
    }
    extra = sorted(set(options) - set(params))
    missing = sorted(k for k, p in params.items() if k not in options and p.default is inspect.Parameter.empty)
    if extra or missing:
        raise TypeError(
            f"{handler.__module__}.{handler.__name__}: options without a parameter {extra}, "
            f"parameters without an option {missing}"
        )
    return options


def run(handler, args: argparse.Namespace) -> int:
    """Call ``handler`` with the parsed options."""
    return int(handler(**handler_kwargs(handler, args)) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return run(args.handler, args)
    except Sim4SegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
