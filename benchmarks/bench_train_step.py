"""One training step of the tiny Sim4Seg (``configs/demo.yaml``: every part trains), split into LVLM / SAM /
RVLS2M / optimizer time, as shares.

The full step (teacher-forced forward, backward, AdamW step) is timed as a whole. Its parts are
timed alone on the same batch, each forward + backward of its own share of the loss:

* LVLM — CLIP vision tower + projector + Llama + lm_head, text cross-entropy;
* SAM — image encoder + prompt encoder + mask decoder + upsampling, BCE + Dice (ϕ(E_seg) and the
  region prompt given, detached);
* RVLS2M — ϕ over the image tokens, similarity, softmax, grid pooling, top-k, SAM prompt frame
  (forward only: the indicator passes no gradient, as in the model);
* optimizer — ``AdamW.step`` + ``zero_grad`` over all trainable weights.

The parts' sum is printed beside the full step (the difference is glue: embedding merge,
ϕ(E_seg), loss bookkeeping). Run: ``python benchmarks/bench_train_step.py``. One intra-op thread.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from sim4seg.data.dataset import Collator, ExampleEncoder, M3DSDataset
from sim4seg.data.synthetic import synthesize
from sim4seg.model import losses
from sim4seg.model.sim4seg import ImageEncoding
from sim4seg.train.recipe import load_config
from sim4seg.train.task import build_model

REPEATS = 15


def timed(fn) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    recipe = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    cfg = load_config(recipe)
    model, processor = build_model(cfg)
    model.train()
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(tmp, 60, seed=0, subsets=cfg.data.subsets, size_range=(64, 96))
        ds = M3DSDataset(tmp, "train", ExampleEncoder.for_model(model, processor), answer_format="diagnosis")
        batch = Collator(processor.tokenizer.pad_token_id)([ds[i] for i in range(cfg.optim.batch_size)])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    b = {k: v for k, v in batch.items() if k != "meta"}

    def full():
        out = model(**b)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with torch.no_grad():
        enc = model.encode_image(b["pixel_values"], b["sam_pixel_values"], b["image_sizes"], b["token_boxes"])
        hidden = model._hidden(model.embed(b["input_ids"], enc), b["attention_mask"], b["input_ids"], enc)
        image_hidden = model.image_hidden(hidden, b["input_ids"])
        is_seg = b["input_ids"] == model.seg_token_id
        bi, pos = is_seg.nonzero(as_tuple=True)
        seg_phi = model.phi(hidden[bi, pos - 1])
        _, region = model.region(model.phi(image_hidden)[bi], seg_phi, enc.image_sizes[bi], enc.token_boxes[bi])
        prompt = model.prompt(region, enc.image_sizes[bi], enc.token_boxes[bi])

    def lvlm():
        feats = model.lvlm.model.get_image_features(pixel_values=b["pixel_values"]).pooler_output
        feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
        e = ImageEncoding(feats, enc.sam_embeddings, enc.image_sizes, enc.token_boxes, segmenter=enc.segmenter)
        h = model._hidden(model.embed(b["input_ids"], e), b["attention_mask"], b["input_ids"], e)
        losses.text_loss(model.lvlm.lm_head(h), b["labels"]).backward()
        opt.zero_grad(set_to_none=True)

    def sam():
        emb = model.sam.vision_encoder(b["sam_pixel_values"]).last_hidden_state[bi]
        low, _ = model.decode(emb, seg_phi, prompt)
        masks = model.postprocess(low, enc.image_sizes[bi])
        loss = sum(
            2.0 * losses.bce_loss(m, b["masks"][i]) + 0.5 * losses.dice_loss(m, b["masks"][i])
            for m, i in zip(masks, bi.tolist())
        )
        loss.backward()
        opt.zero_grad(set_to_none=True)

    def rvls2m():
        _, reg = model.region(model.phi(image_hidden)[bi], seg_phi, enc.image_sizes[bi], enc.token_boxes[bi])
        model.prompt(reg, enc.image_sizes[bi], enc.token_boxes[bi])

    def optimizer():
        opt.step()
        opt.zero_grad(set_to_none=True)

    def with_grads():
        model(**b).loss.backward()

    t_full = timed(full)
    parts = {"LVLM": timed(lvlm), "SAM": timed(sam), "RVLS2M": timed(rvls2m)}
    with_grads()
    ts = []
    for _ in range(REPEATS):
        with_grads()
        t0 = time.perf_counter()
        opt.step()
        ts.append(time.perf_counter() - t0)
        opt.zero_grad(set_to_none=True)
    parts["optimizer"] = statistics.median(ts)
    total = sum(parts.values())
    n_params = sum(p.numel() for p in params)
    print(
        f"tiny Sim4Seg (configs/demo.yaml, {n_params} trainable parameters), batch {cfg.optim.batch_size}, "
        f"median of {REPEATS}:"
    )
    print(f"  full step (forward + backward + AdamW): {1000 * t_full:7.1f} ms")
    for k, v in parts.items():
        print(f"  {k:<9} {1000 * v:7.1f} ms  share {100 * v / total:5.1f}%")
    print(f"  parts sum {1000 * total:7.1f} ms = {total / t_full:4.2f}× the full step (the rest: glue)")


if __name__ == "__main__":
    main()
