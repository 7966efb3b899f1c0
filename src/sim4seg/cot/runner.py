"""Running the pipeline over a split: bounded concurrency, progress, resume, summary.

Worker threads (the work is waiting on a server, so threads are enough and need no new
dependency) take samples from a window of at most ``2 × concurrency`` submitted tasks;
the main thread writes each finished sample to the results store as it completes.
Samples already in the store are skipped, so re-running the same command resumes.
If ``abort_after`` samples in a row fail on the server (not on their image), the run
stops with one error instead of marking thousands of samples failed; the samples it
did not finish are simply not recorded and a re-run picks them up.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from sim4seg.cot.pipeline import CotPipeline
from sim4seg.cot.store import ResultStore
from sim4seg.data.schema import Sample

log = logging.getLogger(__name__)


@dataclass
class Summary:
    todo: int = 0
    """Samples this run set out to process."""
    skipped: int = 0
    """Samples already in the store when the run started."""
    status: Counter = field(default_factory=Counter)
    """``accepted`` / ``queued`` / ``failed`` counts of this run."""
    rejections: int = 0
    """Review rounds that ended in a rejection (by the critic or the format check)."""
    rounds: Counter = field(default_factory=Counter)
    """``{rounds: samples}`` over accepted and queued samples."""
    failures: dict[str, list[str]] = field(default_factory=dict)
    """``{reason: [sample ids]}``."""
    seconds: float = 0.0
    aborted: str = ""

    def add(self, rec: dict) -> None:
        self.status[rec["status"]] += 1
        self.rejections += sum(1 for h in rec.get("history", []) if not h["accepted"])
        if rec["status"] == "failed":
            self.failures.setdefault(_reason(rec), []).append(rec["id"])
        else:
            self.rounds[rec["rounds"]] += 1

    @property
    def done(self) -> int:
        return sum(self.status.values())

    def to_json(self) -> dict:
        reviewed = self.status["accepted"] + self.status["queued"]
        return {
            "todo": self.todo,
            "skipped": self.skipped,
            "done": self.done,
            **{k: self.status[k] for k in ("accepted", "queued", "failed")},
            "rejections": self.rejections,
            "acceptance_rate": self.status["accepted"] / reviewed if reviewed else None,
            "mean_rounds": sum(r * n for r, n in self.rounds.items()) / reviewed if reviewed else None,
            "rounds": {str(k): v for k, v in sorted(self.rounds.items())},
            "failures": {k: {"count": len(v), "examples": v[:5]} for k, v in self.failures.items()},
            "seconds": round(self.seconds, 2),
            "samples_per_second": self.done / self.seconds if self.seconds > 0 else None,
            "aborted": self.aborted,
        }

    def text(self) -> str:
        j = self.to_json()
        rate = "n/a" if j["acceptance_rate"] is None else f"{100 * j['acceptance_rate']:.1f}%"
        mean = "n/a" if j["mean_rounds"] is None else f"{j['mean_rounds']:.2f}"
        lines = [
            f"processed {self.done} of {self.todo} sample(s) in {self.seconds:.1f}s"
            + (f" ({self.skipped} already done before this run)" if self.skipped else ""),
            f"accepted {self.status['accepted']}, queued for human review {self.status['queued']}, "
            f"failed {self.status['failed']}; {self.rejections} rejected round(s)",
            f"acceptance rate {rate} (accepted / reviewed); rounds per sample: mean {mean}, "
            + (", ".join(f"{r}: {n}" for r, n in sorted(self.rounds.items())) or "none"),
        ]
        for reason, ids in sorted(self.failures.items(), key=lambda kv: -len(kv[1])):
            more = f" (+{len(ids) - 3} more)" if len(ids) > 3 else ""
            lines.append(f"  failed x{len(ids)}: {reason} [e.g. {', '.join(ids[:3])}{more}]")
        if self.aborted:
            lines.append(f"ABORTED: {self.aborted}")
        return "\n".join(lines)


def _reason(rec: dict) -> str:
    """A failure's reason without the sample-specific file path (so that reasons group)."""
    err = rec.get("error", "unknown error")
    if rec.get("error_kind") == "image" and ": " in err:
        return "image: " + err.split(": ", 1)[1]
    return err


def pending_samples(
    samples: Iterable[Sample], store: ResultStore, *, retry_failed: bool = False
) -> tuple[list[Sample], int]:
    """The samples still to do (ids de-duplicated, first kept) and how many were already done."""
    todo, seen, skipped = [], set(), 0
    for s in samples:
        if s.id in seen:
            log.warning("duplicate sample id %r in the manifest; processing it once", s.id)
            continue
        seen.add(s.id)
        rec = store.state.get(s.id)
        if rec is not None and not (retry_failed and rec["status"] == "failed"):
            skipped += 1
            continue
        todo.append(s)
    return todo, skipped


def run(
    pipeline: CotPipeline,
    samples: list[Sample],
    store: ResultStore,
    *,
    concurrency: int = 8,
    abort_after: int = 50,
    progress: bool = True,
    skipped: int = 0,
) -> Summary:
    """Process ``samples`` (already filtered by ``pending_samples``) and append each result to ``store``."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    from tqdm import tqdm

    summary = Summary(todo=len(samples), skipped=skipped)
    bar = tqdm(total=len(samples), unit="sample", desc="cot", disable=not progress, dynamic_ncols=True)
    streak, t0 = 0, time.monotonic()
    it = iter(samples)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cot")
    pending: set[Future] = set()
    clean_exit = False
    try:

        def fill() -> None:
            while len(pending) < 2 * concurrency and not summary.aborted:
                s = next(it, None)
                if s is None:
                    return
                pending.add(pool.submit(pipeline.process, s))

        fill()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                pending.discard(fut)
                rec = fut.result()
                store.append(rec)
                summary.add(rec)
                server_failure = rec["status"] == "failed" and rec.get("error_kind") != "image"
                streak = streak + 1 if server_failure else 0
                if abort_after and streak >= abort_after and not summary.aborted:
                    summary.aborted = (
                        f"{streak} samples in a row failed on the server; last: {rec['error']}. "
                        "Fix the server and re-run with --retry-failed"
                    )
                    for f in pending:
                        f.cancel()
                bar.update(1)
                bar.set_postfix(
                    accepted=summary.status["accepted"],
                    rejected=summary.rejections,
                    queued=summary.status["queued"],
                    failed=summary.status["failed"],
                    refresh=False,
                )
            pending = {f for f in pending if not f.cancelled()}
            fill()
        clean_exit = True
    finally:
        # On Ctrl-C do not wait for requests in flight: their samples are not recorded and a re-run redoes them.
        pool.shutdown(wait=clean_exit, cancel_futures=True)
        bar.close()
        summary.seconds = time.monotonic() - t0
    if summary.aborted:
        log.error("%s", summary.aborted)
    return summary
