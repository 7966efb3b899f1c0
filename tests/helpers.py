"""A tiny Sim4Seg taught (in a few seconds) to answer ``It is [SEG]. ... Diagnosis: <label>.``, saved once.

Inference tests need a model that produces [SEG] and an EOS; a randomly initialised one does
neither. Overfitting the tiny model's text head on the synthetic M3DS's diagnosis answers for a
few dozen steps is enough — the masks stay poor, which these tests do not judge.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sim4seg.data.dataset import Collator, ExampleEncoder, M3DSDataset

_CACHE: dict[str, Path] = {}
SPEC = dict(image_size=32, patch=8, vision_hidden=32, llm_hidden=64, llm_layers=2, heads=4, sam_image_size=32,
            sam_patch=8, sam_hidden=32)


def trained_checkpoint(root: Path, out: Path, steps: int = 60) -> Path:
    """Train the tiny model on ``root``'s train split for ``steps`` and save it to ``out`` (once per session)."""
    key = str(root)
    if key in _CACHE:
        return _CACHE[key]
    from sim4seg.model import checkpoint, tiny
    from sim4seg.model.config import Sim4SegConfig, TrainableConfig

    cfg = Sim4SegConfig(max_length=128, trainable=TrainableConfig(lora=False, llm=True, vision_tower=True,
                                                                  mm_projector=True, sam_encoder=True))
    model, processor = tiny.build_tiny(cfg, spec=tiny.TinySpec(**SPEC), seed=0)
    ds = M3DSDataset(root, "train", ExampleEncoder.for_model(model, processor), answer_format="diagnosis")
    collate = Collator(processor.tokenizer.pad_token_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            idx = torch.randint(len(ds), (8,), generator=g).tolist()
            loss = model(**collate([ds[i] for i in idx])).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    checkpoint.save(model, processor, out)
    _CACHE[key] = out
    return out
