"""Test-time scaling (paper §3.3), the model-independent parts.

* ``perturb``: n perturbations θ_j of a batch of RVLS2M region masks on the ``g×g`` grid
  (Eq. 12's ``g(M_region, θ_j)``): k jitter, one-cell shift, dilation, erosion, cell
  dropout. Seeded and deterministic; ``j = 0`` is the unperturbed mask and perturbation
  ``j`` does not depend on ``n``.
* Mask selectors over the ``m×n`` candidates of one image: ``oracle`` (Eq. 13 — uses the
  ground truth, so it is only an *upper bound*, never a clinical result), and the
  ground-truth-free ``consensus``, ``score`` and ``vote``.
* ``vote_diagnosis``: majority vote over the m parsed diagnoses, with the agreement as
  its confidence.
* ``disagreement``: the per-pixel uncertainty map — the fraction of the m×n candidates that
  disagree with the selected mask at each pixel (0: every candidate agrees).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sim4seg.eval import metrics
from sim4seg.model.rvls2m import top_indices

PERTURBATIONS: tuple[str, ...] = ("k_jitter", "shift", "dilate", "erode", "dropout")
"""Kinds of θ_j, applied in this order cyclically for j = 1, 2, ..."""

DEFAULT_MAX_NEW_TOKENS = 768
"""Fits the CoT answer format (``It is [SEG]. <reasoning> Diagnosis: <label>.``): the CoT generator lets
the assistant write up to 768 tokens (``cot.pipeline.GenerationConfig.max_tokens``). The former 64
cut every chain of thought before its ``Diagnosis:`` line."""

# One-cell shifts (dy, dx): down, up, right, left.
_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _generator(seed: int, j: int) -> torch.Generator:
    digest = hashlib.sha256(f"sim4seg-tts:{int(seed)}:{int(j)}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def topk_cells(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The ``k[b]`` best cells of each item: ``(B, gh, gw)`` scores, ``(B,)`` int → ``(B, gh, gw)`` bool.

    The flattened grid's best cells, ties broken by index, as RVLS2M's ``region_mask(tau="topk")`` does.
    """
    b, gh, gw = scores.shape
    k = k.to(scores.device).clamp(1, gh * gw)
    flat = scores.reshape(b, gh * gw)
    idx = top_indices(flat, int(k.max()))  # (B, kmax)
    keep = torch.arange(idx.shape[1], device=scores.device)[None, :] < k[:, None]  # (B, kmax)
    out = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, keep)
    return out.reshape(b, gh, gw)


def shift(mask: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Move item ``b`` by ``(dy[b], dx[b])`` cells (each in {-1, 0, 1}); cells leaving the grid are dropped.

    ``(B, gh, gw)`` bool → ``(B, gh, gw)`` bool.
    """
    padded = F.pad(mask[:, None].float(), (1, 1, 1, 1))[:, 0]  # (B, gh+2, gw+2)
    b, gh, gw = mask.shape
    rows = torch.arange(gh, device=mask.device)[None, :] + 1 - dy.to(mask.device)[:, None]  # (B, gh)
    cols = torch.arange(gw, device=mask.device)[None, :] + 1 - dx.to(mask.device)[:, None]  # (B, gw)
    bi = torch.arange(b, device=mask.device)[:, None, None]
    return padded[bi, rows[:, :, None], cols[:, None, :]] > 0.5


def dilate(mask: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """3×3 max-pool dilation, ``steps`` times: ``(B, gh, gw)`` bool → same."""
    x = mask[:, None].float()
    for _ in range(steps):
        x = F.max_pool2d(x, 3, stride=1, padding=1)
    return x[:, 0] > 0.5


def erode(mask: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """3×3 erosion (min-pool; outside the grid does not erode), ``steps`` times."""
    x = mask[:, None].float()
    for _ in range(steps):
        x = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return x[:, 0] > 0.5


def _keep_one(out: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Where a perturbation emptied a non-empty mask, keep the original's best-scoring cell."""
    b, gh, gw = mask.shape
    flat = scores.reshape(b, -1).masked_fill(~mask.reshape(b, -1), float("-inf"))
    best = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.argmax(1, keepdim=True), True)
    lost = (~out.reshape(b, -1).any(1)) & mask.reshape(b, -1).any(1)
    return torch.where(lost[:, None, None], best.reshape(b, gh, gw), out)


