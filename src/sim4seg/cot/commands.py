"""``sim4seg cot ...`` subcommands: generate, apply, review-export, review-import, prompts."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from sim4seg.errors import InputError

log = logging.getLogger(__name__)

ENV_BASE_URL = ("SIM4SEG_COT_BASE_URL", "OPENAI_BASE_URL")
ENV_MODEL = ("SIM4SEG_COT_MODEL",)
ENV_API_KEY = ("SIM4SEG_COT_API_KEY", "OPENAI_API_KEY")


def _env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _server_urls(flags: list[str] | None, urls_file: str | None) -> list[str]:
    """``--base-url`` (repeatable) and ``--base-urls-file`` (one URL a line, ``#`` comments), else the env.

    The environment variable may hold several URLs separated by commas or spaces.
    """
    urls = list(flags or [])
    if urls_file:
        path = Path(urls_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the server list ({type(e).__name__}: {e})", path) from None
        for n, line in enumerate(lines, 1):
            url = line.split("#", 1)[0].strip()
            if not url:
                continue
            if not url.startswith(("http://", "https://")) or " " in url:
                raise InputError(f"not a server URL: {url!r} (expected http(s)://host[:port]/v1)", path, n)
            urls.append(url)
        if not urls:
            raise InputError("the server list names no URL", path)
    if not urls:
        env = _env(ENV_BASE_URL)
        urls = env.replace(",", " ").split() if env else []
    return urls


def _backend(
    kind: str,
    base_urls: list[str],
    model: str | None,
    api_key: str | None,
    timeout: float,
    max_attempts: int,
    backoff: float,
    pool,
    device: str,
    dtype: str,
    role: str,
):
    if not model:
        raise InputError(f"no model for the {role}: pass --model (or set SIM4SEG_COT_MODEL)")
    if kind == "hf":
        from sim4seg.cot.backends.hf import HFBackend

        return HFBackend.from_pretrained(model, device=device, dtype=dtype)
    from sim4seg.cot.backends.openai import OpenAIBackend, RetryPolicy

    if not base_urls:
        raise InputError(f"no server for the {role}: pass --base-url (or set SIM4SEG_COT_BASE_URL / OPENAI_BASE_URL)")
    try:
        retry = RetryPolicy(max_attempts=max_attempts, backoff=backoff)
    except ValueError as e:
        raise InputError(str(e)) from None
    return OpenAIBackend(base_urls, model, api_key, timeout=timeout, retry=retry, pool=pool)


def _warn_if_settings_changed(path: Path, new: dict) -> None:
    """A resumed run with another model or other prompts mixes their outputs: say so."""
    import json

    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for key in ("manifest", "split", "model", "critic_model", "prompt_digest"):
        if old.get(key) != new.get(key):
            log.warning(
                "%s: this output was started with %s=%r, this run uses %r; each record names what produced it",
                path.parent,
                key,
                old.get(key),
                new.get(key),
            )


def generate(
    manifest: str,
    split: str,
    out: str,
    backend: str,
    base_url: list[str] | None,
    base_urls_file: str | None,
    model: str | None,
    api_key: str | None,
    critic_base_url: list[str] | None,
    critic_model: str | None,
    concurrency: int,
    max_per_server: int,
    fail_threshold: int,
    cooldown: float,
    cooldown_max: float,
    max_rounds: int,
    timeout: float,
    max_attempts: int,
    backoff: float,
    prompts: str | None,
    limit: int | None,
    retry_failed: bool,
    abort_after: int,
    max_tokens: int,
    critic_max_tokens: int,
    temperature: float,
    critic_temperature: float,
    max_side: int,
    image_format: str,
    device: str,
    dtype: str,
    no_progress: bool,
) -> int:
    """Generate diagnosis chains of thought for one split (medical assistant ⇄ critical assistant)."""
    from dataclasses import asdict

    from sim4seg._atomic import write_json
    from sim4seg._config import from_options
    from sim4seg.cot.backends.pool import PoolPolicy
    from sim4seg.cot.pipeline import CotPipeline, GenerationConfig
    from sim4seg.cot.roles import Prompts
    from sim4seg.cot.runner import pending_samples, run
    from sim4seg.cot.store import ResultStore, results_path
    from sim4seg.data.schema import iter_split, read_info

    base_urls = _server_urls(base_url, base_urls_file)
    critic_urls = list(critic_base_url or []) or base_urls
    model = model or _env(ENV_MODEL)
    api_key = api_key or _env(ENV_API_KEY)
    critic_key = _env(("SIM4SEG_COT_CRITIC_API_KEY",)) or api_key
    options = locals()
    config = from_options(GenerationConfig, options)
    pool = from_options(PoolPolicy, options)
    if concurrency < 1:
        raise InputError(f"--concurrency must be >= 1, got {concurrency}")
    templates = Prompts.load(prompts)
    info = read_info(manifest)
    samples = list(iter_split(manifest, split, info))
    if not samples:
        raise InputError(f"no samples in split {split!r}", Path(manifest) / f"{split}.jsonl")

    args = (timeout, max_attempts, backoff, pool, device, dtype)
    medical = _backend(backend, base_urls, model, api_key, *args, role="medical assistant")
    same_critic = (critic_model in (None, model)) and critic_urls == base_urls
    critic = (
        medical
        if same_critic
        else _backend(backend, critic_urls, critic_model or model, critic_key, *args, role="critical assistant")
    )
    medical.preflight()
    if critic is not medical:
        critic.preflight()

    store = ResultStore(results_path(out))
    with store:
        todo, skipped = pending_samples(samples, store, retry_failed=retry_failed)
        if limit is not None:
            todo = todo[:limit]
        run_info = {
            "manifest": str(Path(manifest).resolve()),
            "split": split,
            "backend": backend,
            "base_url": _one_or_list(base_urls) if backend == "openai" else None,
            "model": medical.name,
            "critic_base_url": _one_or_list(critic_urls) if backend == "openai" else None,
            "critic_model": critic.name,
            "prompts": templates.sources,
            "prompt_digest": templates.digest(),
            "config": asdict(config),
            "concurrency": concurrency,
            "servers": asdict(pool) if backend == "openai" else None,
        }
        out_dir = store.path.parent
        _warn_if_settings_changed(out_dir / "run.json", run_info)
        write_json(out_dir / "run.json", run_info)
        log.info("%d sample(s) to do, %d already in %s", len(todo), skipped, store.path)
        pipeline = CotPipeline(medical, critic, templates, manifest, info.subsets, config)
        summary = run(
            pipeline,
            todo,
            store,
            concurrency=concurrency,
            abort_after=abort_after,
            progress=not no_progress,
            skipped=skipped,
        )
    servers = _server_stats(medical, critic)
    write_json(out_dir / "summary.json", {**summary.to_json(), **({"servers": servers} if servers else {})})
    print(summary.text())
    for srv in servers if len(servers) > 1 else []:
        print(
            f"server {srv['url']}: {srv['requests']} request(s), {srv['failed']} failed, taken out "
            f"{srv['taken_out']} time(s){'' if srv['in_service'] else ', out of service at the end'}"
        )
    print(f"results: {store.path}")
    return 1 if summary.aborted else 0


def _one_or_list(urls: list[str]) -> str | list[str]:
    return urls[0] if len(urls) == 1 else urls


def _server_stats(*backends) -> list[dict]:
    """Requests, failures and outages per server of the HTTP backends (each pool once)."""
    out, seen = [], set()
    for b in backends:
        pool = getattr(b, "pool", None)
        if pool is not None and id(pool) not in seen:
            seen.add(id(pool))
            out += pool.stats()
    return out


def apply(manifest: str, results: str) -> int:
    """Write the accepted chains of RESULTS into the manifest's cot field and CoT answers (atomically)."""
    from sim4seg.cot.apply import apply_results

    counts = apply_results(manifest, results)
    print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))
    return 0


