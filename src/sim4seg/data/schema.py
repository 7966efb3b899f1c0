"""The M3DS sample record and the manifest on disk.

A built dataset is a directory::

    DIR/dataset_info.json     schema version, label sets per subset, counts, build settings
    DIR/train.jsonl           one Sample per line (likewise val.jsonl, test.jsonl)
    DIR/<image and mask files, at the paths the records name, relative to DIR>

A mask is a single-channel PNG of 0/255 with the size of the image *as displayed*
(EXIF orientation applied). Reading validates every record; a bad one raises a
``ManifestError`` naming the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sim4seg._atomic import atomic_open, write_json
from sim4seg.data.prompts import SEG_TOKEN
from sim4seg.data.subsets import MODALITIES, SPLITS, SUBSETS, SubsetInfo
from sim4seg.errors import InputError, ManifestError

SCHEMA_VERSION = "1.0"
INFO_FILE = "dataset_info.json"
MASK_SOURCES = ("polygon", "pixel", "box", "empty", "synthetic")
ANSWER_FORMATS = ("plain", "diagnosis", "cot")


@dataclass
class Source:
    """Where a sample came from."""

    dataset: str
    """Source dataset name (a converter key such as ``fracatlas``, or ``synthetic``)."""
    files: list[str] = field(default_factory=list)
    """Original file names (image, mask, annotation files), relative to the source root."""
    annotation_ids: list[str] = field(default_factory=list)
    """Ids of the annotations OR-ed into the mask (COCO ids, label-file lines, ...)."""
    mask_from: str = "pixel"
    """``polygon``, ``pixel`` (a mask image), ``box``, ``empty`` (no finding) or ``synthetic``."""
    instances: int = 1
    """How many instances were OR-ed into the mask (0 for an empty mask)."""
    original_size: list[int] | None = None
    """``[H, W]`` of the source image as displayed when the stored image (and mask) were downscaled
    (``data build --max-side``); absent when stored at their own size. Scale a predicted mask back
    with nearest-neighbour interpolation to this size."""

    def validate(self) -> None:
        if self.mask_from not in MASK_SOURCES:
            raise ValueError(f"source.mask_from must be one of {MASK_SOURCES}, got {self.mask_from!r}")
        if not isinstance(self.instances, int) or self.instances < 0:
            raise ValueError(f"source.instances must be an integer >= 0, got {self.instances!r}")
        for name in ("files", "annotation_ids"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"source.{name} must be a list of strings")
        size = self.original_size
        if size is not None and (
            not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)
        ):
            raise ValueError(f"source.original_size must be [H, W] (positive integers) or absent, got {size!r}")


@dataclass
class Answers:
    """The paper's three answer formats (Table 3): plain, with diagnosis, with CoT."""

    plain: str
    """``It is [SEG].``"""
    diagnosis: str
    """``It is [SEG].`` + the diagnosis, ending in ``Diagnosis: <label>.``"""
    cot: str = ""
    """``It is [SEG].`` + the diagnosis chain of thought, ending in ``Diagnosis: <label>.``; empty until generated."""

    def get(self, fmt: str) -> str:
        if fmt not in ANSWER_FORMATS:
            raise ValueError(f"answer format must be one of {ANSWER_FORMATS}, got {fmt!r}")
        return getattr(self, fmt)