def perturb(
    scores: torch.Tensor,
    mask: torch.Tensor,
    n: int,
    *,
    k: int,
    seed: int,
    kinds: Sequence[str] = PERTURBATIONS,
    jitter: int | None = None,
    drop: float = 0.25,
) -> torch.Tensor:
    """n region masks per item: ``(B, gh, gw)`` scores and bool mask → ``(n, B, gh, gw)`` bool.

    ``out[0]`` is ``mask``. For ``j >= 1`` the kind is ``kinds[(j-1) % len(kinds)]`` and its
    random draws come from ``(seed, j)`` alone (independent of ``n`` and of the batch's device):

    * ``k_jitter``: the top-``(k+δ)`` cells of ``scores``, δ uniform in ±``jitter`` without 0
      (default ``jitter = max(1, k // 4)``), per item;
    * ``shift``: the mask moved by exactly one cell up/down/left/right (random per item);
    * ``dilate`` / ``erode``: 3×3 max-pool dilation / erosion, repeated ``c + 1`` times in
      the kinds' c-th cycle so that later cycles differ;
    * ``dropout``: each selected cell dropped with probability ``drop``.

    A perturbation never empties a non-empty mask: the best-scoring original cell is kept.
    """
    if scores.shape != mask.shape or scores.dim() != 3:
        raise ValueError(f"scores and mask must both be (B, gh, gw); got {tuple(scores.shape)} and {tuple(mask.shape)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    bad = [kind for kind in kinds if kind not in PERTURBATIONS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty list of {PERTURBATIONS}, got {list(kinds)}")
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    mask = mask.bool()
    b, gh, gw = mask.shape
    dev = mask.device
    jit = max(1, k // 4) if jitter is None else int(jitter)
    if jit < 1:
        raise ValueError(f"jitter must be >= 1, got {jitter}")
    outs = [mask]
    for j in range(1, n):
        kind = kinds[(j - 1) % len(kinds)]
        cycle = (j - 1) // len(kinds)
        gen = _generator(seed, j)
        if kind == "k_jitter":
            mag = torch.randint(1, jit + 1, (b,), generator=gen)
            sign = torch.randint(0, 2, (b,), generator=gen) * 2 - 1
            out = topk_cells(scores, (k + sign * mag).to(dev))
        elif kind == "shift":
            d = torch.tensor(_SHIFTS)[torch.randint(0, len(_SHIFTS), (b,), generator=gen)]  # (B, 2)
            out = shift(mask, d[:, 0], d[:, 1])
        elif kind == "dilate":
            out = dilate(mask, cycle + 1)
        elif kind == "erode":
            out = erode(mask, cycle + 1)
        else:
            out = mask & (torch.rand((b, gh, gw), generator=gen) >= drop).to(dev)
        outs.append(_keep_one(out, mask, scores))
    return torch.stack(outs)


# ---------------------------------------------------------------- mask selectors


def _as_bool(x) -> torch.Tensor:
    """A torch bool tensor from a tensor or an array-like (no copy for a bool tensor)."""
    return (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))).bool()


def _flat(cands) -> torch.Tensor:
    c = _as_bool(cands)
    if c.dim() != 3 or c.shape[0] < 1:
        raise ValueError(f"candidates must be (N, H, W) with N >= 1, got {tuple(c.shape)}")
    return c.reshape(c.shape[0], -1)


def _ious(inter: torch.Tensor, area_a: torch.Tensor, area_b: torch.Tensor) -> torch.Tensor:
    union = area_a + area_b - inter
    return torch.from_numpy(metrics.iou(inter.cpu().numpy(), union.cpu().numpy())).to(inter.device)


