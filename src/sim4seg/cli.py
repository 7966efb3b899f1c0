"""The ``sim4seg`` command: one entry point, subcommands mapped to typed functions.

Each sub-package contributes its subcommands through a ``commands.py`` module with a
``register(subparsers)`` function; every subcommand's handler is a plain function that
takes the parsed arguments as keywords and returns an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from sim4seg import __version__
from sim4seg.errors import Sim4SegError

# Sub-packages listed first in the help; any other sub-package with a ``commands``
# module is added after them, alphabetically.
HELP_ORDER = ("data", "cot", "model", "engine", "eval")


def command_modules() -> list[str]:
    """``sim4seg.<pkg>.commands`` (and ``commands_*``) for every sub-package that has them."""
    import pkgutil
    from pathlib import Path

    root = Path(__file__).parent
    pkgs = [m.name for m in pkgutil.iter_modules([str(root)]) if m.ispkg]
    pkgs.sort(key=lambda p: (HELP_ORDER.index(p) if p in HELP_ORDER else len(HELP_ORDER), p))
    return [f"sim4seg.{p}.{f.stem}" for p in pkgs for f in sorted((root / p).glob("commands*.py"))]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sim4seg",
        description="Medical Diagnosis Segmentation with Sim4Seg: data, model, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"sim4seg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        importlib.import_module(name).register(sub)
    return parser


def run(handler, args: argparse.Namespace) -> int:
    """Call ``handler`` with the parsed arguments that are its parameters."""
    import inspect

    params = inspect.signature(handler).parameters
    kwargs = {k: v for k, v in vars(args).items() if k in params}
    return int(handler(**kwargs) or 0)


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
