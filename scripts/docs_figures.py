"""Paste what the demo printed into the docs (``make docs-figures``), so that no figure is typed by hand.

    python scripts/docs_figures.py [DEMO_OUT] [--check]

Reads ``DEMO_OUT/results.md`` (the tables and the verdict line ``sim4seg demo`` prints) and
``DEMO_OUT/summary.json`` (timings, threads, load), and rewrites the region between
``<!-- demo-figures:start -->`` and ``<!-- demo-figures:end -->`` in:

- ``README.md``: the Table 2 layout (overall gIoU / cIoU / Acc per method) and the verdict line;
- ``docs/inference.md``: everything ``results.md`` holds (Table 2, Dice and n, Table 3 per subset,
  the verdict), in a code block as printed, with the timings.

``--check``: change nothing; exit 1 if a doc's region differs from what the demo output gives
(for CI after ``make demo``). Exit 2 on a missing file or marker.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- demo-figures:start -->", "<!-- demo-figures:end -->"
DOCS = ("README.md", "docs/inference.md")


class Problem(Exception):
    pass


def read_demo(out: Path) -> tuple[str, dict]:
    results, summary = out / "results.md", out / "summary.json"
    for p in (results, summary):
        if not p.is_file():
            raise Problem(f"{p}: not found — run `make demo` (or `sim4seg demo --out {out}`) first")
    return results.read_text(encoding="utf-8"), json.loads(summary.read_text(encoding="utf-8"))


def provenance(summary: dict, results: str = "") -> str:
    t = summary.get("timings", {})
    resumed = t.get("synthesize_and_train_s", 0.0) < 5.0 and "total_s" in t  # a trained model was reused
    env = summary.get("environment", {})
    load = env.get("loadavg_start")
    parts = [
        f"`total_s` {t['total_s']:.1f} s inside the command" if "total_s" in t else None,
        f"{env['threads']} intra-op thread(s)"
        + (f" in each of {env['processes']} processes" if "processes" in env else "")
        if "threads" in env
        else None,
        f"{env['cpus']} CPU(s)" if "cpus" in env else None,
        f"load average {load[0]:.1f} at the start" if load else None,
        f"torch {env['torch']}" if "torch" in env else None,
    ]
    if resumed:
        parts[0] += " (a rerun that reused the trained model: evaluation and sweeps only)"
    text = (
        "Pasted by `make docs-figures` from the demo's `results.md` and `summary.json` ("
        + ", ".join(p for p in parts if p)
        + ")."
    )
    if results and "(trained without)" not in results:
        text += " Run with `--no-ablation`: no row for the model trained without RVLS2M."
    return text


def table2(results: str) -> str:
    """The Table 2 block (the first table of results.md) and the verdict line (its last line)."""
    lines = results.strip("\n").splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("| Method | gIoU"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    verdict = next((x for x in reversed(lines) if x.startswith("Sim4Seg (RVLS2M, greedy)")), "")
    return "\n".join(lines[start:end]) + "\n\n" + verdict


def region(doc: str, results: str, summary: dict) -> str:
    if doc == "README.md":
        body = table2(results)
    else:
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary.get("timings", {}).items())
        body = "```\n" + results.strip("\n") + "\ntimings: " + timings + "\n```"
    return f"{START}\n{provenance(summary, results)}\n\n{body}\n{END}"


def rewrite(text: str, new_region: str, path: Path) -> str:
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        raise Problem(f"{path}: no {START} ... {END} region")
    return text[:i] + new_region + text[j + len(END) :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demo_out", nargs="?", default="demo-out", help="the demo's output directory (default demo-out)")
    ap.add_argument("--check", action="store_true", help="report stale docs (exit 1) instead of rewriting them")
    args = ap.parse_args(argv)
    try:
        results, summary = read_demo(Path(args.demo_out))
        stale = []
        for doc in DOCS:
            path = ROOT / doc
            text = path.read_text(encoding="utf-8")
            new = rewrite(text, region(doc, results, summary), path)
            if new != text:
                stale.append(doc)
                if not args.check:
                    path.write_text(new, encoding="utf-8")
    except Problem as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    verb = "differ from the demo output" if args.check else "rewritten"
    print(f"{', '.join(stale)}: {verb}" if stale else "docs already quote this demo output")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