def pairwise_iou(cands) -> torch.Tensor:
    """IoU of every pair of candidates: ``(N, H, W)`` bool → ``(N, N)`` float64 (both empty = 1)."""
    c = _flat(cands)
    dtype = torch.float32 if c.shape[1] < 2**24 else torch.float64  # exact integer counts
    x = c.to(dtype)
    inter = (x @ x.T).double()
    area = c.sum(1).double()
    return _ious(inter, area[:, None], area[None, :])


def iou_to(cands, gt) -> torch.Tensor:
    """IoU of each candidate with ``gt``: ``(N, H, W)``, ``(H, W)`` → ``(N,)`` float64."""
    c = _flat(cands)
    g = _as_bool(gt).reshape(-1).to(c.device)
    if g.numel() != c.shape[1]:
        raise ValueError(f"ground truth has {g.numel()} pixels, candidates have {c.shape[1]}")
    inter = (c & g).sum(1).double()
    return _ious(inter, c.sum(1).double(), g.sum().double())


def select_oracle(cands, gt) -> int:
    """UPPER BOUND ONLY — uses the ground truth. Eq. 13 maximises the mean of gIoU and cIoU;
    for one sample both equal its IoU, so this is the candidate of highest IoU with ``gt``
    (first on ties)."""
    return int(iou_to(cands, gt).argmax())


def select_consensus(cands) -> int:
    """The medoid: highest mean IoU to the *other* candidates (first on ties; 0 if N = 1)."""
    p = pairwise_iou(cands)
    n = p.shape[0]
    if n == 1:
        return 0
    return int(((p.sum(1) - p.diagonal()) / (n - 1)).argmax())


def select_score(cands, pred_iou) -> int:
    """The candidate with the highest predicted IoU (SAM's ``iou_scores``; first on ties)."""
    n = _flat(cands).shape[0]
    s = torch.as_tensor(np.asarray(pred_iou) if not isinstance(pred_iou, torch.Tensor) else pred_iou).reshape(-1)
    if s.numel() != n:
        raise ValueError(f"pred_iou has {s.numel()} values for {n} candidates")
    return int(s.double().argmax())


def pixel_vote(cands) -> torch.Tensor:
    """Pixel-wise strict majority of the candidates: ``(N, H, W)`` → ``(H, W)`` bool (> N/2 votes)."""
    c = _as_bool(cands)
    if c.dim() != 3 or c.shape[0] < 1:
        raise ValueError(f"candidates must be (N, H, W) with N >= 1, got {tuple(c.shape)}")
    return c.sum(0) * 2 > c.shape[0]


@dataclass(frozen=True)
class Selector:
    """A rule choosing one mask among the m×n candidates."""

    choose: Callable[..., tuple[torch.Tensor, int | None]]
    """``choose(cands (N, H, W) bool, *, gt, pred_iou) -> (mask (H, W) bool, index or None)``."""
    needs_gt: bool = False
    """True for rules that read the ground truth: their results are an upper bound, never a method."""


SELECTORS: dict[str, Selector] = {}
"""The mask selectors by name (``TTSConfig.selector``, ``--selector``); add one with ``register_selector``."""


def register_selector(name: str, *, needs_gt: bool = False):
    """Decorator: register ``f(cands, *, gt, pred_iou) -> (mask, index | None)`` as selector ``name``."""

    def add(f):
        SELECTORS[name] = Selector(f, needs_gt)
        return f

    return add


@register_selector("oracle", needs_gt=True)
def _oracle(c, *, gt=None, pred_iou=None):
    if gt is None:
        raise ValueError("the oracle selector needs the ground truth (it is an upper bound only)")
    i = select_oracle(c, gt)
    return c[i], i


@register_selector("consensus")
def _consensus(c, *, gt=None, pred_iou=None):
    i = select_consensus(c)
    return c[i], i


@register_selector("score")
def _score(c, *, gt=None, pred_iou=None):
    if pred_iou is None:
        raise ValueError("the score selector needs the predicted IoUs")
    i = select_score(c, pred_iou)
    return c[i], i


@register_selector("vote")
def _vote(c, *, gt=None, pred_iou=None):
    return pixel_vote(c), None


