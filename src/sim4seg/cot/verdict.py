"""Reading the two roles' replies: the critic's verdict and the medical assistant's chain.

LVLMs do not follow output formats exactly, so both parsers accept the variants seen in
practice (markdown emphasis, code fences, JSON objects, "Accepted", numbered reasons)
and refuse to guess: a reply whose verdict cannot be read is a rejection whose reason
says so, never an acceptance.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from sim4seg.data.prompts import SEG_TOKEN, parse_diagnosis_line

_ACCEPT = {"accept", "accepted", "approve", "approved", "pass", "passed", "yes"}
_REJECT = {"reject", "rejected", "fail", "failed", "no", "revise"}
# ``\W*`` alone after the separator: ``\s*\W*`` backtracked quadratically on long runs of spaces.
_VERDICT_LINE = re.compile(r"^\s*(?:final\s+)?(?:verdict|decision)\s*[:=\-]\W*(?P<word>[a-z]+)", re.I)
_REASONS_HEAD = re.compile(r"^\s*(?:reasons?|feedback|problems?|issues?|comments?)\s*:\s*(?P<rest>.*)$", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_NONE = {"none", "none.", "n/a", "no problems", "no problems.", "no issues", "no issues.", "nothing", "-"}
_FENCE = re.compile(r"^```[a-zA-Z]*\s*$")


def _clean(text: str) -> str:
    """Drop code fences and markdown emphasis, keep the lines."""
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if not _FENCE.match(ln.strip())]
    return "\n".join(lines).replace("**", "").replace("__", "").strip()


@dataclass
class Verdict:
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    parsed: bool = True
    """False when the reply had no readable verdict (then ``accepted`` is False)."""


def _verdict_word(word: str) -> bool | None:
    word = word.lower()
    return True if word in _ACCEPT else False if word in _REJECT else None


def _from_json(text: str) -> Verdict | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):  # not JSON, too deeply nested, an integer past the digit limit
        return None
    if not isinstance(obj, dict):
        return None
    keys = {k.lower(): v for k, v in obj.items()}
    raw = keys.get("verdict", keys.get("decision"))
    if not isinstance(raw, str) and not isinstance(raw, bool):
        return None
    accepted = raw if isinstance(raw, bool) else _verdict_word(raw.strip().split()[0] if raw.strip() else "")
    if accepted is None:
        return None
    reasons = keys.get("reasons", keys.get("feedback", []))
    if not isinstance(reasons, list):
        reasons = [] if reasons is None else [reasons]
    reasons = [str(r).strip() for r in reasons if str(r).strip() and str(r).strip().lower() not in _NONE]
    return Verdict(accepted, reasons)


def parse_verdict(reply: str) -> Verdict:
    """Read ``VERDICT: ACCEPT|REJECT`` (+ ``REASONS:`` lines) or a JSON object from ``reply``."""
    text = _clean(reply)
    if not text:
        return Verdict(False, ["the critic's reply was empty"], parsed=False)
    as_json = _from_json(text) if text.lstrip().startswith(("{", "[")) or '"verdict"' in text.lower() else None
    if as_json is not None:
        return as_json
    lines = text.split("\n")
    accepted, verdict_at = None, None
    for i, line in enumerate(lines):
        m = _VERDICT_LINE.match(line)
        if m and _verdict_word(m.group("word")) is not None:
            accepted, verdict_at = _verdict_word(m.group("word")), i
            break
    if accepted is None:
        # No "VERDICT:" line: only a reply that *starts* with the word counts ("Reject. The ...").
        first = re.match(r"^\W*([a-z]+)", text, re.I)
        word = _verdict_word(first.group(1)) if first else None
        if word is None or first.group(1).lower() in ("yes", "no"):
            return Verdict(False, ["could not read a verdict in the critic's reply: " + _snippet(text)], parsed=False)
        accepted, verdict_at = word, 0
    reasons: list[str] = []
    in_reasons = False
    for line in lines[verdict_at + 1 :]:
        m = _REASONS_HEAD.match(line)
        if m:
            in_reasons = True
            line = m.group("rest")
        if not line.strip():
            continue
        if in_reasons or _BULLET.match(line) or not accepted:
            item = _BULLET.sub("", line).strip()
            if item and item.lower() not in _NONE:
                reasons.append(item)
    if not accepted and not reasons:
        reasons = ["rejected without reasons"]
    return Verdict(bool(accepted), reasons)


def _snippet(text: str, n: int = 120) -> str:
    one = " ".join(text.split())
    return repr(one if len(one) <= n else one[:n] + "...")


def _norm_label(label: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", label.lower()).split())


def label_matches(found: str, label: str, synonyms: tuple[str, ...] = ()) -> bool:
    """Whether a ``Diagnosis:`` line's text names ``label`` (case, punctuation and synonyms ignored)."""
    f = _norm_label(found)
    return any(f == _norm_label(x) for x in (label, *synonyms))


@dataclass
class Chain:
    text: str
    """The chain of thought without ``It is [SEG].`` and without the final diagnosis line."""
    problems: list[str]
    """Problems found without asking the critic (empty: pass the chain to the critic)."""


def extract_chain(reply: str, label: str, synonyms: tuple[str, ...] = ()) -> Chain:
    """Split the medical assistant's reply into its chain and check its ``Diagnosis:`` line."""
    text = _clean(reply).replace(SEG_TOKEN, "")
    text = re.sub(r"^\s*It is\s*\.\s*", "", text)
    found = parse_diagnosis_line(text)
    problems: list[str] = []
    lines = text.split("\n")
    if found is None:
        problems.append(f"the reasoning must end with a final line 'Diagnosis: {label}.'")
    else:
        if not label_matches(found, label, synonyms):
            problems.append(f"the reasoning concludes with '{found}', but the known diagnosis is '{label}'")
        # Drop the last diagnosis line and anything after it.
        for i in range(len(lines) - 1, -1, -1):
            if parse_diagnosis_line(lines[i]) is not None:
                lines = lines[:i]
                break
    chain = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not chain:
        problems.append("the reasoning is empty: describe the modality and the findings before the diagnosis")
    return Chain(chain, problems)
