"""``sim4seg train`` — train from a YAML recipe (one process; ``accelerate launch`` for several)."""

from __future__ import annotations

import argparse
import logging

from sim4seg._config import add_override_option


def train(
    config: str, overrides: list[str] | None, resume: str | None, dry_run: bool = False, dry_run_samples: int = 8
) -> int:
    """Train Sim4Seg (or the recipe's model) from a YAML recipe; --resume auto continues a killed run exactly;
    --dry-run checks the data, builds the model on the meta device and prints lengths, parameters, memory, steps."""
    from sim4seg.train.recipe import load_config

    logging.getLogger("accelerate").setLevel(logging.WARNING)
    cfg = load_config(config, overrides or [])
    if dry_run:
        from sim4seg.train.dryrun import dry_run as run_dry
        from sim4seg.train.dryrun import format_report

        print(f"dry run of {config}: nothing is trained and no weights are loaded")
        print(format_report(run_dry(cfg, dry_run_samples), cfg))
        return 0
    from sim4seg.train.loop import train as run_training

    result = run_training(cfg, resume=resume)
    s = result.state
    if result.last_logs or s.validations:
        last = result.last_logs.get("loss")
        val = s.validations[-1].get("val/loss") if s.validations else None
        print(
            f"trained {s.global_step} step(s), {s.samples_seen} examples"
            + (f"; last train loss {last:.4f}" if last is not None else "")
            + (f"; validation loss {val:.4f}" if val is not None else "")
        )
    print(f"model: {result.final_dir}   logs: {result.output_dir / 'log.jsonl'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train from a YAML recipe (configs/*.yaml)", description=train.__doc__)
    p.add_argument("--config", required=True, metavar="YAML", help="training recipe, e.g. configs/tiny-cpu.yaml")
    add_override_option(p, "optim.lr=1e-4 train.max_steps=100")
    p.add_argument(
        "--resume",
        default=None,
        metavar="auto|PATH",
        help="continue from the latest checkpoint in train.output_dir (auto) or from a checkpoint directory",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the data, build the model on the meta device (no weights), encode the first samples and "
        "print token lengths, parameters per part, estimated memory per GPU and steps per epoch",
    )
    p.add_argument(
        "--dry-run-samples", type=int, default=8, metavar="N", help="training samples the dry run encodes (default 8)"
    )
    p.set_defaults(handler=train)