def gt_free_selectors() -> list[str]:
    """The selectors a clinic can use: those that do not read the ground truth."""
    return [name for name, s in SELECTORS.items() if not s.needs_gt]


def select(name: str, cands, *, gt=None, pred_iou=None) -> tuple[torch.Tensor, int | None]:
    """Apply selector ``name`` → ``(mask (H, W) bool, index of the chosen candidate or None for vote)``."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; choose one of {', '.join(SELECTORS)}")
    return SELECTORS[name].choose(_as_bool(cands), gt=gt, pred_iou=pred_iou)


def disagreement(cands, mask) -> torch.Tensor:
    """Per-pixel uncertainty: the fraction of candidates that disagree with the selected ``mask``.

    ``(N, H, W)`` candidates, ``(H, W)`` mask → ``(H, W)`` float32 in [0, 1].
    """
    c = _as_bool(cands)
    if c.dim() != 3 or c.shape[0] < 1:
        raise ValueError(f"candidates must be (N, H, W) with N >= 1, got {tuple(c.shape)}")
    m = _as_bool(mask).to(c.device)
    if m.shape != c.shape[1:]:
        raise ValueError(f"mask is {tuple(m.shape)} but the candidates are {tuple(c.shape[1:])}")
    return (c != m).sum(0).float() / c.shape[0]


# ---------------------------------------------------------------- diagnosis vote


@dataclass(frozen=True)
class DiagnosisVote:
    label: str | None
    """Most frequent parsed label (``None`` if no answer parsed)."""
    confidence: float
    """Share of the m answers that agree with ``label`` (unparseable answers count in m)."""
    counts: dict[str, int]
    """Votes per label, in order of first occurrence."""


def vote_diagnosis(labels: Sequence[str | None]) -> DiagnosisVote:
    """Majority vote over m parsed labels (``None`` = unparseable, never wins); ties → first seen."""
    if not labels:
        raise ValueError("vote_diagnosis needs at least one answer")
    counts = Counter(label for label in labels if label is not None)
    if not counts:
        return DiagnosisVote(None, 0.0, {})
    order = {label: i for i, label in reversed(list(enumerate(labels))) if label is not None}
    ordered = dict(sorted(counts.items(), key=lambda kv: order[kv[0]]))
    best = max(ordered, key=lambda label: (ordered[label], -order[label]))
    return DiagnosisVote(best, ordered[best] / len(labels), ordered)


# ---------------------------------------------------------------- the run (Fig. 4)


@dataclass
class TTSConfig:
    """m sampled answers × n region-mask perturbations; ``m = n = 1`` is plain greedy inference."""

    m: int = 1
    """Answers (CoT paths) per query: one batched ``generate`` with ``num_return_sequences=m``."""
    n: int = 1
    """Region-mask perturbations per answer (``j = 0`` is the unperturbed mask)."""
    temperature: float = 0.7
    """Sampling temperature of the m answers (m > 1)."""
    top_p: float = 0.9
    """Nucleus sampling mass of the m answers (m > 1)."""
    greedy_first: bool = True
    """With m = 1, answer greedily (no sampling) — the paper's single-path inference."""
    selector: str = "consensus"
    """Mask selector over the m×n candidates: ``consensus``, ``score``, ``vote`` or ``oracle`` (reads the
    ground truth: an upper bound only)."""
    seed: int = 0
    """Seeds the sampling and the perturbations θ_j."""
    kinds: tuple[str, ...] = PERTURBATIONS
    decode_batch: int = 64
    """Candidate masks decoded per SAM mask-decoder call."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Generation budget per answer; an answer that reaches it without EOS is reported truncated."""

    def __post_init__(self) -> None:
        if self.m < 1 or self.n < 1:
            raise ValueError(f"m and n must be >= 1, got m={self.m}, n={self.n}")
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {', '.join(SELECTORS)}, got {self.selector!r}")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        if self.decode_batch < 1 or self.max_new_tokens < 1:
            raise ValueError("decode_batch and max_new_tokens must be >= 1")

    @property
    def upper_bound(self) -> bool:
        """True when the mask was chosen with the ground truth (``oracle``)."""
        return SELECTORS[self.selector].needs_gt


