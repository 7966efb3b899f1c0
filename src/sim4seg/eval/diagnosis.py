"""Parse a free-text answer into a canonical diagnosis label of the sample's subset.

Order of evidence:

1. The answer's last ``Diagnosis: <label>.`` line (``prompts.parse_diagnosis_line``). Its
   text is looked up whole among the subset's labels and synonyms; failing that, it is
   searched for them (step 3's rules). A line that names two different labels is
   ambiguous: the answer is unparseable (the text is not consulted).
2. Without a usable line, the whole answer is searched.
3. Search: text is compared case-, punctuation-, underscore- and hyphen-insensitively,
   on word boundaries. Where phrases overlap the longest wins ("no fracture" beats
   "fracture", "humerus fracture" beats "humerus"). If the surviving phrases name two
   different labels the answer is ambiguous, hence unparseable.

An unparseable answer is scored as wrong and counted as unparseable.

Parsing takes time linear in the answer's length. Answers longer than
``MAX_ANSWER_CHARS`` (100,000 characters, far beyond any generated answer) are refused
with an ``InputError``: such a file is not a model's output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sim4seg.data.prompts import parse_diagnosis_line
from sim4seg.data.subsets import SUBSETS, SubsetInfo
from sim4seg.errors import InputError

MAX_ANSWER_CHARS = 100_000
"""Longest answer the parser accepts (characters)."""


def check_answer_length(answer: str) -> None:
    """``InputError`` for an answer over ``MAX_ANSWER_CHARS``."""
    if len(answer) > MAX_ANSWER_CHARS:
        raise InputError(
            f"answer is {len(answer):,} characters long, over the limit of {MAX_ANSWER_CHARS:,} "
            "(sim4seg.eval.diagnosis.MAX_ANSWER_CHARS)"
        )


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)

# How a label was found (``Parsed.source``).
FROM_LINE, FROM_TEXT, AMBIGUOUS, NOT_FOUND = "line", "text", "ambiguous", "none"


def normalize(text: str) -> str:
    """Casefold; every run of punctuation, ``_`` , ``-`` or whitespace becomes one space."""
    return _NON_WORD.sub(" ", text.casefold()).strip()


@dataclass(frozen=True)
class Parsed:
    """The outcome of parsing one answer."""

    label: str | None
    """Canonical label of the subset, or ``None`` (unparseable)."""
    source: str
    """``line`` (from the Diagnosis line), ``text`` (found in the text), ``ambiguous`` or ``none``."""

    @property
    def unparseable(self) -> bool:
        return self.label is None


class _SubsetPhrases:
    """The normalized phrases (labels and synonyms) of one subset, longest first."""

    def __init__(self, info: SubsetInfo) -> None:
        table: dict[str, str] = {}
        for label in info.labels:
            for phrase in (label, *info.synonyms.get(label, ())):
                key = normalize(phrase)
                if not key:
                    continue
                if table.get(key, label) != label:
                    raise ValueError(f"subset {info.name!r}: phrase {phrase!r} names both {table[key]!r} and {label!r}")
                table[key] = label
        self.table = table
        self.patterns = [
            (re.compile(rf"(?<!\w){re.escape(k)}(?!\w)"), k) for k in sorted(table, key=lambda k: (-len(k), k))
        ]

    def search(self, text: str) -> Parsed:
        norm = normalize(text)
        found: list[tuple[int, int, str]] = []  # (start, end, label) of phrases kept
        candidates = []
        for pattern, key in self.patterns:
            # overlapping occurrences: advance one character past each match start
            pos = 0
            while (m := pattern.search(norm, pos)) is not None:
                candidates.append((m.start(), m.end(), self.table[key]))
                pos = m.start() + 1
        # longest first (then leftmost); keep a phrase only if it overlaps no kept one. The
        # characters taken by kept phrases are marked, so each check costs the phrase's length.
        taken = bytearray(len(norm))
        for start, end, label in sorted(candidates, key=lambda c: (-(c[1] - c[0]), c[0])):
            if not any(taken[start:end]):
                found.append((start, end, label))
                taken[start:end] = b"\x01" * (end - start)
        labels = {label for _, _, label in found}
        if not labels:
            return Parsed(None, NOT_FOUND)
        if len(labels) > 1:
            return Parsed(None, AMBIGUOUS)
        return Parsed(labels.pop(), FROM_TEXT)


class DiagnosisParser:
    """Parse answers against the label sets of ``subsets`` (default: the paper's ten).

    Pass ``DatasetInfo.subsets`` to use a manifest's own label sets and synonyms.
    """

    def __init__(self, subsets: Mapping[str, SubsetInfo] | None = None) -> None:
        self._subsets = dict(SUBSETS if subsets is None else subsets)
        self._phrases: dict[str, _SubsetPhrases] = {}

    @property
    def subsets(self) -> dict[str, SubsetInfo]:
        """The label sets this parser knows, by subset name."""
        return self._subsets

    def _get(self, subset: str) -> _SubsetPhrases:
        phrases = self._phrases.get(subset)
        if phrases is None:
            info = self._subsets.get(subset)
            if info is None:
                raise KeyError(f"unknown subset {subset!r}; known: {', '.join(self._subsets)}")
            phrases = self._phrases[subset] = _SubsetPhrases(info)
        return phrases

    def parse(self, answer: str, subset: str) -> Parsed:
        """The canonical label ``answer`` gives for a sample of ``subset``.

        An answer over ``MAX_ANSWER_CHARS`` raises ``InputError``.
        """
        check_answer_length(answer)
        phrases = self._get(subset)
        line = parse_diagnosis_line(answer)
        if line is not None:
            label = phrases.table.get(normalize(line))
            if label is not None:
                return Parsed(label, FROM_LINE)
            hit = phrases.search(line)
            if hit.source == AMBIGUOUS:
                return hit
            if hit.label is not None:
                return Parsed(hit.label, FROM_LINE)
        return phrases.search(answer)

    def label(self, answer: str, subset: str) -> str | None:
        """``parse(...).label``: the canonical label, or ``None`` when unparseable."""
        return self.parse(answer, subset).label


def parse_diagnosis(answer: str, info: SubsetInfo) -> str | None:
    """One-off parse of ``answer`` against ``info``'s labels (use ``DiagnosisParser`` in loops)."""
    return DiagnosisParser({info.name: info}).label(answer, info.name)
