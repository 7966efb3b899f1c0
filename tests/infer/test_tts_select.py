"""Test-time scaling, model-independent parts: region-mask perturbations, mask selectors, diagnosis vote."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim4seg.infer import tts
from sim4seg.model.rvls2m import region_mask


def block_mask(b=2, g=8, r0=2, r1=5, c0=3, c1=6):
    m = torch.zeros(b, g, g, dtype=torch.bool)
    m[:, r0:r1, c0:c1] = True
    return m


def scores_for(mask: torch.Tensor, seed=0) -> torch.Tensor:
    s = torch.rand(mask.shape, generator=torch.Generator().manual_seed(seed))
    return s + mask.float()  # the mask's cells score highest


# ---------------------------------------------------------------- perturbations


def test_j0_is_original_and_shapes():
    s = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    m = region_mask(s, k=36)
    p = tts.perturb(s, m, 11, k=36, seed=7)
    assert p.shape == (11, 3, 16, 16) and p.dtype == torch.bool
    assert torch.equal(p[0], m)
    assert all(not torch.equal(p[j], m) for j in (1, 3))  # k jitter and dilation change the mask


def test_deterministic_by_seed_and_prefix_stable():
    s = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(2))
    m = region_mask(s, k=36)
    a = tts.perturb(s, m, 12, k=36, seed=5)
    assert torch.equal(a, tts.perturb(s, m, 12, k=36, seed=5))
    assert torch.equal(a[:4], tts.perturb(s, m, 4, k=36, seed=5))  # θ_j does not depend on n
    assert not torch.equal(a, tts.perturb(s, m, 12, k=36, seed=6))


def test_k_jitter_is_topk_of_k_plus_delta():
    s = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(3))
    m = region_mask(s, k=36)
    for seed in range(5):
        p = tts.perturb(s, m, 2, k=36, seed=seed, kinds=("k_jitter",), jitter=9)[1]
        for b in range(4):
            kk = int(p[b].sum())
            assert 27 <= kk <= 45 and kk != 36
            assert torch.equal(p[b], region_mask(s[b : b + 1], k=kk)[0])  # the top-kk cells


def test_shift_moves_by_exactly_one_cell():
    m = block_mask(b=5)
    s = scores_for(m)
    for j, out in enumerate(tts.perturb(s, m, 6, k=9, seed=0, kinds=("shift",))[1:], 1):
        for b in range(5):
            moved = [
                (dy, dx)
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))
                if torch.equal(out[b], torch.roll(m[b], (dy, dx), (0, 1)))
            ]
            assert len(moved) == 1, (j, b)


def test_shift_drops_cells_leaving_the_grid():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 0, :] = True
    up = tts.shift(m, torch.tensor([-1]), torch.tensor([0]))
    down = tts.shift(m, torch.tensor([1]), torch.tensor([0]))
    assert not up.any() and down[0, 1].all() and int(down.sum()) == 4


def test_dilate_erode_dropout():
    m = block_mask(b=1, g=8)  # a 3x3 block
    s = scores_for(m)
    p = tts.perturb(s, m, 6, k=9, seed=0)  # 1 k_jitter, 2 shift, 3 dilate, 4 erode, 5 dropout
    assert int(p[3].sum()) == 25 and bool((p[3] >= m).all())
    assert int(p[4].sum()) == 1 and bool(p[4][0, 3, 4])  # the centre survives erosion
    assert bool((p[5] <= m).all())
    # later cycles dilate/erode further
    p2 = tts.perturb(s, m, 9, k=9, seed=0, kinds=("dilate",))
    assert [int(p2[j].sum()) for j in (1, 2, 3)] == [25, 49, 64]


def test_never_empties_a_mask_keeps_best_cell():
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 1, 1] = m[0, 5, 5] = True  # isolated cells: erosion removes both
    s = torch.zeros(1, 8, 8)
    s[0, 5, 5] = 2.0
    s[0, 1, 1] = 1.0
    out = tts.perturb(s, m, 2, k=2, seed=0, kinds=("erode",))[1]
    assert int(out.sum()) == 1 and bool(out[0, 5, 5])
    out = tts.perturb(s, m, 5, k=2, seed=0, kinds=("dropout",), drop=0.99)
    assert all(int(o.sum()) >= 1 for o in out)


def test_perturb_validates():
    s, m = torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="kinds"):
        tts.perturb(s, m, 2, k=2, seed=0, kinds=("rotate",))
    with pytest.raises(ValueError, match="n must be"):
        tts.perturb(s, m, 0, k=2, seed=0)
    with pytest.raises(ValueError, match="scores and mask"):
        tts.perturb(s, m[0], 2, k=2, seed=0)


# ---------------------------------------------------------------- selectors


def cands_and_gt():
    gt = np.zeros((10, 10), bool)
    gt[2:8, 2:8] = True
    c = np.zeros((4, 10, 10), bool)
    c[0, 2:8, 2:6] = True  # IoU 24/36
    c[1, 2:8, 2:7] = True  # IoU 30/36  <- best
    c[2, 0:3, 0:3] = True  # IoU 1/44
    c[3, 2:8, 3:8] = True  # IoU 30/36 too (ties: first wins)
    return c, gt


def test_pairwise_iou_and_iou_to():
    c, gt = cands_and_gt()
    p = tts.pairwise_iou(c)
    assert p.shape == (4, 4) and torch.allclose(p.diagonal(), torch.ones(4, dtype=torch.float64))
    assert p[0, 1].item() == pytest.approx(24 / 30)
    assert p[1, 3].item() == pytest.approx(24 / 36)
    assert tts.iou_to(c, gt).tolist() == pytest.approx([24 / 36, 30 / 36, 1 / 44, 30 / 36])
    empty = np.zeros((2, 3, 3), bool)
    assert tts.pairwise_iou(empty).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_oracle_picks_best_first_on_ties():
    c, gt = cands_and_gt()
    assert tts.select_oracle(c, gt) == 1
    mask, i = tts.select("oracle", torch.as_tensor(c), gt=gt)
    assert i == 1 and torch.equal(mask, torch.as_tensor(c[1]))
    with pytest.raises(ValueError, match="upper bound"):
        tts.select("oracle", c)


def test_consensus_picks_medoid():
    c, _ = cands_and_gt()
    p = tts.pairwise_iou(c).numpy()
    mean_other = (p.sum(1) - 1) / 3
    assert tts.select_consensus(c) == int(np.argmax(mean_other)) == 1
    assert tts.select_consensus(c[:1]) == 0


def test_score_selector():
    c, _ = cands_and_gt()
    assert tts.select_score(c, [0.1, 0.2, 0.9, 0.3]) == 2
    assert tts.select("score", c, pred_iou=torch.tensor([0.5, 0.1, 0.5, 0.0]))[1] == 0
    with pytest.raises(ValueError, match="3 values for 4"):
        tts.select_score(c, [0.1, 0.2, 0.3])


def test_vote_is_pixel_majority():
    rng = np.random.default_rng(0)
    c = rng.random((5, 6, 7)) > 0.5
    mask, i = tts.select("vote", c)
    assert i is None and torch.equal(mask, torch.as_tensor(c.sum(0) >= 3))
    even = np.stack([np.ones((2, 2), bool), np.zeros((2, 2), bool)])
    assert not tts.pixel_vote(even).any()  # 1 of 2 is not a strict majority
    with pytest.raises(ValueError, match="unknown selector"):
        tts.select("best", c)


# ---------------------------------------------------------------- diagnosis vote


def test_vote_diagnosis():
    v = tts.vote_diagnosis(["benign", "malignant", "malignant", None])
    assert (v.label, v.confidence, v.counts) == ("malignant", 0.5, {"benign": 1, "malignant": 2})
    tie = tts.vote_diagnosis([None, "b", "a", "a", "b"])
    assert tie.label == "b" and tie.confidence == pytest.approx(0.4)  # tie → first seen
    assert tts.vote_diagnosis([None, None]) == tts.DiagnosisVote(None, 0.0, {})
    with pytest.raises(ValueError):
        tts.vote_diagnosis([])


def test_a_registered_selector_is_usable_by_name_and_in_the_config():
    @tts.register_selector("largest")
    def largest(c, *, gt=None, pred_iou=None):
        i = int(c.reshape(c.shape[0], -1).sum(1).argmax())
        return c[i], i

    try:
        c = np.zeros((3, 4, 4), bool)
        c[1, :2] = True
        c[2, :3] = True
        mask, i = tts.select("largest", c)
        assert i == 2 and mask.sum() == 12
        assert tts.TTSConfig(m=2, selector="largest").upper_bound is False
        assert tts.TTSConfig(selector="oracle").upper_bound is True
    finally:
        del tts.SELECTORS["largest"]
    with pytest.raises(ValueError, match="unknown selector 'largest'"):
        tts.select("largest", c)
