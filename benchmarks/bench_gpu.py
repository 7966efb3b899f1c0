"""Sim4Seg at real scale: LLaVA-1.5-7B + SAM ViT-H, randomly initialised at full size in bf16 (nothing downloaded).

The geometry is the published one (``/work/shared/BACKBONES.md`` §1 and §4): CLIP ViT-L/14 at 336 px
(576 image tokens), Llama 4096 × 32 layers (vocab 32064), SAM ViT-H 1280 × 32 layers at 1024 px
(64 × 64 embedding). The tokenizer is the tiny one trained locally (prompts tokenize shorter than with
Llama's; the 576 image tokens dominate the sequence either way). Measured in one run:

* training step (the paper's recipe: LoRA r=8 on q/v, lm_head, embed_tokens, mask decoder and ϕ train;
  AdamW): seconds, samples/s, tokens/s, peak memory, model FLOPs utilisation (MFU: 6 × LLM parameters ×
  tokens per step — the dense-training convention, an upper estimate of the work under LoRA — over the
  GPU's dense bf16 peak), **ours** (SAM encoder batched over the images, one mask-decoder call for all
  masks) against a **per-image reference** written like the released LISA code (SAM encoder per image,
  one decoder call per mask), same weights and batch;
* inference: SAM image encoder ms/image; LVLM prefill ms; greedy decode tokens/s at batch 1 and at m = 8
  against the HBM roofline (every decode step reads all weights once: bandwidth / weight bytes steps/s);
  test-time scaling 8×4 against 1×1 on one image.

``--shrink`` (automatic without CUDA) runs the same code at a shrunk width and depth (2 layers, width 64–128)
with the same token geometry, to prove it works; those figures say nothing about a GPU. Writes
``benchmarks/results/<device>-<date>.json`` with the machine, versions and command.

    python benchmarks/bench_gpu.py                 # on a GPU: full size, bf16 (≤ 8 minutes on one H200)
    python benchmarks/bench_gpu.py --shrink        # anywhere: shrunk, float32 on the CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

# Dense bf16 peak (TFLOP/s) and HBM bandwidth (TB/s) from the vendors' data sheets, by device-name substring.
GPU_SPECS = {"H200": (989.0, 4.8), "H100": (989.0, 3.35), "A100": (312.0, 2.0), "L40S": (362.0, 0.864)}


def _published_sizes() -> dict:
    """The full-size geometry of LLaVA-1.5-7B + SAM ViT-H, from ``sim4seg.model.published`` (one place)."""
    from sim4seg.model import published

    lvlm, sam = published.llava_1_5_7b(), published.sam_vit_h()

    def pick(cfg, keys):
        return {k: getattr(cfg, k) for k in keys}

    return dict(
        clip=pick(
            lvlm.vision_config,
            (
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "image_size",
                "patch_size",
                "projection_dim",
            ),
        ),
        llama=pick(
            lvlm.text_config,
            (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "max_position_embeddings",
                "rms_norm_eps",
            ),
        ),
        sam=pick(
            sam.vision_config,
            (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "global_attn_indexes",
                "mlp_dim",
                "image_size",
                "patch_size",
                "output_channels",
                "window_size",
            ),
        ),
    )


FULL = _published_sizes()
# Same token geometry (336/14 → 576 LVLM tokens; 1024/16 → 64×64 SAM embedding), 2 layers, small widths.
SHRUNK = dict(
    clip=dict(
        FULL["clip"],
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=64,
    ),
    llama=dict(
        FULL["llama"],
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    ),
    sam=dict(
        FULL["sam"], hidden_size=64, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1], mlp_dim=128
    ),
)


def build(sizes: dict, dtype: torch.dtype, device: torch.device):
    """``(model, processor)``: LLaVA + SAM of ``sizes``, random, composed as Sim4Seg with the paper's trainables."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    from sim4seg.data.transforms import SegmenterFrame
    from sim4seg.model.backbones.llava import IMAGE_TOKEN
    from sim4seg.model.compose import compose
    from sim4seg.model.config import Sim4SegConfig, TinySpec
    from sim4seg.model.tiny import build_tiny_tokenizer, tiny_processor

    tok = build_tiny_tokenizer()
    clip = sizes["clip"]
    processor = tiny_processor(tok, TinySpec(image_size=clip["image_size"], patch=clip["patch_size"]))
    n = (clip["image_size"] // clip["patch_size"]) ** 2
    text = LlamaConfig(
        **sizes["llama"],
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    lcfg = LlavaConfig(
        vision_config=CLIPVisionConfig(**clip),
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=n,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    s = sizes["sam"]
    scfg = SamConfig(
        vision_config=SamVisionConfig(**s, num_pos_feats=128),
        prompt_encoder_config=SamPromptEncoderConfig(
            hidden_size=256, image_size=s["image_size"], patch_size=s["patch_size"], mask_input_channels=16
        ),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=256, num_hidden_layers=2, num_attention_heads=8, mlp_dim=2048
        ),
    )
    with torch.device(device):
        lvlm, sam = LlavaForConditionalGeneration(lcfg).to(dtype), SamModel(scfg).to(dtype)
    lvlm.generation_config.eos_token_id = tok.eos_token_id
    lvlm.generation_config.pad_token_id = tok.pad_token_id
    frame = SegmenterFrame(size=sizes["sam"]["image_size"])  # SAM ViT-H's published preprocessing
    model = compose(lvlm, sam, processor, Sim4SegConfig(max_length=1024), sam_frame=frame).to(device, dtype)
    return model, processor


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ---------------------------------------------------------------- the per-image reference (released-code style)


def per_image_encode(self, pixel_values, sam_pixel_values, image_sizes, token_boxes, image_grid_thw=None):
    """As LISA: the LVLM's images batched, SAM's image encoder called once per image (LLaVA: no grid)."""
    from sim4seg.model.sim4seg import ImageEncoding

    feats = self.lvlm.model.get_image_features(pixel_values=pixel_values.to(self.device, self.dtype)).pooler_output
    feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
    sam_emb = torch.cat(
        [
            self.sam.vision_encoder(sam_pixel_values[i : i + 1].to(self.device, self.dtype)).last_hidden_state
            for i in range(len(sam_pixel_values))
        ]
    )
    return ImageEncoding(
        feats,
        sam_emb,
        image_sizes.to(self.device).long(),
        token_boxes.to(self.device).float(),
        segmenter=self.seg_adapter,
    )


def per_mask_decode(self, sam_embeddings, seg_phi, prompt):
    """As LISA: one prompt-encoder + mask-decoder call per [SEG] mask."""
    outs = [
        type(self).decode(
            self, sam_embeddings[i : i + 1], seg_phi[i : i + 1], None if prompt is None else prompt[i : i + 1]
        )
        for i in range(len(sam_embeddings))
    ]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


# ---------------------------------------------------------------- measurements


def train_batch(model, processor, batch_size: int, device):
    from sim4seg.data.dataset import Collator, ExampleEncoder, M3DSDataset
    from sim4seg.data.synthetic import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        synthesize(tmp, 40, seed=0, size_range=(256, 384))
        ds = M3DSDataset(tmp, "train", ExampleEncoder.for_model(model, processor), answer_format="diagnosis")
        batch = Collator(processor.tokenizer.pad_token_id)([ds[i] for i in range(batch_size)])
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items() if k != "meta"}


def measure_training(model, batch, device, repeats: int, peak_tflops: float | None) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    model.train()

    def step():
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    results = {}
    for name, patch in (("ours", False), ("per_image_reference", True)):
        if patch:
            model.encode_image = types.MethodType(per_image_encode, model)
            model.decode = types.MethodType(per_mask_decode, model)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            s = timed(step, device, repeats)
        finally:
            model.__dict__.pop("encode_image", None)
            model.__dict__.pop("decode", None)
        bsz = int(batch["input_ids"].shape[0])
        tokens = int(batch["attention_mask"].sum())
        r = {"step_s": s, "samples_per_s": bsz / s, "tokens_per_s": tokens / s}
        if device.type == "cuda":
            r["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        llm = sum(p.numel() for p in model.lvlm.model.language_model.parameters())
        r["model_tflops_per_step"] = 6 * llm * tokens / 1e12
        r["mfu"] = r["model_tflops_per_step"] / s / peak_tflops if peak_tflops else None
        results[name] = r
    results["speedup_ours_vs_reference"] = results["per_image_reference"]["step_s"] / results["ours"]["step_s"]
    results["batch_size"] = int(batch["input_ids"].shape[0])
    results["tokens_per_step"] = int(batch["attention_mask"].sum())
    results["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return results


@torch.no_grad()
def measure_inference(model, processor, device, repeats: int, new_tokens: int, bandwidth_tbs: float | None) -> dict:
    import numpy as np

    from sim4seg.infer.predictor import Predictor
    from sim4seg.infer.tts import TTSConfig

    model.eval()
    image = (np.random.default_rng(0).random((512, 640, 3)) * 255).astype(np.uint8)
    predictor = Predictor(model, processor, TTSConfig(max_new_tokens=new_tokens))
    sam_px = torch.zeros(1, 3, model.sam_size, model.sam_size, device=device, dtype=model.dtype)
    out = {"sam_encoder_ms_per_image": 1e3 * timed(lambda: model.sam.vision_encoder(sam_px), device, repeats)}
    predictor.set_image(image)
    ids = predictor.prompt_ids("Please segment the lesion in this image and tell me the diagnosis.").to(device)
    mask = torch.ones_like(ids)
    embeds = model.embed(ids, predictor.encoding)
    out["prompt_tokens"] = int(ids.shape[1])
    out["lvlm_prefill_ms"] = 1e3 * timed(lambda: model._hidden(embeds, mask, ids, predictor.encoding), device, repeats)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.lvlm.model.language_model.parameters()) + sum(
        p.numel() * p.element_size() for p in model.lvlm.lm_head.parameters()
    )
    out["llm_weight_bytes"] = weight_bytes
    roofline_steps = bandwidth_tbs * 1e12 / weight_bytes if bandwidth_tbs else None
    for m in (1, 8):
        e, a = embeds.repeat(m, 1, 1), mask.repeat(m, 1)

        def gen(n):
            return model.lvlm.generate(
                inputs_embeds=e, attention_mask=a, max_new_tokens=n, min_new_tokens=n, do_sample=False
            )

        full, one = (
            timed(lambda: gen(new_tokens), device, max(1, repeats // 3)),
            timed(lambda: gen(1), device, max(1, repeats // 3)),
        )
        steps_per_s = (new_tokens - 1) / max(full - one, 1e-9)
        out[f"decode_m{m}"] = {
            "tokens_per_s": m * steps_per_s,
            "steps_per_s": steps_per_s,
            "roofline_tokens_per_s": m * roofline_steps if roofline_steps else None,
            "fraction_of_roofline": steps_per_s / roofline_steps if roofline_steps else None,
        }
    for label, m, n in (("tts_1x1", 1, 1), ("tts_8x4", 8, 4)):
        cfg = TTSConfig(m=m, n=n, max_new_tokens=new_tokens)
        pred = []
        s = timed(
            lambda: pred.append(predictor.predict("Please segment the lesion in this image.", tts=cfg)),
            device,
            max(1, repeats // 3),
        )
        out[label] = {
            "predict_s": s,
            "candidates": pred[-1].tts["candidates"],
            "answers_with_seg": sum("[SEG]" in a for a in pred[-1].tts["answers"]),
        }
    out["tts_8x4_over_1x1"] = out["tts_8x4"]["predict_s"] / out["tts_1x1"]["predict_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shrink", action="store_true", help="shrunk widths/depths (automatic without CUDA)")
    ap.add_argument("--batch-size", type=int, default=4, help="training batch (default 4)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repetitions per figure (median; default 5)")
    ap.add_argument("--new-tokens", type=int, default=32, help="decoded tokens per measurement (default 32)")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/<device>-<date>.json)")
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    shrink = args.shrink or not cuda
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if not cuda:
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    spec = next((v for k, v in GPU_SPECS.items() if cuda and k in name), (None, None))
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model, processor = build(SHRUNK if shrink else FULL, dtype, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{'SHRUNK ' if shrink else ''}LLaVA-1.5-7B + SAM ViT-H geometry: {n_params / 1e9:.3f} B parameters, "
        f"{dtype}, {device} ({name})",
        flush=True,
    )
    batch = train_batch(model, processor, args.batch_size, device)
    training = measure_training(model, batch, device, args.repeats, spec[0] if not shrink else None)
    inference = measure_inference(
        model, processor, device, args.repeats, args.new_tokens, spec[1] if not shrink else None
    )

    import accelerate
    import transformers

    kind = "gpu" if cuda and not shrink else "cpu-shrunk" if not cuda else "gpu-shrunk"
    result = {
        "label": (
            "SHRUNK MODEL (2 layers, small widths, same token geometry): proves the script runs; "
            "these figures say nothing about the full-size model or a GPU"
        )
        if shrink
        else "full size LLaVA-1.5-7B + SAM ViT-H geometry, random weights, bf16",
        "kind": kind,
        "device": name,
        "dtype": str(dtype),
        "parameters": n_params,
        "peak_bf16_tflops": spec[0],
        "hbm_tb_per_s": spec[1],
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": __import__("os").cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "cuda": torch.version.cuda,
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "training": training,
        "inference": inference,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out = (
        Path(args.out)
        if args.out
        else Path(__file__).resolve().parent / "results" / (f"{kind}-{datetime.date.today().isoformat()}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    t, i = training, inference
    print(
        f"training step, batch {t['batch_size']} ({t['tokens_per_step']} tokens, "
        f"{t['trainable_parameters'] / 1e6:.1f} M trainable):"
    )
    for k in ("ours", "per_image_reference"):
        r = t[k]
        extra = f", peak {r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r else ""
        mfu = f", MFU {100 * r['mfu']:.1f} %" if r["mfu"] is not None else ""
        print(
            f"  {k:<20} {r['step_s'] * 1e3:9.1f} ms  {r['samples_per_s']:7.2f} samples/s  "
            f"{r['tokens_per_s']:9.0f} tokens/s{extra}{mfu}"
        )
    print(f"  ours is {t['speedup_ours_vs_reference']:.2f}x the per-image reference")
    print(
        f"inference: SAM encoder {i['sam_encoder_ms_per_image']:.1f} ms/image; LVLM prefill "
        f"({i['prompt_tokens']} tokens) {i['lvlm_prefill_ms']:.1f} ms"
    )
    for m in (1, 8):
        d = i[f"decode_m{m}"]
        roof = (
            f" (HBM roofline {d['roofline_tokens_per_s']:.0f}; {100 * d['fraction_of_roofline']:.0f} %)"
            if d["roofline_tokens_per_s"]
            else " (roofline: n/a on this device)"
        )
        print(f"  decode m={m}: {d['tokens_per_s']:.1f} tokens/s{roof}")
    print(
        f"  TTS 8x4 {i['tts_8x4']['predict_s']:.3f} s vs 1x1 {i['tts_1x1']['predict_s']:.3f} s per query "
        f"({i['tts_8x4_over_1x1']:.2f}x; {i['tts_8x4']['candidates']} candidate masks)"
    )
    print(f"wrote {out} ({result['wall_s']} s)")


if __name__ == "__main__":
    main()
