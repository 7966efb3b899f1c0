"""An ESTIMATE of the memory per GPU of model states under DDP and DeepSpeed ZeRO-1/2/3 for Sim4Seg-7B
(LLaVA-1.5-7B + SAM ViT-H, the paper's trainables: LoRA r=8 on q/v, lm_head, embed_tokens, mask decoder, ϕ).

Parameters are counted on the ``meta`` device (nothing allocated, nothing downloaded) from the published
geometry (``bench_gpu.FULL``). With Ψ all parameters, Ψ_t the trainable ones, N GPUs, bf16 weights and
AdamW with fp32 master weights (the ZeRO paper's accounting, bytes):

    weights 2Ψ   gradients 2Ψ_t   optimizer states 12Ψ_t (fp32 master 4 + Adam m 4 + v 4)
    DDP     2Ψ + 2Ψ_t + 12Ψ_t
    ZeRO-1  2Ψ + 2Ψ_t + 12Ψ_t / N
    ZeRO-2  2Ψ + (2Ψ_t + 12Ψ_t) / N
    ZeRO-3  (2Ψ + 2Ψ_t + 12Ψ_t) / N

Activations (they dominate at the paper's micro-batch with 576 image tokens; gradient checkpointing
cuts them), communication buckets, fragmentation and the CUDA context come on top: not estimated.

    python benchmarks/zero_memory.py [--gpus 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import FULL, build  # noqa: E402


def per_gpu_gib(psi: int, psi_t: int, n: int) -> dict[str, float]:
    w, g, o = 2 * psi, 2 * psi_t, 12 * psi_t
    gib = 2**30
    return {
        "DDP": (w + g + o) / gib,
        "ZeRO-1": (w + g + o / n) / gib,
        "ZeRO-2": (w + (g + o) / n) / gib,
        "ZeRO-3": (w + g + o) / n / gib,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 8, 16])
    args = ap.parse_args()
    model, _ = build(FULL, torch.bfloat16, torch.device("meta"))
    psi = sum(p.numel() for p in model.parameters())
    psi_t = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"Sim4Seg-7B (LLaVA-1.5-7B + SAM ViT-H): {psi / 1e9:.3f} B parameters, {psi_t / 1e6:.1f} M trainable")
    print("ESTIMATE of model states per GPU (GiB; activations not included):")
    print(f"{'GPUs':>5} " + " ".join(f"{k:>8}" for k in ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3")))
    for n in args.gpus:
        print(f"{n:>5} " + " ".join(f"{v:8.1f}" for v in per_gpu_gib(psi, psi_t, n).values()))


if __name__ == "__main__":
    main()
