"""Query and answer templates (the paper's three answer formats).

Phrasings are picked deterministically from ``(seed, key)`` so a rebuilt dataset has
the same text. Every answer with a diagnosis ends in a line ``Diagnosis: <label>.``
that ``parse_diagnosis_line`` reads back unambiguously.
"""

from __future__ import annotations

import hashlib
import re

from sim4seg.data.subsets import MODALITY_NAMES, SubsetInfo

SEG_TOKEN = "[SEG]"
PLAIN_ANSWER = f"It is {SEG_TOKEN}."

QUERY_TEMPLATES: tuple[str, ...] = (
    "Can you segment the {target} in this {modality} image and give the diagnosis?",
    "Please segment the {target} in this {modality} image and tell me the diagnosis.",
    "Where is the {target} in this {modality} image? Segment it and explain your diagnosis.",
    "This is a {modality} image. Segment the {target} and state the most likely diagnosis.",
    "What is the diagnosis for this {modality} image? Please also segment the {target}.",
)

# Lead-ins between "It is [SEG]." and the final "Diagnosis:" line of the diagnosis format.
DIAGNOSIS_TEMPLATES: tuple[str, ...] = (
    "The findings are consistent with {label}.",
    "The most likely diagnosis is {label}.",
    "This image suggests {label}.",
    "Based on the image, the diagnosis is {label}.",
)

# The head of a diagnosis line. The label is the rest of the line with surrounding
# whitespace and one final full stop removed (plain string operations: linear time
# whatever the line holds; a regex with a lazy label before optional trailing spaces was
# quadratic on long runs of spaces).
_DIAGNOSIS_HEAD = re.compile(r"\s*diagnosis\s*:", re.IGNORECASE)


def pick(options: tuple[str, ...], seed: int, key: str) -> str:
    """Choose one of ``options`` from ``(seed, key)``; stable across runs and platforms."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return options[int.from_bytes(digest[:8], "little") % len(options)]


def make_query(info: SubsetInfo, seed: int, key: str) -> str:
    template = pick(QUERY_TEMPLATES, seed, "query:" + key)
    return template.format(target=info.target, modality=MODALITY_NAMES[info.modality])


def diagnosis_line(label: str) -> str:
    return f"Diagnosis: {label}."


def diagnosis_answer(label: str, seed: int, key: str) -> str:
    lead = pick(DIAGNOSIS_TEMPLATES, seed, "answer:" + key).format(label=label)
    return f"{PLAIN_ANSWER} {lead}\n{diagnosis_line(label)}"


def cot_answer(label: str, cot: str) -> str:
    """The CoT format: ``It is [SEG].`` + the chain of thought + the diagnosis line ("" if no CoT yet)."""
    cot = cot.strip()
    if not cot:
        return ""
    return f"{PLAIN_ANSWER} {cot}\n{diagnosis_line(label)}"


def make_answers(label: str, seed: int, key: str, cot: str = "") -> dict[str, str]:
    return {"plain": PLAIN_ANSWER, "diagnosis": diagnosis_answer(label, seed, key), "cot": cot_answer(label, cot)}


def parse_diagnosis_line(answer: str) -> str | None:
    """The label of the last ``Diagnosis: <label>.`` line of ``answer``, or ``None``."""
    for line in reversed(answer.strip().splitlines()):
        label = _line_label(line)
        if label is not None:
            return label
    return None


def _line_label(line: str) -> str | None:
    m = _DIAGNOSIS_HEAD.match(line)
    if m is None:
        return None
    rest = line[m.end() :].strip()
    if not rest:
        return None
    if rest.endswith(".") and len(rest) > 1:
        rest = rest[:-1].rstrip()
    return rest
