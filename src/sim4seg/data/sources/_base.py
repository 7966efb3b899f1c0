"""What a source converter produces: work items, skips and a scan result.

A converter's ``scan(root, seed)`` reads only the annotation files and directory
listings (no image is decoded) and returns a ``Scan``: one ``Item`` per sample to
write, with its label, its split where already decided, and how its mask is made.
The builder then decodes images and rasterizes masks in worker processes
(``sources._convert``). Everything here is plain data so items pickle cheaply.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sim4seg.data.io import IMAGE_SUFFIXES
from sim4seg.errors import InputError

MASK_KINDS = ("polygon", "box", "pixel", "empty")


@dataclass
class Item:
    """One sample to convert.

    Exactly one of ``polygons`` / ``boxes`` / ``mask_files`` is used, following
    ``mask_from``; ``empty`` means a no-finding image (all-zero mask).
    """

    subset: str
    key: str
    """Unique within the subset; the sample id is ``<subset>-<key>``."""
    label: str
    """Canonical label from ``SUBSETS[subset].labels``."""
    image: str
    """Absolute path of the source image."""
    files: list[str] = field(default_factory=list)
    """Source files used (image, mask, annotation), relative to the source root."""
    mask_from: str = "empty"
    polygons: list[list[float]] = field(default_factory=list)
    """Flat ``[x1, y1, x2, y2, ...]`` per instance, in ``coords`` units."""
    boxes: list[list[float]] = field(default_factory=list)
    """``[x0, y0, x1, y1]`` per instance, in ``coords`` units."""
    mask_files: list[str] = field(default_factory=list)
    """Absolute paths of mask images, OR-ed."""
    coords: str = "pixel"
    """``pixel`` (absolute, image frame) or ``normalized`` (0..1 of the displayed width/height)."""
    ann_ids: list[str] = field(default_factory=list)
    """One id per polygon/box/mask file (COCO id, ``file:line``, ...)."""
    ann_size: tuple[int, int] | None = None
    """``(W, H)`` the annotation file states for the image (COCO), used to detect the EXIF frame."""
    split: str | None = None
    group: str = ""
    """Items sharing a group always land in one split (default: the key)."""

    def __post_init__(self) -> None:
        if self.mask_from not in MASK_KINDS:
            raise ValueError(f"mask_from must be one of {MASK_KINDS}, got {self.mask_from!r}")
        if not self.group:
            self.group = self.key

    @property
    def sample_id(self) -> str:
        return f"{self.subset}-{self.key}"

    def fingerprint(self) -> str:
        """Hash of everything that decides the written files (not the split)."""
        d = asdict(self)
        d.pop("split")
        d.pop("group")
        d["writer"] = 2  # 2: images re-encoded as PNG (1 linked or copied them)
        for p in [self.image, *self.mask_files]:
            try:
                st = Path(p).stat()
                d.setdefault("stat", []).append([st.st_size, st.st_mtime_ns])
            except OSError:
                d.setdefault("stat", []).append(None)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Skip:
    """A file (or annotation) left out, and why."""

    file: str
    reason: str

    def to_json(self) -> dict:
        return {"file": self.file, "reason": self.reason}


@dataclass
class Scan:
    items: list[Item] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    """Bad input: counted as a problem (the build exits 1)."""
    excluded: list[Skip] = field(default_factory=list)
    """Left out by design (documented per dataset in docs/sources.md); not a problem."""

    def skip(self, file: str | Path, reason: str) -> None:
        self.skipped.append(Skip(str(file), reason))

    def exclude(self, file: str | Path, reason: str) -> None:
        self.excluded.append(Skip(str(file), reason))


_SLUG = re.compile(r"[^A-Za-z0-9.-]+")


def slug(text: str) -> str:
    """A file-name-safe key: ``benign (1)`` → ``benign_1``."""
    out = _SLUG.sub("_", text).strip("_.")
    return out or hashlib.sha1(text.encode()).hexdigest()[:8]


def rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image(p))


def numeric_key(path: Path) -> tuple:
    """Sort ``2.jpg`` before ``10.jpg``; non-numeric stems after, by name."""
    stem = path.stem
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)


def require(root: Path, *rels: str, what: str = "") -> None:
    """Raise ``InputError`` listing every expected path under ``root`` that is missing."""
    missing = [r for r in rels if not (root / r).exists()]
    if missing:
        listing = ", ".join(repr(m) for m in missing)
        raise InputError(f"{what + ': ' if what else ''}expected {listing} under this folder; not found", root)


def find_root(path: str | Path, markers: tuple[str, ...], wrappers: tuple[str, ...] = (), what: str = "") -> Path:
    """The folder holding all ``markers``: ``path`` itself, ``path/<wrapper>`` or its only such child."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{what + ': ' if what else ''}source folder not found", path)
    candidates = [path] + [path / w for w in wrappers] + sorted(p for p in path.iterdir() if p.is_dir())
    for c in candidates:
        if c.is_dir() and all((c / m).exists() for m in markers):
            return c
    require(path, *markers, what=what)
    return path  # unreachable: require raised


def read_csv_rows(path: Path) -> list[list[str]]:
    """Rows of a CSV file, with or without a UTF-8 byte-order mark; blank rows dropped."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text: {e}", path) from None
    return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]


def read_json(path: Path):
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"invalid JSON: {e}", path) from None