@dataclass
class Candidates:
    """The m×n candidate masks of one image (N = answers with [SEG] × n; a candidate is the union over its answer's [SEG]s)."""

    masks: torch.Tensor
    """(N, H, W) bool at the original image size."""
    pred_iou: torch.Tensor
    """(N,) SAM's predicted IoU."""
    path: list[int]
    """Answer index i of each candidate."""
    perturbation: list[int]
    """Perturbation index j of each candidate (0: unperturbed)."""
    region_cells: list[int]
    """Selected RVLS2M cells of each candidate's prompt(s), summed over its answer's [SEG]s (0 with RVLS2M off)."""


@dataclass
class TTSResult:
    answers: list[str]
    labels: list[str | None]
    diagnosis: DiagnosisVote
    answer: str
    """The answer reported: the first whose label won the vote (else the first answer)."""
    best: int
    """Index of the reported answer."""
    seg: bool
    """At least one answer produced [SEG]."""
    mask: torch.Tensor
    """(H, W) bool; empty when no answer produced [SEG]."""
    chosen: int | None
    """Index of the chosen candidate (``None`` for ``vote`` or without [SEG])."""
    candidates: Candidates | None
    timings: dict[str, float]
    truncated: list[bool]
    """Per answer: it reached ``max_new_tokens`` without EOS (its ``Diagnosis:`` line may be missing)."""
    uncertainty: torch.Tensor | None = None
    """(H, W) float32: the fraction of the candidates that disagree with ``mask`` at each pixel
    (``disagreement``); ``None`` with fewer than two candidates (nothing to disagree with)."""

    @property
    def confidence(self) -> float | None:
        """The diagnosis agreement over the m answers; ``None`` for a single answer (m = 1), whose
        "agreement" of 1.0 would say nothing."""
        return self.diagnosis.confidence if len(self.answers) > 1 else None

    @property
    def uncertainty_mean(self) -> float | None:
        """Mean of ``uncertainty`` over the image (``None`` without a map)."""
        return None if self.uncertainty is None else float(self.uncertainty.mean())

    def details(self, config: TTSConfig) -> dict:
        """JSON-ready record of the run (what ``predict`` writes)."""
        c = self.candidates
        return {
            "m": config.m,
            "n": config.n,
            "selector": config.selector,
            "upper_bound": config.upper_bound,
            "sampling": None
            if config.m == 1 and config.greedy_first
            else {"temperature": config.temperature, "top_p": config.top_p, "seed": config.seed},
            "answers": self.answers,
            "labels": self.labels,
            "truncated": self.truncated,
            "vote": {"label": self.diagnosis.label, "confidence": self.confidence, "counts": self.diagnosis.counts},
            "uncertainty_mean": self.uncertainty_mean,
            "candidates": 0 if c is None else len(c.path),
            "chosen": None
            if self.chosen is None or c is None
            else {
                "index": self.chosen,
                "path": c.path[self.chosen],
                "perturbation": c.perturbation[self.chosen],
                "pred_iou": float(c.pred_iou[self.chosen]),
            },
        }


def sample_answers(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, encoding, config: TTSConfig):
    """One ``generate`` call: m answers to one prompt ``(1, T)`` → the model's ``Generation`` (N = m).

    The prompt is prefilled once and its KV cache shared by the m sampled continuations.
    """
    if config.m == 1 and config.greedy_first:
        return model.generate(input_ids, attention_mask, encoding, max_new_tokens=config.max_new_tokens)
    torch.manual_seed(config.seed)
    return model.generate(
        input_ids,
        attention_mask,
        encoding,
        max_new_tokens=config.max_new_tokens,
        do_sample=True,
        temperature=config.temperature,
        top_p=config.top_p,
        num_return_sequences=config.m,
        share_prefill=True,
    )


