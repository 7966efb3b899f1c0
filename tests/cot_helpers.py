"""Helpers shared by the cot tests (importable: conftest puts this directory on sys.path)."""

from __future__ import annotations

from sim4seg.cot.backends.openai import OpenAIBackend, RetryPolicy
from sim4seg.cot.backends.pool import PoolPolicy
from sim4seg.cot.pipeline import CotPipeline, GenerationConfig
from sim4seg.cot.roles import Prompts
from sim4seg.data.schema import read_info

FAST_RETRY = RetryPolicy(max_attempts=4, backoff=0.01, backoff_max=0.05)
SUBSETS = ["kvasir_seg", "busi", "isic2017", "fracatlas"]


def make_pipeline(
    url: str | list[str],
    root,
    *,
    timeout: float = 2.0,
    max_rounds: int = 3,
    api_key: str | None = None,
    retry: RetryPolicy = FAST_RETRY,
    pool: PoolPolicy = PoolPolicy(),
) -> CotPipeline:
    backend = OpenAIBackend(url, "tiny-med", api_key, timeout=timeout, retry=retry, pool=pool)
    return CotPipeline(
        backend, backend, Prompts.load(), root, read_info(root).subsets, GenerationConfig(max_rounds=max_rounds)
    )


def generate_args(manifest, out, *rest, split: str = "train") -> list[str]:
    """``sim4seg cot generate`` arguments for ``manifest``'s ``split`` into ``out``, then ``rest``."""
    return ["cot", "generate", "--manifest", str(manifest), "--split", split, "--out", str(out), *rest]
