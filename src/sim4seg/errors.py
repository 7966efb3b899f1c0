"""Errors a user can act on. The CLI prints their message and exits non-zero."""

from __future__ import annotations

import os


class Sim4SegError(Exception):
    """Base class: the message names the file (and line) and the problem."""


class InputError(Sim4SegError, ValueError):
    """Bad input from the user: a file, a flag or a config value."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.problem = problem
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(where + problem)


class ImageReadError(InputError):
    """An image or mask that cannot be read (missing, corrupt, empty, too large)."""


class ManifestError(InputError):
    """A manifest (``*.jsonl`` / ``dataset_info.json``) that is malformed or inconsistent."""