def review_export(manifest: str, results: str, out: str, spot_check: int, seed: int) -> int:
    """Export the human-review queue (and a random sample of accepted chains) to a CSV or JSONL worksheet."""
    from sim4seg.cot.review import export_review
    from sim4seg.cot.store import ResultStore, results_path

    path = results_path(results)
    if not path.is_file():
        raise InputError("results file not found", path)
    with ResultStore(path) as store:
        counts = export_review(manifest, store, out, spot_check=spot_check, seed=seed)
    print(f"wrote {counts['queued']} queued and {counts['spot_check']} spot-check row(s) to {out}")
    return 0


def review_import(results: str, review: str) -> int:
    """Import a reviewed worksheet's decisions and edits into the results store."""
    from sim4seg.cot.review import import_review
    from sim4seg.cot.store import ResultStore, results_path

    path = results_path(results)
    if not path.is_file():
        raise InputError("results file not found", path)
    with ResultStore(path) as store:
        counts = import_review(review, store)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


def prompts_cmd(out: str, overwrite: bool) -> int:
    """Copy the default prompt files to OUT for editing (then pass --prompts OUT to generate)."""
    from sim4seg.cot.roles import copy_defaults

    for p in copy_defaults(out, overwrite=overwrite):
        print(p)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from sim4seg._config import add_options
    from sim4seg.cot.backends.pool import PoolPolicy
    from sim4seg.cot.images import FORMATS
    from sim4seg.cot.pipeline import GenerationConfig

    cot = sub.add_parser("cot", help="generate, review and apply diagnosis chains of thought")
    csub = cot.add_subparsers(dest="cot_command", metavar="ACTION", required=True)

    p = csub.add_parser("generate", help=generate.__doc__, description=generate.__doc__)
    p.add_argument("--manifest", required=True, help="M3DS directory")
    p.add_argument("--split", required=True, choices=("train", "val", "test"))
    p.add_argument(
        "--out",
        required=True,
        help="output directory (results.jsonl, run.json, summary.json); re-running with the same OUT resumes",
    )
    p.add_argument(
        "--backend",
        choices=("openai", "hf"),
        default="openai",
        help="openai: any OpenAI-compatible server (default); hf: load --model in process",
    )
    p.add_argument(
        "--base-url",
        action="append",
        metavar="URL",
        help="server URL incl. /v1; repeat for several servers of the same model "
        "(env SIM4SEG_COT_BASE_URL or OPENAI_BASE_URL, URLs separated by commas)",
    )
    p.add_argument("--base-urls-file", metavar="FILE", help="a file of server URLs, one a line (# comments)")
    p.add_argument("--model", help="served model name, or a model path for --backend hf (env SIM4SEG_COT_MODEL)")
    p.add_argument("--api-key", help="API key (prefer env SIM4SEG_COT_API_KEY or OPENAI_API_KEY: a flag shows in ps)")
    p.add_argument(
        "--critic-base-url",
        action="append",
        metavar="URL",
        help="server of the critical assistant, repeatable (default: the --base-url servers)",
    )
    p.add_argument(
        "--critic-model",
        help="model of the critical assistant (default: --model); "
        "its key: env SIM4SEG_COT_CRITIC_API_KEY, else the same key",
    )
    p.add_argument("--concurrency", type=int, default=8, help="samples in flight (default 8)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    p.add_argument("--max-attempts", type=int, default=6, help="attempts per request on 429/5xx/timeouts (default 6)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry wait in seconds, doubling (default 1)")
    p.add_argument(
        "--abort-after",
        type=int,
        default=50,
        help="stop after this many samples in a row fail on the server (0: never; default 50)",
    )
    p.add_argument("--prompts", help="directory of edited prompt files (see `sim4seg cot prompts`)")
    p.add_argument("--limit", type=int, default=None, help="process at most N samples this run")
    p.add_argument("--retry-failed", action="store_true", help="redo samples recorded as failed")
    add_options(
        p.add_argument_group("generation (cot.pipeline.GenerationConfig)"),
        GenerationConfig,
        choices={"image_format": FORMATS},
    )
    add_options(p.add_argument_group("several servers (cot.backends.pool.PoolPolicy)"), PoolPolicy)
    p.add_argument("--device", default="cpu", help="--backend hf: torch device (default cpu)")
    p.add_argument("--dtype", default="auto", help="--backend hf: auto, float32, bfloat16 or float16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=generate)

    p = csub.add_parser("apply", help=apply.__doc__, description=apply.__doc__)
    p.add_argument("--manifest", required=True, help="M3DS directory to update")
    p.add_argument("--results", required=True, help="the generate OUT directory (or its results.jsonl)")
    p.set_defaults(handler=apply)

    p = csub.add_parser("review-export", help=review_export.__doc__, description=review_export.__doc__)
    p.add_argument("--manifest", required=True, help="M3DS directory")
    p.add_argument("--results", required=True, help="the generate OUT directory (or its results.jsonl)")
    p.add_argument("--out", required=True, help="worksheet to write: .csv or .jsonl")
    p.add_argument("--spot-check", type=int, default=0, help="also export N random accepted chains (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the spot-check draw (default 0)")
    p.set_defaults(handler=review_export)

    p = csub.add_parser("review-import", help=review_import.__doc__, description=review_import.__doc__)
    p.add_argument("--results", required=True, help="the generate OUT directory (or its results.jsonl)")
    p.add_argument("--review", required=True, help="the reviewed worksheet (.csv or .jsonl)")
    p.set_defaults(handler=review_import)

    p = csub.add_parser("prompts", help=prompts_cmd.__doc__, description=prompts_cmd.__doc__)
    p.add_argument("--out", required=True, help="directory to copy the prompt files into")
    p.add_argument("--overwrite", action="store_true", help="replace files that exist")
    p.set_defaults(handler=prompts_cmd)
