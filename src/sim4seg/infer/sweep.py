"""τ and test-time-scaling sweeps on a trained model (the paper's Figures 6 and 7).

Each sweep reads every image once: the answers are generated once per image and only the
cheap part is repeated per setting — RVLS2M + SAM's decoder for the τ sweep; the vote over
the first m answers, and the selection among the perturbations j < n, for the TTS sweep
(perturbation θ_j does not depend on n, so the n-sweep is nested). Each row carries a 95 %
bootstrap interval over the test samples (``<metric>_ci``), drawn as error bars.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from sim4seg.data.io import read_mask
from sim4seg.data.schema import load_split
from sim4seg.eval.diagnosis import DiagnosisParser
from sim4seg.eval.evaluate import Evaluator
from sim4seg.eval.stats import bootstrap_ci
from sim4seg.infer import tts

log = logging.getLogger(__name__)

TOPK_SWEEP = (12, 24, 36, 48)
"""Figure 6(a): top-k cells on a 16×16 grid."""
GRID_SWEEP = (8, 16, 32, 64)
"""Figure 6(b): grid sizes with top-36."""


def _images(predictor, root: Path, split: str, limit: int | None, progress: bool, desc: str):
    from tqdm.auto import tqdm

    info, samples = load_split(root, split)
    samples = samples[:limit] if limit is not None else samples
    for s in tqdm(samples, desc=desc, unit="img", disable=not progress, dynamic_ncols=True):
        predictor.set_image(root / s.image)
        ids = predictor.prompt_ids(s.query)
        yield info, s, ids


def sweep_tau(
    predictor,
    root: str | os.PathLike,
    split: str = "test",
    *,
    topks: Sequence[int] = TOPK_SWEEP,
    grids: Sequence[int] = GRID_SWEEP,
    k_for_grid: int = 36,
    limit: int | None = None,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Figure 6: gIoU / cIoU for top-k ∈ ``topks`` (grid 16) and grid g ∈ ``grids`` (top-``k_for_grid``).

    Returns ``(rows for write_tau_sweep, {setting name: metrics summary})``.
    """
    root = Path(root)
    settings = [("topk", k, {"grid": 16, "tau": "topk", "k": k}) for k in topks] + [
        ("grid", g, {"grid": g, "tau": "topk", "k": min(k_for_grid, g * g)}) for g in grids
    ]
    evals: dict[tuple, Evaluator] = {}
    greedy = tts.TTSConfig(max_new_tokens=predictor.tts.max_new_tokens)
    for info, s, ids in _images(predictor, root, split, limit, progress, "τ sweep"):
        gen = tts.sample_answers(predictor.model, ids, torch.ones_like(ids), predictor.encoding, greedy)
        h, w = predictor.image.shape[:2]
        for param, value, over in settings:
            ev = evals.setdefault((param, value), Evaluator(root, info))
            c = tts.candidate_masks(predictor.model, predictor.encoding, gen, 1, use_rvls2m=True, **over)
            ev.add(s, torch.zeros(h, w, dtype=torch.bool).numpy() if c is None else c.masks[0].numpy(), None)
    rows, summaries = [], {}
    for (param, value), ev in evals.items():
        o = ev.summary()
        rows.append(
            {
                "param": param,
                "value": value,
                "giou": o["overall"]["giou"],
                "ciou": o["overall"]["ciou"],
                "giou_ci": bootstrap_ci(ev.rows, "giou"),
                "ciou_ci": bootstrap_ci(ev.rows, "ciou"),
            }
        )
        summaries[f"{param}={value}"] = o
    return rows, summaries


def sweep_tts(
    predictor,
    root: str | os.PathLike,
    split: str = "test",
    *,
    ms: Sequence[int] = (1, 2, 4, 8),
    ns: Sequence[int] = (1, 2, 4, 8),
    selector: str = "consensus",
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Figure 7: Acc for the vote over the first m of max(ms) sampled answers; gIoU / cIoU for the
    ``selector``'s choice among the candidates of perturbations j < n (all max(ms) answers).

    ``selector="oracle"`` reads the ground truth: an upper bound only. Returns ``(rows, summaries)``.
    """
    root = Path(root)
    m_max, n_max = max(ms), max(ns)
    cfg = tts.TTSConfig(
        m=m_max,
        n=n_max,
        selector=selector,
        seed=seed,
        greedy_first=False,
        temperature=predictor.tts.temperature,
        top_p=predictor.tts.top_p,
        max_new_tokens=predictor.tts.max_new_tokens,
    )
    evals: dict[tuple, Evaluator] = {}
    parser = None
    for info, s, ids in _images(predictor, root, split, limit, progress, "TTS sweep"):
        parser = parser or DiagnosisParser(info.subsets)
        model = predictor.model
        gen = tts.sample_answers(model, ids, torch.ones_like(ids), predictor.encoding, cfg)
        answers = [tts._clean(a, predictor.tokenizer) for a in predictor.tokenizer.batch_decode(gen.sequences)]
        labels = [parser.label(a, s.subset) for a in answers]
        for m in ms:
            vote = tts.vote_diagnosis(labels[:m])
            best = next((i for i, lb in enumerate(labels[:m]) if lb is not None and lb == vote.label), 0)
            evals.setdefault(("m", m), Evaluator(root, info)).add(s, None, answers[best])
        c = tts.candidate_masks(model, predictor.encoding, gen, n_max, seed=seed, decode_batch=cfg.decode_batch)
        gt = read_mask(root / s.mask) if tts.SELECTORS[selector].needs_gt else None
        h, w = predictor.image.shape[:2]
        for n in ns:
            if c is None:
                mask = torch.zeros(h, w, dtype=torch.bool)
            else:
                keep = torch.tensor([j < n for j in c.perturbation])
                mask, _ = tts.select(selector, c.masks[keep], gt=gt, pred_iou=c.pred_iou[keep])
            evals.setdefault(("n", n), Evaluator(root, info)).add(s, mask.numpy(), None)
    rows, summaries = [], {}
    for (param, value), ev in evals.items():
        o = ev.summary()["overall"]
        row = {"param": param, "value": value}
        keys = ("acc",) if param == "m" else ("giou", "ciou")
        row.update({k: o[k] for k in keys})
        row.update({f"{k}_ci": bootstrap_ci(ev.rows, k) for k in keys})
        rows.append(row)
        summaries[f"{param}={value}"] = ev.summary()
    return rows, summaries