@torch.no_grad()
def candidate_masks(
    model,
    encoding,
    gen,
    n: int,
    *,
    seed: int = 0,
    kinds: Sequence[str] = PERTURBATIONS,
    decode_batch: int = 64,
    use_rvls2m: bool | None = None,
    **overrides,
) -> Candidates | None:
    """Eq. 12: n perturbations of each answer's region mask, decoded against the cached SAM embedding.

    ``encoding`` holds one image; ``gen`` its m answers. **Every** [SEG] of an answer is segmented:
    each [SEG] gets its own RVLS2M region and perturbations θ_j, and the answer's candidate for θ_j
    is the **union** of its [SEG]s' masks (an answer's [SEG]s name parts of one finding, as the
    training data ORs a sample's instances into one mask); its predicted IoU is the mean of theirs
    and its cell count their sum. Returns ``None`` when no answer produced [SEG]. With RVLS2M off
    there is nothing to perturb and each answer gives one candidate.
    """
    if use_rvls2m is None:
        use_rvls2m = model.config.rvls2m.infer
    paths = [i for i, h in enumerate(gen.seg_hidden) if h.shape[0] > 0]
    if not paths:
        return None
    owner = [a for a, i in enumerate(paths) for _ in range(gen.seg_hidden[i].shape[0])]  # (S,) answer of each [SEG]
    seg_phi = model.phi(torch.cat([gen.seg_hidden[i] for i in paths]))  # (S, D)
    m_, s_ = len(paths), len(owner)
    size, box = encoding.image_sizes[:1], encoding.token_boxes[:1]
    grids = None if encoding.token_grids is None else encoding.token_grids[:1]  # dynamic resolution: its own grid
    if use_rvls2m:
        image_phi = model.phi(gen.image_hidden[:1]).expand(s_, -1, -1)  # (S, n_tok, D)
        scores, region = model.region(
            image_phi,
            seg_phi,
            size.expand(s_, -1),
            box.expand(s_, -1),
            None if grids is None else grids.expand(s_, -1),
            **overrides,
        )
        c = {**model.config.rvls2m.__dict__, **overrides}
        k = c["k"] if c["tau"] == "topk" else max(1, int(region.flatten(1).sum(1).float().mean()))
        regions = perturb(scores, region, n, k=k, seed=seed, kinds=kinds).flatten(0, 1)  # (n·S, g, g), j-major
        big = len(regions)
        prompts = model.prompt(
            regions,
            size.expand(big, -1),
            box.expand(big, -1),
            overrides.get("pool"),
            gen.image_hidden.shape[1],
            None if grids is None else grids.expand(big, -1),
        )  # (n·S, 1, P, P)
        seg_cells = regions.flatten(1).sum(1).tolist()
        n_eff = n
    else:
        prompts, big, seg_cells, n_eff = None, s_, [0] * s_, 1
    phi_all = seg_phi.repeat(n_eff, 1)  # (big, D), j-major
    emb = encoding.segmenter_embeddings(torch.zeros(1, dtype=torch.long, device=encoding.image_sizes.device))
    lows, ious = [], []
    for st in range(0, big, decode_batch):
        e = min(big, st + decode_batch)
        low, iou = model.decode(
            encoding.segmenter.expand(emb, e - st), phi_all[st:e], None if prompts is None else prompts[st:e]
        )
        lows.append(low)
        ious.append(iou)
    seg_masks = _upscale(model, torch.cat(lows), tuple(size[0].tolist()))  # (n·S, H, W)
    seg_iou = torch.cat(ious).float()
    if s_ == m_:  # one [SEG] per answer
        masks, pred_iou, cells = seg_masks, seg_iou, seg_cells
    else:  # union per (j, answer)
        groups = [[s for s in range(s_) if owner[s] == a] for a in range(m_)]
        rows = [[j * s_ + s for s in g] for j in range(n_eff) for g in groups]
        masks = torch.stack([seg_masks[r].any(0) for r in rows])
        pred_iou = torch.stack([seg_iou[r].mean() for r in rows])
        cells = [sum(seg_cells[x] for x in r) for r in rows]
    path = [paths[a] for _ in range(n_eff) for a in range(m_)]
    pert = [j for j in range(n_eff) for _ in range(m_)]
    return Candidates(masks, pred_iou, path, pert, [int(x) for x in cells])