@dataclass
class Sample:
    """One M3DS record: an image, a query, a mask and a diagnosis."""

    id: str
    subset: str
    modality: str
    split: str
    image: str
    """Image path relative to the dataset root."""
    mask: str
    """Mask path (single-channel 0/255 PNG) relative to the dataset root."""
    query: str
    diagnosis: str
    """A canonical label from the subset's label set."""
    answers: Answers
    cot: str = ""
    """The diagnosis chain of thought; empty until generated (see ``sim4seg cot``)."""
    source: Source = field(default_factory=lambda: Source(dataset="unknown"))

    def to_json(self) -> dict:
        d = asdict(self)
        if d["source"]["original_size"] is None:  # records of full-size images read as before
            del d["source"]["original_size"]
        return d

    @classmethod
    def from_json(cls, d: dict, subsets: dict[str, SubsetInfo] | None = None) -> Sample:
        """Build and validate a record; raise ``ValueError`` describing the first problem."""
        if not isinstance(d, dict):
            raise ValueError(f"a record must be a JSON object, got {type(d).__name__}")
        required = ("id", "subset", "modality", "split", "image", "mask", "query", "diagnosis", "answers", "source")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        unknown = sorted(set(d) - set(required) - {"cot"})
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        for k in ("id", "subset", "modality", "split", "image", "mask", "query", "diagnosis"):
            if not isinstance(d[k], str) or not d[k]:
                raise ValueError(f"field {k!r} must be a non-empty string")
        if not isinstance(d.get("cot", ""), str):
            raise ValueError("field 'cot' must be a string")
        answers, source = d["answers"], d["source"]
        if not isinstance(answers, dict) or not {"plain", "diagnosis"} <= set(answers):
            raise ValueError("field 'answers' must be an object with 'plain', 'diagnosis' and 'cot'")
        if set(answers) - set(ANSWER_FORMATS) or not all(isinstance(v, str) for v in answers.values()):
            raise ValueError(f"field 'answers' may only hold strings under {ANSWER_FORMATS}")
        if not isinstance(source, dict) or "dataset" not in source:
            raise ValueError("field 'source' must be an object with at least 'dataset'")
        try:
            src = Source(**source)
        except TypeError as e:
            raise ValueError(f"field 'source': {e}") from None
        src.validate()
        sample = cls(
            id=d["id"],
            subset=d["subset"],
            modality=d["modality"],
            split=d["split"],
            image=d["image"],
            mask=d["mask"],
            query=d["query"],
            diagnosis=d["diagnosis"],
            answers=Answers(**answers),
            cot=d.get("cot", ""),
            source=src,
        )
        sample.validate(subsets)
        return sample

    def validate(self, subsets: dict[str, SubsetInfo] | None = None) -> None:
        """Check field values against the label sets (``subsets``; default: the paper's)."""
        subsets = SUBSETS if subsets is None else subsets
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {tuple(MODALITIES)}, got {self.modality!r}")
        info = subsets.get(self.subset)
        if info is None:
            raise ValueError(f"unknown subset {self.subset!r} (known: {', '.join(subsets)})")
        if info.modality != self.modality:
            raise ValueError(f"subset {self.subset!r} is {info.modality}, record says {self.modality!r}")
        if self.diagnosis not in info.labels:
            raise ValueError(
                f"diagnosis {self.diagnosis!r} is not in the label set of {self.subset!r}: {list(info.labels)}"
            )
        for name in ("image", "mask"):
            p = getattr(self, name)
            if os.path.isabs(p) or ".." in Path(p).parts:
                raise ValueError(f"{name} path must be relative to the dataset root and stay inside it: {p!r}")
        if SEG_TOKEN not in self.answers.plain:
            raise ValueError("answers.plain must contain [SEG]")


@dataclass
class DatasetInfo:
    """``dataset_info.json``: what a manifest holds and how it was built."""

    subsets: dict[str, SubsetInfo]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """``{split: {subset: n}}``"""
    build: dict = field(default_factory=dict)
    """Settings of the run that wrote the manifest (command, seed, sources, ...)."""
    schema_version: str = SCHEMA_VERSION

    def to_json(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "subsets": {k: v.to_json() for k, v in self.subsets.items()},
            "counts": self.counts,
            "build": self.build,
        }

    @classmethod
    def from_json(cls, d: dict) -> DatasetInfo:
        version = d.get("schema_version")
        if version is None or str(version).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"schema_version {version!r} is not supported (this sim4seg reads {SCHEMA_VERSION})")
        if not isinstance(d.get("subsets"), dict) or not d["subsets"]:
            raise ValueError("'subsets' must be a non-empty object")
        subsets = {}
        for name, s in d["subsets"].items():
            try:
                subsets[name] = SubsetInfo.from_json(name, s)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"subset {name!r}: {e}") from None
        return cls(subsets=subsets, counts=d.get("counts", {}), build=d.get("build", {}), schema_version=version)


