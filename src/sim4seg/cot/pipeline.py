"""One sample through the multi-role loop (paper §2.2, Figure 3).

Round r: the medical assistant writes a chain (round 1 from ``medical.txt``, later
rounds from ``revision.txt`` with its previous reply and the critic's reasons); cheap
checks run first (a ``Diagnosis:`` line naming the known label, a non-empty chain) and
a chain that fails them is rejected without asking the critic; otherwise the critical
assistant reviews it. Accepted: done. Still rejected after ``max_rounds``: queued for
human review. The result is a results-store record (see ``store.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sim4seg.cot.backends.base import Backend, BackendError
from sim4seg.cot.images import FORMATS, load_image
from sim4seg.cot.roles import Prompts
from sim4seg.cot.verdict import Verdict, extract_chain, parse_verdict
from sim4seg.data.prompts import diagnosis_line
from sim4seg.data.schema import Sample
from sim4seg.data.subsets import MODALITY_NAMES, SubsetInfo
from sim4seg.errors import ImageReadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    max_rounds: int = 3
    """Review rounds per sample before it is queued for human review."""
    max_tokens: int = 768
    """Token budget of the medical assistant's reply."""
    critic_max_tokens: int = 256
    """Token budget of the critical assistant's reply."""
    temperature: float = 0.7
    """Sampling temperature of the medical assistant; > 0 so that a revision can differ from the rejected chain."""
    critic_temperature: float = 0.0
    """Sampling temperature of the critical assistant (0: its verdicts are repeatable)."""
    max_side: int = 1024
    """Longer image side sent to the model, in pixels (0: unchanged)."""
    image_format: str = "auto"
    """``auto`` (JPEG for JPEG sources, PNG otherwise), ``png`` or ``jpeg``."""

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")
        if self.max_tokens < 1 or self.critic_max_tokens < 1:
            raise ValueError("max_tokens and critic_max_tokens must be >= 1")
        if self.temperature < 0 or self.critic_temperature < 0:
            raise ValueError("temperatures must be >= 0")
        if self.max_side < 0:
            raise ValueError(f"max_side must be >= 0, got {self.max_side}")
        if self.image_format not in FORMATS:
            raise ValueError(f"image_format must be one of {FORMATS}, got {self.image_format!r}")


class CotPipeline:
    """``process(sample) -> record``; thread-safe if the backends are."""

    def __init__(
        self,
        medical: Backend,
        critic: Backend,
        prompts: Prompts,
        root: str | Path,
        subsets: dict[str, SubsetInfo],
        config: GenerationConfig = GenerationConfig(),
    ):
        self.medical, self.critic, self.prompts = medical, critic, prompts
        self.root = Path(root)
        self.subsets = subsets
        self.config = config
        self.prompt_digest = prompts.digest()

    def _base(self, sample: Sample) -> dict:
        return {
            "id": sample.id,
            "split": sample.split,
            "diagnosis": sample.diagnosis,
            "stage": "pipeline",
            "model": self.medical.name,
            "critic_model": self.critic.name,
            "prompts": self.prompt_digest,
        }

    def _failed(self, sample: Sample, kind: str, error: str, history: list, t0: float) -> dict:
        return {
            **self._base(sample),
            "status": "failed",
            "error_kind": kind,
            "error": error,
            "rounds": len(history),
            "history": history,
            "cot": "",
            "seconds": round(time.monotonic() - t0, 3),
        }

    def process(self, sample: Sample) -> dict:
        cfg, t0 = self.config, time.monotonic()
        try:
            image = load_image(self.root / sample.image, max_side=cfg.max_side, fmt=cfg.image_format)
        except ImageReadError as e:
            return self._failed(sample, "image", str(e), [], t0)
        info = self.subsets.get(sample.subset)
        synonyms = tuple(info.synonyms.get(sample.diagnosis, ())) if info is not None else ()
        values = {
            "question": sample.query,
            "diagnosis": sample.diagnosis,
            "subset": info.title if info else sample.subset,
            "modality": MODALITY_NAMES.get(sample.modality, sample.modality),
        }
        history: list[dict] = []
        previous, reasons = "", []
        for rnd in range(1, cfg.max_rounds + 1):
            if rnd == 1:
                request = self.prompts.render("medical", **values)
            else:
                feedback = "\n".join(f"- {r}" for r in reasons)
                request = self.prompts.render("revision", previous=previous, feedback=feedback, **values)
            try:
                reply = self.medical.generate(
                    self.prompts.render("medical_system", **values),
                    request,
                    image,
                    max_tokens=cfg.max_tokens,
                    temperature=cfg.temperature,
                )
            except BackendError as e:
                return self._failed(sample, "medical assistant", f"medical assistant: {e}", history, t0)
            chain = extract_chain(reply, sample.diagnosis, synonyms)
            if chain.problems:
                verdict, by = Verdict(False, chain.problems), "check"
            else:
                review = self.prompts.render(
                    "critic", chain=f"{chain.text}\n{diagnosis_line(sample.diagnosis)}", **values
                )
                try:
                    critique = self.critic.generate(
                        self.prompts.render("critic_system", **values),
                        review,
                        image,
                        max_tokens=cfg.critic_max_tokens,
                        temperature=cfg.critic_temperature,
                    )
                except BackendError as e:
                    return self._failed(sample, "critical assistant", f"critical assistant: {e}", history, t0)
                verdict, by = parse_verdict(critique), "critic"
            history.append(
                {"round": rnd, "chain": chain.text, "accepted": verdict.accepted, "reasons": verdict.reasons, "by": by}
            )
            if verdict.accepted:
                return {
                    **self._base(sample),
                    "status": "accepted",
                    "cot": chain.text,
                    "rounds": rnd,
                    "critic_notes": verdict.reasons,
                    "history": history,
                    "seconds": round(time.monotonic() - t0, 3),
                }
            previous, reasons = reply.strip(), verdict.reasons
        last = history[-1]
        return {
            **self._base(sample),
            "status": "queued",
            "cot": last["chain"],
            "rounds": cfg.max_rounds,
            "critic_notes": last["reasons"],
            "history": history,
            "seconds": round(time.monotonic() - t0, 3),
        }
