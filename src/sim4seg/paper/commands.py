"""``sim4seg paper PROTOCOL``: reproduce a table or figure of the paper (run, --print-commands, --collect)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from sim4seg._config import add_override_option


def paper(
    protocol: str,
    out: str,
    tiny: bool,
    manifest: str | None,
    recipe: str | None,
    base: str | None,
    overrides: list[str] | None,
    steps: int | None,
    samples: int | None,
    run: str | None,
    print_commands: bool,
    collect: bool,
) -> int:
    """Reproduce one of the paper's tables or figures: train, evaluate and sweep every run of PROTOCOL one after
    another into OUT/runs/<run>/ (a finished run is skipped, a killed one resumes), then lay the results out
    as the paper's table beside its published numbers (OUT/PROTOCOL.md, .csv, .json). --print-commands lists
    one independent shell line per run instead (for a scheduler) and writes each run's recipe; --collect only
    gathers what is there."""
    from sim4seg.paper import collect as gather
    from sim4seg.paper import runner

    p = runner.protocol(protocol)
    runner.check_run(p, run)
    root = Path(out)
    if print_commands:
        tail = ["--out", out] + (["--tiny"] if tiny else [])
        for flag, value in (
            ("--manifest", manifest),
            ("--recipe", recipe),
            ("--base", base),
            ("--steps", steps),
            ("--samples", samples),
        ):
            tail += [flag, str(value)] if value is not None else []
        tail += ["--set", *overrides] if overrides else []
        for line in runner.commands(p, tail):
            print(line)
        print(f"# then: sim4seg paper {protocol} --out {out} --collect")
        scale = runner.make_scale(root, tiny, recipe, manifest, base, overrides, steps, samples)
        written = [runner.write_recipe(runner.RUNS[r], scale, root) for r in p.runs if runner.RUNS[r].recipe]
        if written:  # to check or dry-run before submitting: sim4seg train --config RECIPE --dry-run
            print(f"# wrote {len(written)} recipe(s): {root / 'runs'}/<run>/recipe.yaml")
        return 0
    if not collect:
        logging.getLogger("accelerate").setLevel(logging.WARNING)
        scale = runner.make_scale(root, tiny, recipe, manifest, base, overrides, steps, samples)
        t0 = time.perf_counter()
        report = runner.execute(p, scale, root, run)
        for name, status, seconds in report:
            print(f"{name}: {status}" + (f" in {seconds:.1f}s" if status == "done" else " (already finished)"))
        print(
            f"{protocol}{' --tiny' if tiny else ''}: {sum(s == 'done' for _, s, _ in report)} run(s) done, "
            f"{sum(s == 'skipped' for _, s, _ in report)} skipped; wall {time.perf_counter() - t0:.1f}s"
        )
        if run is not None:
            return 0
    md, paths = gather.write(p, root)
    print(md)
    print("wrote " + ", ".join(str(x) for x in paths))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from sim4seg.paper.protocols import PROTOCOLS

    p = sub.add_parser(
        "paper", help="reproduce a table or figure of the paper (docs/reproduce.md)", description=paper.__doc__
    )
    p.add_argument("protocol", choices=list(PROTOCOLS), help="; ".join(x.title for x in PROTOCOLS.values()))
    p.add_argument("--out", default="paper-runs", metavar="DIR", help="runs and tables go here (default paper-runs)")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="toy scale: a tiny random model on a synthetic M3DS (all ten subsets), minutes on a CPU",
    )
    p.add_argument(
        "--manifest",
        default=None,
        metavar="DIR",
        help="the M3DS directory (full scale: required; --tiny: synthesized into OUT/m3ds)",
    )
    p.add_argument(
        "--recipe",
        default=None,
        metavar="YAML",
        help="base training recipe (default: configs/sim4seg-7b.yaml; --tiny: the package's tiny.yaml)",
    )
    p.add_argument(
        "--base",
        default=None,
        metavar="CKPT",
        help="the zero-shot model (Tables 2-4): a Sim4Seg checkpoint converted from LISA-7B",
    )
    add_override_option(p, "train.deepspeed=configs/deepspeed/zero2.json", "every run's recipe")
    p.add_argument("--steps", type=int, default=None, help="stop each training after N optimizer steps")
    p.add_argument("--samples", type=int, default=None, help="--tiny: samples of the synthetic M3DS (default 200)")
    p.add_argument("--run", default=None, metavar="RUN", help="only this run of the protocol (see --print-commands)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--print-commands", action="store_true", help="print one shell line per run and exit")
    mode.add_argument("--collect", action="store_true", help="only gather the results into the paper's tables")
    p.set_defaults(handler=paper)