def read_info(root: str | os.PathLike) -> DatasetInfo:
    """The manifest's ``dataset_info.json``: schema version, label set of each subset, counts, build settings."""
    path = Path(root) / INFO_FILE
    if not path.is_file():
        raise ManifestError(f"not an M3DS directory: {INFO_FILE} not found", path.parent)
    try:
        d = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ManifestError(f"not valid UTF-8 text: byte at offset {e.start}", path) from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"invalid JSON: {e.msg}", path, e.lineno) from None
    except (ValueError, RecursionError) as e:
        raise ManifestError(f"invalid JSON: {type(e).__name__}", path) from None
    if not isinstance(d, dict):
        raise ManifestError(f"must hold a JSON object, got {type(d).__name__}", path)
    try:
        return DatasetInfo.from_json(d)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise ManifestError(str(e), path) from None


def iter_split(
    root: str | os.PathLike, split: str, info: DatasetInfo | None = None, *, errors: list[ManifestError] | None = None
) -> Iterator[Sample]:
    """Yield the validated samples of ``split``.

    With ``errors=None`` the first bad line raises ``ManifestError`` (file and line);
    with a list, bad lines are appended to it and skipped (``data verify`` uses this).
    A missing split file yields nothing.
    """
    for _, sample in iter_split_lines(root, split, info, errors=errors):
        yield sample


def iter_split_lines(
    root: str | os.PathLike, split: str, info: DatasetInfo | None = None, *, errors: list[ManifestError] | None = None
) -> Iterator[tuple[int, Sample]]:
    """``iter_split`` with each sample's line number: ``(line, sample)``.

    A line that is not valid UTF-8 is a bad line like any other (a UTF-8 byte-order mark at
    the start of the file is accepted).
    """
    from sim4seg._jsonl import decode_line, parse_line

    info = read_info(root) if info is None else info
    path = Path(root) / f"{split}.jsonl"
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = decode_line(raw, path, lineno)
                if not line.strip():
                    continue
                sample = Sample.from_json(parse_line(line, path, lineno), info.subsets)
                if sample.split != split:
                    raise ValueError(f"record has split {sample.split!r} but is in {split}.jsonl")
            except InputError as e:
                err = ManifestError(e.problem, path, lineno)
            except ValueError as e:
                err = ManifestError(str(e), path, lineno)
            else:
                yield lineno, sample
                continue
            if errors is None:
                raise err
            errors.append(err)


def read_split(root: str | os.PathLike, split: str, info: DatasetInfo | None = None) -> list[Sample]:
    """Every record of ``split`` (``{split}.jsonl``), validated; a bad line names the file and line."""
    return list(iter_split(root, split, info))


def load_split(root: str | os.PathLike, split: str) -> tuple[DatasetInfo, list[Sample]]:
    """The manifest's info and the records of ``split`` (an error if it has none)."""
    info = read_info(root)
    samples = list(iter_split(root, split, info))
    if not samples:
        raise InputError(f"the {split!r} split has no samples ({split}.jsonl missing or empty)", root)
    return info, samples


def count(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """``{split: {subset: n}}`` for the given samples."""
    out: dict[str, dict[str, int]] = {}
    for s in samples:
        by_subset = out.setdefault(s.split, {})
        by_subset[s.subset] = by_subset.get(s.subset, 0) + 1
    return out


def write_manifest(root: str | os.PathLike, samples: Iterable[Sample], info: DatasetInfo) -> DatasetInfo:
    """Write ``{train,val,test}.jsonl`` and ``dataset_info.json`` atomically; return the info with counts."""
    root = Path(root)
    samples = list(samples)
    by_split: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for s in samples:
        s.validate(info.subsets)
        by_split[s.split].append(s)
    for split, rows in by_split.items():
        with atomic_open(root / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for s in rows:
                f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
    info.counts = count(samples)
    write_json(root / INFO_FILE, info.to_json())
    return info
