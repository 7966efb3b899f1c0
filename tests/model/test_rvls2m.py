"""RVLS2M against naive per-cell loop references written here, and the SAM prompt geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sim4seg.data.transforms import sam_resized_size
from sim4seg.model import rvls2m

# ------------------------------------------------------------------ naive references


def naive_scores(image_emb, seg_emb, token_grid, image_size, token_box, grid, normalize, pool):
    """Per item, per cell Python loops; the image pool builds the full-resolution upsampled map."""
    out = torch.zeros(image_emb.shape[0], grid, grid, dtype=torch.float64)
    for b in range(image_emb.shape[0]):
        sim = image_emb[b].double() @ seg_emb[b].double()
        if normalize == "softmax":
            sim = torch.exp(sim - sim.max()) / torch.exp(sim - sim.max()).sum()
        else:
            sim = (sim - sim.min()) / (sim.max() - sim.min())
        n = sim.numel()
        if token_grid is None:
            h = int(math.floor(math.sqrt(n)))
            w = int(math.ceil(n / h))
            sim = torch.cat([sim, sim.min().repeat(h * w - n)])
        else:
            h, w = token_grid
        m = sim.reshape(h, w)
        if pool == "token":
            blk = min(h, w) // grid
            for k in range(grid):
                for l in range(grid):
                    out[b, k, l] = m[blk * k : blk * (k + 1), blk * l : blk * (l + 1)].mean()
            continue
        H, W = image_size
        x0, y0, x1, y1 = token_box if token_box is not None else (0, 0, W, H)
        up = F.interpolate(m[None, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0]
        canvas = torch.full((H, W), float(m.min()), dtype=torch.float64)
        # place the upsampled box, clipped to the image
        cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, H), min(x1, W)
        canvas[cy0:cy1, cx0:cx1] = up[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        for k in range(grid):
            rows = [r for r in range(H) if int((r + 0.5) * grid // H) == k]
            for l in range(grid):
                cols = [c for c in range(W) if int((c + 0.5) * grid // W) == l]
                out[b, k, l] = canvas[rows][:, cols].mean()
    return out


def naive_mask(scores, tau, k=36, fraction=None, alpha=None):
    b, g, _ = scores.shape
    out = torch.zeros(b, g, g, dtype=torch.bool)
    for i in range(b):
        vals = [(float(scores[i, r, c]), r, c) for r in range(g) for c in range(g)]
        if tau in ("topk", "fraction"):
            kk = k if tau == "topk" else max(1, round(fraction * g * g))
            for _, r, c in sorted(vals, reverse=True)[:kk]:
                out[i, r, c] = True
        elif tau == "threshold":
            xs = [v for v, _, _ in vals]
            mean = sum(xs) / len(xs)
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
            thr = mean + (alpha or 0.0) * std
            best = max(vals)
            for v, r, c in vals:
                out[i, r, c] = v > thr or (r, c) == best[1:]
        else:
            xs = sorted(v for v, _, _ in vals)
            best_t, best_var = None, -1.0
            for t in sorted(set(xs))[1:]:
                lo = [x for x in xs if x < t]
                hi = [x for x in xs if x >= t]
                w0, w1 = len(lo) / len(xs), len(hi) / len(xs)
                var = w0 * w1 * (sum(lo) / len(lo) - sum(hi) / len(hi)) ** 2
                if var > best_var:
                    best_t, best_var = t, var
            for v, r, c in vals:
                out[i, r, c] = v >= best_t
    return out


# ------------------------------------------------------------------ scores

CASES = [
    # token_grid, image_size, token_box, grid
    ((6, 6), (48, 48), None, 6),  # grid divides the token grid
    ((6, 6), (48, 48), None, 4),  # grid does not divide it
    ((6, 6), (50, 37), None, 16),  # finer than the token grid, sizes not divisible
    ((4, 6), (30, 45), None, 8),  # non-square token grid
    ((6, 6), (40, 64), (12, 0, 52, 40), 8),  # centre crop of a landscape image
    ((6, 6), (40, 64), (0, -12, 64, 52), 8),  # padded to a square (box reaches outside)
    (None, (32, 32), None, 4),  # the paper's fallback grid (n = 30 → 5 x 6)
]


@pytest.mark.parametrize("normalize", rvls2m.NORMALIZATIONS)
@pytest.mark.parametrize("case", CASES)
def test_region_scores_image_pool_matches_loop(case, normalize):
    token_grid, size, box, grid = case
    n = 30 if token_grid is None else token_grid[0] * token_grid[1]
    g = torch.Generator().manual_seed(0)
    emb, seg = torch.randn(3, n, 8, generator=g), torch.randn(3, 8, generator=g)
    got = rvls2m.region_scores(emb, seg, token_grid, size, token_box=box, grid=grid, normalize=normalize)
    want = naive_scores(emb, seg, token_grid, size, box, grid, normalize, "image")
    assert got.shape == (3, grid, grid) and got.dtype == torch.float64
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("normalize", rvls2m.NORMALIZATIONS)
@pytest.mark.parametrize("token_grid,grid", [((8, 8), 4), ((8, 8), 3), ((6, 9), 2), (None, 2)])
def test_region_scores_token_pool_matches_loop(token_grid, grid, normalize):
    n = 40 if token_grid is None else token_grid[0] * token_grid[1]
    g = torch.Generator().manual_seed(1)
    emb, seg = torch.randn(2, n, 5, generator=g), torch.randn(2, 5, generator=g)
    got = rvls2m.region_scores(emb, seg, token_grid, (64, 64), grid=grid, normalize=normalize, pool="token")
    want = naive_scores(emb, seg, token_grid, (64, 64), None, grid, normalize, "token")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_region_scores_per_item_sizes_equal_one_at_a_time():
    g = torch.Generator().manual_seed(2)
    emb, seg = torch.randn(2, 36, 4, generator=g), torch.randn(2, 4, generator=g)
    sizes = torch.tensor([[40, 64], [70, 33]])
    boxes = torch.tensor([[12.0, 0.0, 52.0, 40.0], [0.0, 18.5, 33.0, 51.5]])
    batched = rvls2m.region_scores(emb, seg, (6, 6), sizes, token_box=boxes, grid=8)
    for i in range(2):
        single = rvls2m.region_scores(
            emb[i : i + 1], seg[i : i + 1], (6, 6), sizes[i].tolist(), token_box=boxes[i].tolist(), grid=8
        )
        torch.testing.assert_close(batched[i : i + 1], single)


def test_grid_finer_than_image_is_supersampled():
    emb, seg = torch.ones(1, 4, 3), torch.ones(1, 3)  # constant similarity
    out = rvls2m.region_scores(emb, seg, (2, 2), (5, 7), grid=16, normalize="softmax")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full_like(out, 0.25))


def test_scores_are_differentiable():
    emb = torch.randn(1, 16, 4, requires_grad=True)
    seg = torch.randn(1, 4, requires_grad=True)
    out = rvls2m.region_scores(emb, seg, (4, 4), (32, 32), grid=8)
    (out * torch.arange(64.0).reshape(1, 8, 8)).sum().backward()  # a plain sum of softmax scores is constant
    assert emb.grad is not None and seg.grad.abs().sum() > 0


def test_bad_inputs_raise():
    emb, seg = torch.randn(1, 16, 4), torch.randn(1, 4)
    with pytest.raises(ValueError, match="token_grid"):
        rvls2m.region_scores(emb, seg, (3, 4), (32, 32))
    with pytest.raises(ValueError, match="pool='token'"):
        rvls2m.region_scores(emb, seg, (4, 4), (32, 32), grid=8, pool="token")
    with pytest.raises(ValueError, match="normalize"):
        rvls2m.region_scores(emb, seg, (4, 4), (32, 32), normalize="l2")
    with pytest.raises(ValueError, match="seg_emb"):
        rvls2m.region_scores(emb, torch.randn(1, 5), (4, 4), (32, 32))


# ------------------------------------------------------------------ tau


@pytest.mark.parametrize(
    "tau,kw",
    [
        ("topk", {"k": 36}),
        ("topk", {"k": 5}),
        ("fraction", {"fraction": 0.2}),
        ("threshold", {"alpha": 0.5}),
        ("threshold", {}),
        ("otsu", {}),
    ],
)
def test_region_mask_matches_loop(tau, kw):
    scores = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(3))
    scores[1] = scores[1] ** 6  # skewed distribution
    got = rvls2m.region_mask(scores, tau=tau, **kw)
    assert got.dtype == torch.bool and got.shape == scores.shape
    assert torch.equal(got, naive_mask(scores, tau, **kw))


def test_otsu_separates_two_clusters():
    scores = torch.full((1, 4, 4), 0.1)
    scores[0, :2, :2] = 0.9
    assert torch.equal(rvls2m.region_mask(scores, tau="otsu")[0], scores[0] > 0.5)


def test_region_mask_bad_arguments():
    with pytest.raises(ValueError, match="fraction"):
        rvls2m.region_mask(torch.rand(1, 4, 4), tau="fraction")
    with pytest.raises(ValueError, match="tau"):
        rvls2m.region_mask(torch.rand(1, 4, 4), tau="best")


# ------------------------------------------------------------------ SAM prompt geometry


def _hot_embeddings(token_grid, hot):
    """Image tokens whose similarity to [SEG] is high only at token (row, col) ``hot``."""
    h, w = token_grid
    emb = torch.zeros(1, h * w, 2)
    emb[0, :, 1] = 1.0
    emb[0, hot[0] * w + hot[1], 0] = 10.0
    return emb, torch.tensor([[1.0, 0.0]])


@pytest.mark.parametrize("size", [(512, 512), (300, 800), (800, 300), (97, 203)])
@pytest.mark.parametrize("crop", [False, True])
def test_hot_spot_lands_in_the_right_place(size, crop):
    H, W = size
    token_grid, hot = (8, 8), (2, 6)
    if crop:  # LLaVA-style centre crop: the token grid covers the central square
        s = min(H, W)
        box = ((W - s) / 2, (H - s) / 2, (W + s) / 2, (H + s) / 2)
    else:
        box = (0.0, 0.0, float(W), float(H))
    emb, seg = _hot_embeddings(token_grid, hot)
    scores = rvls2m.region_scores(emb, seg, token_grid, size, token_box=box if crop else None, grid=16)
    mask = rvls2m.region_mask(scores, tau="topk", k=1)
    prompt = rvls2m.to_sam_prompt(mask, size, sam_size=1024, prompt_size=256)
    assert prompt.shape == (1, 1, 256, 256)
    on = prompt[0, 0].nonzero().double() + 0.5  # (row, col) centres, prompt frame
    assert len(on) > 0
    # where the hot token's centre lies in the original image, then in the prompt frame
    x0, y0, x1, y1 = box
    hy = y0 + (hot[0] + 0.5) * (y1 - y0) / token_grid[0]
    hx = x0 + (hot[1] + 0.5) * (x1 - x0) / token_grid[1]
    new_h, new_w = sam_resized_size(size, 1024)
    py, px = hy * new_h / H * 256 / 1024, hx * new_w / W * 256 / 1024
    cell_h, cell_w = new_h / 16 * 256 / 1024, new_w / 16 * 256 / 1024
    assert abs(on[:, 0].mean() - py) <= cell_h and abs(on[:, 1].mean() - px) <= cell_w
    # nothing in SAM's bottom-right padding
    assert (on[:, 0] < new_h / 4).all() and (on[:, 1] < new_w / 4).all()


def test_full_mask_covers_exactly_the_resized_image():
    prompt = rvls2m.to_sam_prompt(torch.ones(1, 16, 16, dtype=torch.bool), (300, 800), on=5.0, off=-5.0)
    new_h, new_w = sam_resized_size((300, 800), 1024)  # 384 x 1024 → 96 x 256 in the prompt frame
    assert (new_h, new_w) == (384, 1024)
    assert (prompt[0, 0, :96] == 5.0).all() and (prompt[0, 0, 96:] == -5.0).all()


def test_square_image_matches_the_released_code_layout():
    """On a square image each cell is a 16 x 16 block of the 256 x 256 frame, as in the released code."""
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 3, 7] = True
    prompt = rvls2m.to_sam_prompt(mask, (1024, 1024))
    want = torch.zeros(256, 256)
    want[48:64, 112:128] = 1.0
    assert torch.equal(prompt[0, 0], want)


def test_token_pool_box_maps_cells_to_the_covered_tokens():
    assert rvls2m.token_pool_box((6, 6), 4, None, (60, 60)) == (0.0, 0.0, 40.0, 40.0)
    assert rvls2m.token_pool_box((8, 8), 4, (10, 0, 50, 40), (40, 60)) == (10.0, 0.0, 50.0, 40.0)


def naive_prompt(mask, size, grid_box, sam_size, prompt_size, on, off):
    """Per prompt pixel: trace its centre back through SAM's resize to the image and look up its cell."""
    H, W = size
    g_h, g_w = mask.shape
    x0, y0, x1, y1 = grid_box if grid_box is not None else (0, 0, W, H)
    scale = sam_size / max(H, W)
    new_h, new_w = int(H * scale + 0.5), int(W * scale + 0.5)
    out = torch.full((prompt_size, prompt_size), float(off))
    for py in range(prompt_size):
        cy = (py + 0.5) * sam_size / prompt_size  # SAM-frame centre
        oy = cy * H / new_h
        if cy >= new_h or not y0 <= oy < y1:
            continue
        r = min(int((oy - y0) * g_h // (y1 - y0)), g_h - 1)
        for px in range(prompt_size):
            cx = (px + 0.5) * sam_size / prompt_size
            ox = cx * W / new_w
            if cx >= new_w or not x0 <= ox < x1:
                continue
            c = min(int((ox - x0) * g_w // (x1 - x0)), g_w - 1)
            if mask[r, c]:
                out[py, px] = on
    return out


def test_to_sam_prompt_matches_a_per_pixel_loop_with_per_item_geometry():
    """Three items of different shapes and grid boxes in one call, non-0/1 values, a non-square grid."""
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(3, 6, 9, generator=g) > 0.5
    sizes = torch.tensor([[300, 800], [97, 203], [512, 512]])
    boxes = [(0.0, 0.0, 800.0, 300.0), (10.5, 0.0, 150.0, 97.0), (-20.0, 30.0, 530.0, 480.0)]
    got = rvls2m.to_sam_prompt(mask, sizes, grid_box=boxes, sam_size=512, prompt_size=64, on=3.5, off=-2.0)
    assert got.shape == (3, 1, 64, 64)
    for i in range(3):
        want = naive_prompt(mask[i], sizes[i].tolist(), boxes[i], 512, 64, 3.5, -2.0)
        assert torch.equal(got[i, 0], want), f"item {i}"


def test_to_sam_prompt_geometry_forms_agree():
    """One (H, W) for all items, a (B, 2) tensor, a NumPy array and nested lists give the same prompt."""
    mask = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(4)) > 0.7
    want = rvls2m.to_sam_prompt(mask, (300, 800))
    for form in (torch.tensor([[300, 800], [300, 800]]), np.array([[300, 800]] * 2), [[300, 800], (300, 800)]):
        assert torch.equal(rvls2m.to_sam_prompt(mask, form), want)


def test_to_sam_prompt_bad_inputs_raise():
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="finite"):
        rvls2m.to_sam_prompt(mask, (64, 64), off=float("-inf"))
    with pytest.raises(ValueError, match="image_size"):
        rvls2m.to_sam_prompt(mask, [(64, 64), (64, 64), (64, 64)])
    with pytest.raises(ValueError, match="grid_box"):
        rvls2m.to_sam_prompt(mask, (64, 64), grid_box=(10, 0, 5, 64))


def test_softmax_over_a_wide_range_of_similarities_leaves_no_exact_zero_ties():
    # similarities 0, -2, -4, ... -510 (a 16x16 token grid): float32 softmax underflowed below ~-87 to
    # exact zeros, so top-36 of the cells chose among ties; now every cell keeps a positive, ordered score
    n = 256
    seg = torch.ones(1, 1)
    emb = (-2.0 * torch.arange(n, dtype=torch.float32)).reshape(1, n, 1)
    assert bool((rvls2m.region_scores(emb, seg, (16, 16), (64, 64), grid=16) > 0).all())  # pool="image"
    scores = rvls2m.region_scores(emb, seg, (16, 16), (64, 64), grid=16, pool="token")  # one token per cell
    flat = scores.flatten()
    assert bool((flat > 0).all())
    assert bool((flat[:-1] > flat[1:]).all())  # strictly decreasing in token order: no ties
    mask = rvls2m.region_mask(scores, tau="topk", k=36)
    assert mask.flatten().nonzero().flatten().tolist() == list(range(36))


def test_softmax_temperature_keeps_the_ranking_and_flattens():
    g = torch.Generator().manual_seed(0)
    emb, seg = torch.randn(2, 30, 8, generator=g), torch.randn(2, 8, generator=g)
    p1 = rvls2m.similarity(emb, seg, "softmax")
    p4 = rvls2m.similarity(emb, seg, "softmax", temperature=4.0)
    assert torch.equal(p1.argsort(-1), p4.argsort(-1))
    assert bool((p4.amax(-1) < p1.amax(-1)).all())
    torch.testing.assert_close(p4.sum(-1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="temperature"):
        rvls2m.similarity(emb, seg, "softmax", temperature=0.0)


def test_topk_ties_are_broken_by_index_deterministically():
    scores = torch.zeros(2, 4, 4)
    scores[:, 3, 3] = 1.0  # one clear best, fifteen tied cells
    mask = rvls2m.region_mask(scores, tau="topk", k=4)
    for row in mask:
        assert row.flatten().nonzero().flatten().tolist() == [0, 1, 2, 15]
    from sim4seg.infer.tts import topk_cells

    cells = topk_cells(scores, torch.tensor([4, 2]))
    assert cells[0].flatten().nonzero().flatten().tolist() == [0, 1, 2, 15]
    assert cells[1].flatten().nonzero().flatten().tolist() == [0, 15]
