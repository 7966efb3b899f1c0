"""Typed dataclass configs from YAML / JSON / command-line options: one loader for every config.

A config is a (nested) dataclass whose fields carry type hints and one-line docstrings and
which validates itself in ``__post_init__``. ``from_dict`` builds one from plain data with
type coercion; ``load_yaml`` reads a file and applies ``key.sub=value`` overrides; any problem
(an unknown key, a value of the wrong type or range, bad YAML) is an ``InputError`` naming the
key and the file. ``add_options`` / ``from_options`` turn a flat dataclass into command-line
options and back, so a command never restates a config's fields by hand.

YAML is read with the 1.2 core schema for booleans: only ``true`` / ``false`` are booleans, so
``precision: no`` is the string ``"no"`` (YAML 1.1 would read it as ``false``); a boolean field
still accepts ``yes`` / ``no`` / ``on`` / ``off``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import reprlib
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sim4seg.errors import InputError

T = TypeVar("T")

_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")


class _Loader(yaml.SafeLoader):
    """SafeLoader whose booleans are YAML 1.2's: ``true`` / ``false`` only."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    """YAML text → plain data (safe loader, YAML 1.2 booleans)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_yaml(cls: type[T], path: str | os.PathLike, overrides: Iterable[str] = ()) -> T:
    """Read a YAML file into ``cls``, applying ``key.sub=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path)
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", path) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(
            f"invalid YAML: {getattr(e, 'problem', None) or e}", path, None if mark is None else mark.line + 1
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"expected a mapping of sections, got {type(raw).__name__}", path)
    for item in overrides:
        apply_override(cls, raw, item)
    return from_dict(cls, raw, source=path)


def from_dict(cls: type[T], raw: Any, source: str | os.PathLike | None = None) -> T:
    """Build and validate ``cls`` from plain data; any problem is an ``InputError`` naming the key and ``source``."""
    try:
        return _build(cls, raw, "")
    except InputError as e:
        raise InputError(e.problem, source) from None
    except (TypeError, ValueError) as e:
        raise InputError(str(e), source) from None


def to_dict(obj: Any) -> Any:
    """A dataclass → plain data (tuples as lists), for YAML / JSON."""
    return _plain(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj)


def apply_override(cls: type, raw: dict, item: str) -> None:
    """Set ``raw[a][b] = value`` for ``item`` = ``"a.b=value"``; the key path must exist in ``cls``."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--set expects key.sub=value, got {item!r}")
    parts = key.split(".")
    node_cls: Any = cls
    for i, part in enumerate(parts):
        if node_cls is None:  # inside a free-form mapping (e.g. data.mix): any key
            break
        hints = field_types(node_cls)
        if part not in hints:
            where = ".".join(parts[:i]) or "the top level"
            raise InputError(f"--set {key}: unknown key {part!r} in {where}; known: {', '.join(hints)}")
        tp = _strip_optional(hints[part])
        node_cls = tp if dataclasses.is_dataclass(tp) else None
        if node_cls is None and i < len(parts) - 1 and typing.get_origin(tp) is not dict:
            raise InputError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
    try:
        value = parse_yaml(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def field_types(cls) -> dict[str, Any]:
    """``{field name: resolved type}`` of a dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def field_docs(cls) -> dict[str, str]:
    """The one-line docstrings written under a dataclass's fields (and its bases')."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for a, b in zip(body, body[1:]):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


# ---------------------------------------------------------------------------- command-line options


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    choices: dict[str, Iterable[str]] | None = None,
) -> list[str]:
    """Add ``--field-name`` options for the scalar fields of the flat dataclass ``cls``; return their dests.

    Defaults and help come from the dataclass (its field docstrings); booleans become flags
    (``--x`` for a field defaulting to false, ``--no-x`` for one defaulting to true).
    """
    docs, dests = field_docs(cls), []
    choices = choices or {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or (only is not None and f.name not in only) or f.default is dataclasses.MISSING:
            continue
        tp = _strip_optional(field_types(cls)[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_ = docs.get(f.name, "").replace("``", "")
        if tp is bool:
            if f.default:
                parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", help=help_)
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", help=help_)
        elif tp in (int, float, str):
            parser.add_argument(
                flag,
                dest=f.name,
                type=tp,
                default=f.default,
                choices=choices.get(f.name),
                help=f"{help_} (default {f.default})".strip(),
            )
        else:
            continue
        dests.append(f.name)
    return dests


def add_override_option(parser: argparse.ArgumentParser, example: str, what: str = "recipe values") -> None:
    """``--set KEY=VALUE ...`` (repeatable) into ``overrides``: ``apply_override`` items for ``load_yaml``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help=f"override {what}, e.g. --set {example} (repeatable)",
    )


def from_options(cls: type[T], options: dict[str, Any], **extra: Any) -> T:
    """``cls(**options, **extra)`` (the fields present), validation errors as ``InputError``."""
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in options.items() if k in names}, **extra)
    except (TypeError, ValueError) as e:
        raise InputError(str(e)) from None


# ---------------------------------------------------------------------------- building


def _strip_optional(tp):
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _build(cls, raw: Any, prefix: str):
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise InputError(f"{prefix or 'the config'} must be a mapping, got {_show(raw)}")
    hints = field_types(cls)
    unknown = [k for k in raw if k not in hints]
    if unknown:
        where = prefix or "the top level"
        raise InputError(f"unknown key {_join(prefix, str(unknown[0]))!r} in {where}; known: {', '.join(hints)}")
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError) as e:
        msg = str(e)
        if prefix and not msg.startswith((prefix, prefix.rsplit(".", 1)[-1] + ".")):
            msg = f"{prefix}: {msg}"
        raise InputError(msg) from None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60


def _show(value: Any) -> str:
    """A bounded repr for messages: a YAML alias bomb shares one list a billion times over."""
    return _REPR.repr(value)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except InputError as e:
                errors.append(e)
        raise errors[-1] if errors else InputError(f"{key}: unexpected value {_show(value)}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise InputError(f"{key} must be true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InputError(f"{key} must be an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise InputError(f"{key} must be a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # JSON / YAML false for a string-valued switch (e.g. precision)
            return "true" if value else "false"
        raise InputError(f"{key} must be a string, got {_show(value)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key} must be a list, got {_show(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key} must be a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputError(f"{key} must have {len(args)} entries, got {_show(list(value))}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{key} must be a mapping, got {_show(value)}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    return value


def _plain(obj: Any) -> Any:
    """Tuples → lists, recursively (for YAML)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
