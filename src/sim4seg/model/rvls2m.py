"""RVLS2M (paper §3.1, Algorithm 1, Eq. 4–8) as pure, batched, loop-free tensor functions.

Three steps, each a function:

``region_scores``  similarity of every image token to the ``[SEG]`` token (Eq. 4),
                   normalised (softmax, Eq. 5, or min-max as in the released code), pooled
                   into a ``grid × grid`` matrix of cells over the image (Eq. 6–7).
``region_mask``    the τ strategy and indicator (Eq. 8): top-k, fraction, mean + α·std, Otsu.
``to_sam_prompt``  the selected cells drawn into SAM's low-res prompt frame (``input_masks``),
                   through the image's original coordinates, so non-square images land right.

Coordinates. Boxes are ``(x0, y0, x1, y1)`` in original-image pixels (pixel ``r`` spans
``[r, r+1)``). The image is divided into ``grid`` rows and columns of cells; a pixel belongs
to the cell that contains its centre: row ``⌊(r + ½)·g / H⌋``. This covers the whole image
(the released code drops the ``H mod g`` last rows) and equals the released code's cells
whenever ``g`` divides ``H``.

Pooling ``"image"`` (default) is what the released code computes: the token map is upsampled
bilinearly (``align_corners=False``) onto the region of the image it covers (``token_box``;
outside it the map takes its minimum) and every cell takes the mean over its pixels. The
bilinear weights are separable, so the cell means are ``P_h · M · P_wᵀ`` with small
``grid × h_p`` and ``grid × w_p`` matrices and no full-resolution map is built. Pooling
``"token"`` is the literal Algorithm 1: block means of size ``b = ⌊min(h', w')/g⌋`` on the
token grid; its cells cover the top-left ``b·g × b·g`` tokens (``token_pool_box`` gives where
that lies in the image, for ``to_sam_prompt``).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

NORMALIZATIONS = ("softmax", "minmax")
POOLINGS = ("image", "token")
TAU_STRATEGIES = ("topk", "fraction", "threshold", "otsu")

SizeLike = Sequence[int] | torch.Tensor
BoxLike = Sequence[float] | torch.Tensor


def _rows(value, batch: int, width: int, name: str) -> list[tuple[float, ...]]:
    """A ``(width,)`` sequence or ``(B, width)`` tensor / nested sequence → ``B`` tuples of floats."""
    raw = value.tolist() if isinstance(value, torch.Tensor) else list(value)
    if raw and isinstance(raw[0], numbers.Number):
        raw = [raw] * batch
    rows = [tuple(float(v) for v in row) for row in raw]
    if len(rows) != batch or any(len(row) != width for row in rows):
        raise ValueError(f"{name} must be {width} numbers or a ({batch}, {width}) tensor, got {value!r}")
    return rows


def _geometry(image_size: SizeLike, box: BoxLike | None, batch: int, name: str) -> list[tuple[float, ...]]:
    """Per item ``(H, W, x0, y0, x1, y1)``: the image size and a box in it (default: the whole image)."""
    sizes = _rows(image_size, batch, 2, "image_size")
    if any(h < 1 or w < 1 for h, w in sizes):
        raise ValueError(f"image_size must be positive, got {sizes}")
    boxes = [(0.0, 0.0, w, h) for h, w in sizes] if box is None else _rows(box, batch, 4, name)
    if any(x1 <= x0 or y1 <= y0 for x0, y0, x1, y1 in boxes):
        raise ValueError(f"{name} must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {boxes}")
    return [s + b for s, b in zip(sizes, boxes)]


def _per_geometry(build, geometry: list[tuple[float, ...]], *args) -> tuple[torch.Tensor, ...]:
    """``build(distinct_rows, *args)`` (cached) gives tensors with one entry per distinct row; index them per item.

    When every item shares one geometry (the usual case) the tensors keep a leading 1 and broadcast.
    """
    distinct = tuple(dict.fromkeys(geometry))
    out = build(distinct, *args)
    if len(distinct) == 1:
        return out
    where = {row: i for i, row in enumerate(distinct)}
    inverse = torch.tensor([where[row] for row in geometry], device=out[0].device)
    return tuple(None if t is None else t[inverse] for t in out)


def paper_grid(n: int) -> tuple[int, int]:
    """The paper's fallback token grid for ``n`` tokens: ``h' = ⌊√n⌋, w' = ⌈n / h'⌉`` (Alg. 1 line 4)."""
    if n < 1:
        raise ValueError("no image tokens")
    h = math.isqrt(n)
    return h, -(-n // h)


def similarity(
    image_emb: torch.Tensor, seg_emb: torch.Tensor, normalize: str = "softmax", temperature: float = 1.0
) -> torch.Tensor:
    """Eq. 4–5: ``(B, n, d)`` image tokens · ``(B, d)`` ``[SEG]`` → ``(B, n)`` normalised scores (float64).

    ``softmax``: ``exp((s - max s) / T) / Σ exp((s - max s) / T)``, max-subtracted and in float64, so
    a token's score underflows to exactly 0 only when it lies more than ~708·T below the best one
    (float32 already at ~87·T: the top-k then chose among exact-zero ties). ``temperature`` T
    (default 1, the paper's Eq. 5) flattens (T > 1) or sharpens (T < 1) the distribution; it does
    not change the ranking of tokens. ``minmax`` ignores T.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if (
        image_emb.ndim != 3
        or seg_emb.ndim != 2
        or image_emb.shape[0] != seg_emb.shape[0]
        or image_emb.shape[2] != seg_emb.shape[1]
    ):
        raise ValueError(
            f"image_emb must be (B, n, d) and seg_emb (B, d); got {tuple(image_emb.shape)} and {tuple(seg_emb.shape)}"
        )
    # (B, 1, d) · (B, d, n): the row-vector form reads image_emb once, ~2x faster on CPU than (B, n, d) · (B, d, 1)
    sim = torch.bmm(seg_emb.float().unsqueeze(1), image_emb.float().transpose(1, 2)).squeeze(1).double()
    if normalize == "softmax":
        z = (sim - sim.amax(-1, keepdim=True)) / float(temperature)  # <= 0: exp never overflows
        e = z.exp()
        return e / e.sum(-1, keepdim=True)  # the max token gives e = 1
    lo, hi = sim.amin(-1, keepdim=True), sim.amax(-1, keepdim=True)
    return (sim - lo) / (hi - lo).clamp_min(1e-12)


def token_map(scores: torch.Tensor, token_grid: tuple[int, int] | None) -> torch.Tensor:
    """``(B, n)`` → ``(B, h_p, w_p)``; with the paper's grid, missing trailing cells take the minimum."""
    b, n = scores.shape
    if token_grid is None:
        h, w = paper_grid(n)
        if h * w > n:
            scores = torch.cat([scores, scores.amin(-1, keepdim=True).expand(b, h * w - n)], dim=1)
    else:
        h, w = (int(v) for v in token_grid)
        if h * w != n:
            raise ValueError(f"token_grid {h}x{w} = {h * w} tokens, but the image has {n} tokens")
    return scores.reshape(b, h, w)


def _axis_pool(length: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, n: int, grid: int):
    """One axis of the separable cell means of a bilinear upsampling.

    length: (B,) image side in pixels; lo, hi: (B,) where the ``n`` tokens lie on this axis.
    Returns ``P`` (B, grid, n): cell-mean weights on the tokens inside the box, and
    ``frac`` (B, grid): the share of each cell's pixels that lie inside the box.
    Sides shorter than ``grid`` are supersampled by an integer factor so every cell has samples.
    """
    device = lo.device
    factor = torch.clamp(-(-grid // length), min=1)  # (B,)
    samples = int((length * factor).max())
    r = torch.arange(samples, device=device, dtype=torch.float64)  # (L,)
    valid = r[None] < (length * factor)[:, None]  # (B, L)
    centre = (r[None] + 0.5) / factor[:, None]  # (B, L) image coords
    inside = valid & (centre >= lo[:, None]) & (centre < hi[:, None])
    # align_corners=False source coordinate on the token axis, clamped as F.interpolate does
    src = ((centre - lo[:, None]) * n / (hi - lo)[:, None] - 0.5).clamp(0, n - 1)
    i0 = src.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    w1 = (src - i0) * inside
    w0 = (1.0 - (src - i0)) * inside
    interp = torch.zeros(*src.shape, n, device=device, dtype=torch.float64)  # (B, L, n)
    interp.scatter_add_(2, i0.unsqueeze(-1), w0.unsqueeze(-1))
    interp.scatter_add_(2, i1.unsqueeze(-1), w1.unsqueeze(-1))
    cell = (centre * grid / length[:, None]).floor().long().clamp(0, grid - 1)
    member = F.one_hot(cell, grid).double() * valid.unsqueeze(-1)  # (B, L, g)
    count = member.sum(1)  # (B, g)
    pool = member.transpose(1, 2) @ interp / count.unsqueeze(-1)  # (B, g, n)
    frac = (member * inside.unsqueeze(-1)).sum(1) / count  # (B, g)
    return pool, frac


@functools.lru_cache(maxsize=256)
def _pool_for(rows: tuple, token_grid: tuple[int, int], grid: int, device: torch.device):
    """``(P_h, P_w, outside)`` for the distinct ``(H, W, x0, y0, x1, y1)`` rows, float32 on ``device``.

    ``outside`` (U, g, g) is the share of each cell's pixels outside the token box, or ``None``
    when the box covers every cell. Cached: the geometry repeats from call to call.
    """
    t = torch.tensor(rows, dtype=torch.float64)
    h_p, w_p = token_grid
    p_h, f_h = _axis_pool(t[:, 0].long(), t[:, 3], t[:, 5], h_p, grid)
    p_w, f_w = _axis_pool(t[:, 1].long(), t[:, 2], t[:, 4], w_p, grid)
    outside = 1.0 - f_h[:, :, None] * f_w[:, None, :]
    outside = None if bool((outside == 0).all()) else outside.float().to(device)
    return p_h.float().to(device), p_w.float().to(device), outside


def image_pool_matrices(
    image_size: SizeLike,
    token_grid: tuple[int, int],
    *,
    batch: int,
    token_box: BoxLike | None = None,
    grid: int = 16,
    device=None,
):
    """``(P_h (·,g,h_p), P_w (·,g,w_p), outside (·,g,g) or None)`` float32 for ``pool="image"``.

    The leading dimension is 1 when every item has the same geometry, else ``batch``; see the
    module docstring. Computed once per distinct geometry and cached across calls.
    """
    geometry = _geometry(image_size, token_box, batch, "token_box")
    return _per_geometry(
        _pool_for, geometry, tuple(int(v) for v in token_grid), int(grid), torch.device(device or "cpu")
    )


def region_scores(
    image_emb: torch.Tensor,
    seg_emb: torch.Tensor,
    token_grid: tuple[int, int] | None,
    image_size: SizeLike,
    *,
    token_box: BoxLike | None = None,
    grid: int = 16,
    normalize: str = "softmax",
    pool: str = "image",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Region similarity matrix R (Eq. 4–7): ``(B, grid, grid)`` float64.

    image_emb: (B, n, d) image-token hidden states after ϕ; seg_emb: (B, d) ``[SEG]`` after ϕ.
    token_grid: (h_p, w_p) of the LVLM's patches, or ``None`` for the paper's ⌊√n⌋ × ⌈n/⌊√n⌋⌉, or
    per item (a (B, 2) tensor / B pairs) when the grid differs per image (``image_emb`` zero-padded).
    image_size: (H, W) of the original image, or a (B, 2) tensor of per-item sizes.
    token_box: (x0, y0, x1, y1) where the token grid lies in original-image pixels (a centre
    crop lies inside the image, padding reaches outside it); (4,) or (B, 4); default the image.
    temperature: of the softmax normalisation (``similarity``).
    """
    if pool not in POOLINGS:
        raise ValueError(f"pool must be one of {POOLINGS}, got {pool!r}")
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    grids = per_item_grids(token_grid, image_emb.shape[0], image_emb.shape[1])
    if grids is not None:
        return _region_scores_per_grid(
            image_emb, seg_emb, grids, image_size, token_box, grid, normalize, pool, temperature
        )
    m = token_map(similarity(image_emb, seg_emb, normalize, temperature), token_grid)  # (B, h_p, w_p)
    b, h_p, w_p = m.shape
    if pool == "token":
        block = min(h_p, w_p) // grid
        if block == 0:
            raise ValueError(
                f"pool='token' needs grid <= min(token grid) = {min(h_p, w_p)}, got grid={grid}; "
                "use pool='image' for finer grids"
            )
        cells = m[:, : block * grid, : block * grid].reshape(b, grid, block, grid, block)
        return cells.mean(dim=(2, 4))
    p_h, p_w, outside = image_pool_matrices(
        image_size, (h_p, w_p), batch=b, token_box=token_box, grid=grid, device=m.device
    )
    out = p_h.double() @ m @ p_w.double().transpose(1, 2)  # float64: tiny scores stay > 0
    if outside is not None:  # the map's minimum outside the box
        out = out + m.amin(dim=(1, 2))[:, None, None] * outside.double()
    return out


def per_item_grids(token_grid, batch: int, n_max: int) -> list[tuple[int, int]] | None:
    """``token_grid`` as B per-item grids when it is a ``(B, 2)`` tensor or a list of B pairs, else ``None``.

    Dynamic-resolution LVLMs (Qwen2.5-VL: ``image_grid_thw`` after the 2×2 merge) give every image
    its own grid; their ``(B, n_max, d)`` token states are zero-padded after each item's ``h·w`` tokens.
    """
    if token_grid is None:
        return None
    rows = token_grid.tolist() if isinstance(token_grid, torch.Tensor) else list(token_grid)
    if not rows or isinstance(rows[0], numbers.Number):
        return None
    grids = [(int(h), int(w)) for h, w in rows]
    if len(grids) != batch:
        raise ValueError(f"{len(grids)} token grids for a batch of {batch}")
    over = [(i, g) for i, g in enumerate(grids) if g[0] * g[1] > n_max or min(g) < 1]
    if over:
        raise ValueError(f"token grid(s) {over} do not fit the {n_max} image-token states given")
    return grids


def _region_scores_per_grid(image_emb, seg_emb, grids, image_size, token_box, grid, normalize, pool, temperature):
    """``region_scores`` for items with different token grids: one batched call per distinct grid."""
    b = image_emb.shape[0]
    sizes = _rows(image_size, b, 2, "image_size")
    boxes = None if token_box is None else _rows(token_box, b, 4, "token_box")
    out = torch.empty(b, grid, grid, device=image_emb.device, dtype=torch.float64)
    for g in dict.fromkeys(grids):
        idx = [i for i, gi in enumerate(grids) if gi == g]
        n = g[0] * g[1]
        sub = region_scores(
            image_emb[idx, :n],
            seg_emb[idx],
            g,
            torch.tensor([sizes[i] for i in idx]),
            token_box=None if boxes is None else torch.tensor([boxes[i] for i in idx]),
            grid=grid,
            normalize=normalize,
            pool=pool,
            temperature=temperature,
        )
        out[torch.tensor(idx, device=out.device)] = sub
    return out


def token_pool_box(
    token_grid: tuple[int, int], grid: int, token_box: BoxLike | None, image_size: Sequence[int]
) -> tuple[float, float, float, float]:
    """Where the cells of ``pool="token"`` lie in the image (the top-left ``b·g`` square of tokens)."""
    h_p, w_p = token_grid
    block = min(h_p, w_p) // grid
    if block == 0:
        raise ValueError(f"grid {grid} is finer than the token grid {h_p}x{w_p}")
    x0, y0, x1, y1 = (
        (0.0, 0.0, float(image_size[1]), float(image_size[0])) if token_box is None else (float(v) for v in token_box)
    )
    return x0, y0, x0 + (x1 - x0) * block * grid / w_p, y0 + (y1 - y0) * block * grid / h_p


def _otsu(scores: torch.Tensor) -> torch.Tensor:
    """Per-row Otsu threshold over the values themselves (no histogram): (B, N) → (B,)."""
    v, _ = scores.double().sort(dim=1)  # (B, N) ascending
    n = v.shape[1]
    csum = v.cumsum(1)
    total = csum[:, -1:]
    k = torch.arange(1, n, device=v.device, dtype=torch.float64)  # size of the low class
    w0, w1 = k / n, 1 - k / n
    mu0 = csum[:, :-1] / k
    mu1 = (total - csum[:, :-1]) / (n - k)
    between = w0 * w1 * (mu0 - mu1) ** 2  # (B, N-1)
    between = torch.where(v[:, 1:] > v[:, :-1], between, torch.full_like(between, -1.0))
    best = between.argmax(1, keepdim=True)  # split before index best+1
    return v.gather(1, best + 1).squeeze(1).to(scores.dtype)


def top_indices(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values of each row, ``(B, N)`` → ``(B, k)``; ties → the lower index first.

    ``torch.topk`` leaves the order of equal values unspecified (it differs between devices and
    versions); a stable descending sort keeps equal values in index order.
    """
    return flat.sort(dim=1, descending=True, stable=True).indices[:, :k]


def region_mask(
    scores: torch.Tensor, *, tau: str = "topk", k: int = 36, fraction: float | None = None, alpha: float | None = None
) -> torch.Tensor:
    """τ and the indicator (Eq. 8): ``(B, g, g)`` scores → ``(B, g, g)`` bool.

    ``topk``: the ``k`` best cells (the paper's best: 36 of 16×16). ``fraction``: the best
    ``round(fraction·g²)`` cells (at least one). ``threshold``: cells above mean + α·std
    (α default 0) — the best cell is always kept. ``otsu``: cells at or above the Otsu threshold.

    Ties are broken deterministically by index: among equal scores, the cell that comes first in
    row-major order (lower ``row·g + col``) is selected first (``top_indices``).
    """
    if tau not in TAU_STRATEGIES:
        raise ValueError(f"tau must be one of {TAU_STRATEGIES}, got {tau!r}")
    b, gh, gw = scores.shape
    flat = scores.reshape(b, gh * gw)
    if tau in ("topk", "fraction"):
        if tau == "fraction":
            if fraction is None or not 0.0 < fraction <= 1.0:
                raise ValueError(f"tau='fraction' needs 0 < fraction <= 1, got {fraction!r}")
            k = max(1, round(fraction * gh * gw))
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        idx = top_indices(flat, min(k, gh * gw))
        out = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    elif tau == "threshold":
        a = 0.0 if alpha is None else float(alpha)
        thr = flat.mean(1, keepdim=True) + a * flat.std(1, unbiased=False, keepdim=True)
        out = (flat > thr).scatter_(1, flat.argmax(1, keepdim=True), True)
    else:
        out = flat >= _otsu(flat).unsqueeze(1)
    return out.reshape(b, gh, gw)


@functools.lru_cache(maxsize=256)
def _prompt_maps(
    rows: tuple, gh: int, gw: int, sam_size: int, prompt_size: int, device: torch.device, resize: str = "longest"
):
    """For the distinct ``(H, W, x0, y0, x1, y1)`` rows: one-hot maps from prompt rows / columns to cell rows /
    columns, ``(U, P, gh + 1)`` and ``(U, gw + 1, P)`` float32; the extra last cell stands for "outside" (cached).
    ``resize``: the segmenter frame's mode (``SegmenterFrame.resize``)."""
    t = torch.tensor(rows, dtype=torch.float64)
    size, box = t[:, :2], t[:, 2:]
    if resize == "square":  # SAM2: the image stretched over the whole square
        resized = torch.full_like(size, float(sam_size))
    else:
        resized = (size * (sam_size / size.amax(1))[:, None] + 0.5).floor()  # SAM's rounding
    centre = (torch.arange(prompt_size, dtype=torch.float64) + 0.5) * sam_size / prompt_size

    def one_hot(axis: int, lo: torch.Tensor, hi: torch.Tensor, g: int) -> torch.Tensor:
        orig = centre[None] * size[:, axis : axis + 1] / resized[:, axis : axis + 1]  # original coords
        ok = (centre[None] < resized[:, axis : axis + 1]) & (orig >= lo[:, None]) & (orig < hi[:, None])
        idx = ((orig - lo[:, None]) * g / (hi - lo)[:, None]).floor().long().clamp(0, g - 1)
        return F.one_hot(torch.where(ok, idx, torch.full_like(idx, g)), g + 1).float().to(device)

    return one_hot(0, box[:, 1], box[:, 3], gh), one_hot(1, box[:, 0], box[:, 2], gw).transpose(1, 2)


def to_sam_prompt(
    mask: torch.Tensor,
    image_size: SizeLike,
    *,
    grid_box: BoxLike | None = None,
    sam_size: int = 1024,
    prompt_size: int = 256,
    on: float = 1.0,
    off: float = 0.0,
    dtype: torch.dtype = torch.float32,
    resize: str = "longest",
) -> torch.Tensor:
    """Region mask ``(B, g, g)`` bool → SAM mask prompt ``(B, 1, prompt_size, prompt_size)``.

    SAM sees the image resized so its longest side is ``sam_size`` and padded bottom-right
    (``resize="longest"``); SAM2 sees it stretched to the square (``resize="square"``). The
    prompt frame is that square at ``prompt_size``. Each prompt pixel is traced back to the
    original image; it takes ``on`` if its cell is selected, else ``off`` (also over padding).
    grid_box: where the ``g × g`` cells lie in the image, (x0, y0, x1, y1); default the image.

    The lookup is two products with one-hot maps, ``rows · values · colsᵀ``: each prompt pixel
    sums exactly one cell value and zeros, so the result is exact (``on``/``off`` must be finite).
    """
    if not (math.isfinite(on) and math.isfinite(off)):
        raise ValueError(f"on and off must be finite numbers, got on={on}, off={off}")
    b, gh, gw = mask.shape
    geometry = _geometry(image_size, grid_box, b, "grid_box")
    if resize not in ("longest", "square"):
        raise ValueError(f"resize must be 'longest' or 'square', got {resize!r}")
    rows, cols = _per_geometry(_prompt_maps, geometry, gh, gw, int(sam_size), int(prompt_size), mask.device, resize)
    values = torch.full((b, gh + 1, gw + 1), float(off), device=mask.device)
    values[:, :gh, :gw].masked_fill_(mask, float(on))
    return (rows @ values @ cols).to(dtype).unsqueeze(1)