def _upscale(model, low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h', w') low-res logits of one image → (N, H, W) bool, in chunks (bounded memory)."""
    out = []
    sizes = torch.tensor([size], device=low.device)
    for s in range(0, len(low), 16):
        chunk = low[s : s + 16]
        out.append(torch.stack(model.postprocess(chunk, sizes.expand(len(chunk), -1))) > 0)
    return torch.cat(out)


def run(
    model,
    tokenizer,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    encoding,
    config: TTSConfig,
    *,
    parse=None,
    gt=None,
    use_rvls2m: bool | None = None,
    **overrides,
) -> TTSResult:
    """The full test-time-scaling run on one encoded image and one prompt ``(1, T)``.

    ``parse(answer) -> label | None`` reads a diagnosis (default: the ``Diagnosis:`` line); ``gt``
    (H, W) is needed only by the ``oracle`` selector.
    """
    import time

    t0 = time.perf_counter()
    gen = sample_answers(model, input_ids, attention_mask, encoding, config)
    return finish(
        model,
        tokenizer,
        gen,
        encoding,
        config,
        parse=parse,
        gt=gt,
        use_rvls2m=use_rvls2m,
        generate_s=time.perf_counter() - t0,
        **overrides,
    )


def split_generation(gen) -> list:
    """A batched ``Generation`` of B images → B ``Generation`` of one image each (their answers in order)."""
    out = []
    for b in range(gen.image_hidden.shape[0]):
        idx = (gen.image_index == b).nonzero().flatten()
        out.append(
            type(gen)(
                gen.sequences[idx],
                torch.zeros_like(idx),
                [gen.seg_hidden[j] for j in idx.tolist()],
                gen.image_hidden[b : b + 1],
                gen.truncated[idx],
            )
        )
    return out


def finish(
    model,
    tokenizer,
    gen,
    encoding,
    config: TTSConfig,
    *,
    parse=None,
    gt=None,
    use_rvls2m: bool | None = None,
    generate_s: float = 0.0,
    **overrides,
) -> TTSResult:
    """The rest of ``run`` once the answers of one image are generated: diagnosis vote, m×n masks, selection."""
    import time

    from sim4seg.data.prompts import parse_diagnosis_line

    parse = parse or parse_diagnosis_line
    t1 = time.perf_counter()
    answers = tokenizer.batch_decode(gen.sequences, skip_special_tokens=False)
    answers = [_clean(a, tokenizer) for a in answers]
    labels = [parse(a) for a in answers]
    vote = vote_diagnosis(labels)
    best = next((i for i, lb in enumerate(labels) if vote.label is not None and lb == vote.label), 0)
    cands = candidate_masks(
        model,
        encoding,
        gen,
        config.n,
        seed=config.seed,
        kinds=config.kinds,
        decode_batch=config.decode_batch,
        use_rvls2m=use_rvls2m,
        **overrides,
    )
    t2 = time.perf_counter()
    h, w = encoding.image_sizes[0].tolist()
    chosen = None
    if cands is None:
        mask = torch.zeros(h, w, dtype=torch.bool)
    else:
        mask, chosen = select(config.selector, cands.masks, gt=gt, pred_iou=cands.pred_iou)
    unc = None if cands is None or len(cands.masks) < 2 else disagreement(cands.masks, mask).cpu()
    t3 = time.perf_counter()
    timings = {"generate_s": generate_s, "masks_s": t2 - t1, "select_s": t3 - t2}
    return TTSResult(
        answers,
        labels,
        vote,
        answers[best],
        best,
        cands is not None,
        mask.cpu(),
        chosen,
        cands,
        timings,
        [bool(t) for t in gen.truncated.tolist()],
        unc,
    )


def _clean(text: str, tokenizer) -> str:
    """Decoded answer up to EOS, without padding / EOS tokens; ``[SEG]`` kept."""
    for tok in (tokenizer.eos_token, tokenizer.pad_token):
        if tok and tok in text:
            text = text.split(tok)[0] if tok == tokenizer.eos_token else text.replace(tok, "")
    return text.strip()
