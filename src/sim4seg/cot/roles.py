"""The two roles' prompts: text files a user can copy, edit and point ``--prompts`` at.

A prompt directory holds five files (the package ships defaults in ``cot/prompts/``):

=====================  ==========================================================
``medical_system.txt``  system message of the medical assistant
``medical.txt``         first request to the medical assistant
``revision.txt``        request after a rejection (adds ``{previous}``, ``{feedback}``)
``critic_system.txt``   system message of the critical assistant
``critic.txt``          review request (adds ``{chain}``)
=====================  ==========================================================

Placeholders are Python ``str.format`` fields: ``{question}``, ``{diagnosis}``,
``{modality}``, ``{subset}`` everywhere, plus the per-file ones above. Write ``{{`` and
``}}`` for literal braces. A file missing from a user directory falls back to the
default; an unknown placeholder is an ``InputError`` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sim4seg.errors import InputError

COMMON_FIELDS = frozenset({"question", "diagnosis", "modality", "subset"})
PROMPT_FIELDS: dict[str, frozenset[str]] = {
    "medical_system": COMMON_FIELDS,
    "medical": COMMON_FIELDS,
    "revision": COMMON_FIELDS | {"previous", "feedback"},
    "critic_system": COMMON_FIELDS,
    "critic": COMMON_FIELDS | {"chain"},
}


def default_prompt_dir() -> Path:
    """The directory of the prompts shipped with the package."""
    return Path(str(resources.files("sim4seg.cot") / "prompts"))


def _fields(template: str, path: Path) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise InputError(f"invalid placeholder syntax ({e}); write {{{{ and }}}} for literal braces", path) from None


@dataclass(frozen=True)
class Prompts:
    """The five templates, by name (see the module docstring)."""

    templates: dict[str, str]
    sources: dict[str, str]
    """Where each template was read from (for the run record)."""

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None) -> Prompts:
        """Read the templates from ``directory`` (default: the package's); validate placeholders."""
        default = default_prompt_dir()
        user = None if directory is None else Path(directory)
        if user is not None and not user.is_dir():
            raise InputError("prompt directory not found", user)
        templates, sources = {}, {}
        for name, allowed in PROMPT_FIELDS.items():
            path = default / f"{name}.txt"
            if user is not None and (user / f"{name}.txt").is_file():
                path = user / f"{name}.txt"
            text = path.read_text(encoding="utf-8").strip()
            if not text:
                raise InputError("prompt file is empty", path)
            fields = _fields(text, path)
            unknown = sorted(f for f in fields if f not in allowed)
            if unknown:
                raise InputError(f"unknown placeholder(s) {unknown}; allowed here: {sorted(allowed)}", path)
            templates[name], sources[name] = text, str(path)
        return cls(templates, sources)

    def render(self, name: str, **values: str) -> str:
        return self.templates[name].format(**values)

    def digest(self) -> str:
        """A short hash of all templates: recorded with each result to tell prompt versions apart."""
        h = hashlib.sha256()
        for name in sorted(self.templates):
            h.update(name.encode() + b"\0" + self.templates[name].encode() + b"\0")
        return h.hexdigest()[:12]


def copy_defaults(out: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Copy the default prompt files into ``out`` for editing; return the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PROMPT_FIELDS:
        dst = out / f"{name}.txt"
        if dst.exists() and not overwrite:
            raise InputError("file exists (use --overwrite to replace it)", dst)
        dst.write_text((default_prompt_dir() / f"{name}.txt").read_text(encoding="utf-8"), encoding="utf-8")
        written.append(dst)
    return written
