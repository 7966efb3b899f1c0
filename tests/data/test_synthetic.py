import hashlib

import numpy as np
import pytest

from sim4seg.data.io import read_image, read_mask
from sim4seg.data.schema import read_info, read_split
from sim4seg.data.subsets import SPLITS, SUBSETS
from sim4seg.data.synthetic import draw_sample, label_styles, split_counts, style_of, synthesize


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "dataset_info.json":
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_by_seed(tmp_path):
    synthesize(tmp_path / "a", 20, seed=5, size_range=(40, 60))
    synthesize(tmp_path / "b", 20, seed=5, size_range=(40, 60))
    synthesize(tmp_path / "c", 20, seed=6, size_range=(40, 60))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_sample_does_not_depend_on_n(tmp_path):
    synthesize(tmp_path / "small", 10, seed=1, size_range=(40, 60))
    synthesize(tmp_path / "big", 30, seed=1, size_range=(40, 60))
    for name in ("images/busi/busi-00000.png", "masks/fives/fives-00000.png"):
        assert (tmp_path / "small" / name).read_bytes() == (tmp_path / "big" / name).read_bytes()


def test_manifest_structure(synth_m3ds):
    info = read_info(synth_m3ds)
    assert set(info.subsets) == set(SUBSETS)
    samples = [s for sp in SPLITS for s in read_split(synth_m3ds, sp, info)]
    assert len(samples) == 60 and len({s.id for s in samples}) == 60
    per_subset = {name: [s for s in samples if s.subset == name] for name in SUBSETS}
    assert all(len(v) == 6 for v in per_subset.values())
    for s in samples:
        img, mask = read_image(synth_m3ds / s.image), read_mask(synth_m3ds / s.mask)
        assert img.shape[:2] == mask.shape
        assert 48 <= min(img.shape[:2]) and max(img.shape[:2]) <= 80
        if s.diagnosis == SUBSETS[s.subset].no_finding:
            assert not mask.any() and s.source.instances == 0 and s.source.mask_from == "empty"
        else:
            assert mask.any() and s.source.instances >= 1
        assert s.modality in s.query or SUBSETS[s.subset].target in s.query


def test_split_counts_follow_table1_ratios():
    assert split_counts(717, SUBSETS["fracatlas"].paper_sizes) == (574, 82, 61)
    assert sum(split_counts(7, (10, 1, 1))) == 7 and split_counts(7, (10, 1, 1))[1:] == (1, 1)
    assert split_counts(1, (5, 1, 1)) == (1, 0, 0)


def test_styles_distinct():
    for info in SUBSETS.values():
        findings = [lb for lb in info.labels if lb != info.no_finding]
        if info.modality != "fundus":
            assert len({style_of(info, lb) for lb in findings}) == len(findings)
    assert len(set(label_styles(18))) == 18
    with pytest.raises(ValueError):
        label_styles(19)


def _components(mask):
    """Connected components of a bool mask (4-connectivity), grown by repeated dilation."""
    left, out = mask.copy(), []
    while left.any():
        y, x = np.argwhere(left)[0]
        comp = np.zeros_like(mask)
        comp[y, x] = True
        while True:
            grown = comp.copy()
            grown[1:] |= comp[:-1]
            grown[:-1] |= comp[1:]
            grown[:, 1:] |= comp[:, :-1]
            grown[:, :-1] |= comp[:, 1:]
            grown &= mask
            if (grown == comp).all():
                break
            comp = grown
        out.append(comp)
        left &= ~comp
    return out


def _hull_area(points):
    pts = sorted(set(map(tuple, points)))

    def half(seq):
        h = []
        for p in seq:
            while (
                len(h) >= 2
                and (h[-1][0] - h[-2][0]) * (p[1] - h[-2][1]) - (h[-1][1] - h[-2][1]) * (p[0] - h[-2][0]) <= 0
            ):
                h.pop()
            h.append(p)
        return h

    hull = half(pts)[:-1] + half(pts[::-1])[:-1]
    xs, ys = np.array([p[0] for p in hull], float), np.array([p[1] for p in hull], float)
    return 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))


def _shape(component):
    ys, xs = np.nonzero(component)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    solidity = component.sum() / max(_hull_area(corners), 1)
    ev = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float)))
    return solidity, np.sqrt(ev[1] / max(ev[0], 1e-6))


def _autocorr(gray, mask, dy, dx):
    """Correlation of the pixels of ``mask`` with those ``(dy, dx)`` away (both inside)."""
    h, w = gray.shape
    a = gray[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    b = gray[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
    m = (
        mask[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
        & mask[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
    )
    if m.sum() < 10:
        return 0.0
    x, y = a[m] - a[m].mean(), b[m] - b[m].mean()
    return float((x * y).mean() / (x.std() * y.std() + 1e-6))


def features(img, mask, modality):
    """Pixel statistics of tone, texture and outline; nothing here reads the label."""
    img = img.astype(np.float32)
    if modality == "fundus":
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        yellow = ((r > 200) & (g > 180)).mean()
        dark_red = ((r < 110) & (r > 60) & (g < 30)).mean()
        return np.array([yellow * 50, dark_red * 500, ((r > 240) & (g > 220) & (b > 130)).mean() * 50])
    if not mask.any():
        return np.zeros(5)
    gray = img.mean(2)
    core = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    patterned = float(gray[core].std() > 12) if core.sum() > 10 else 0.0
    corr = [
        _autocorr(gray, core, dy, dx) for dy, dx in ((0, 3), (3, 0), (2, 2), (2, -2), (1, 3), (3, 1), (3, -1), (1, -3))
    ]
    shapes = np.array([_shape(c) for c in _components(mask) if c.sum() >= 20] or [(1.0, 1.0)])
    solidity, elongation = shapes.mean(0)
    return np.array(
        [
            np.sign(gray[mask].mean() - gray[~mask].mean()) * 2,
            patterned * 2,
            patterned * (max(corr) > 0.5) * 2,
            (solidity < 0.8) * 2,
            (elongation > 1.8) * 2,
        ]
    )


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_label_is_decided_by_pixels(subset):
    """A nearest-centroid classifier on pixel statistics recovers the diagnosis."""
    info = SUBSETS[subset]
    rng = np.random.default_rng(11)
    data = []
    for _ in range(30 * len(info.labels)):
        label = info.labels[int(rng.integers(len(info.labels)))]
        img, mask, _ = draw_sample(info, label, rng, (96, 128))
        data.append((features(img, mask, info.modality), label))
    train, test = data[: len(data) // 2], data[len(data) // 2 :]
    centroids = {
        lb: np.mean([f for f, y in train if y == lb], axis=0) for lb in info.labels if any(y == lb for _, y in train)
    }
    correct = sum(min(centroids, key=lambda lb: np.linalg.norm(f - centroids[lb])) == y for f, y in test)
    assert correct / len(test) >= 0.9, f"{subset}: {correct}/{len(test)}"


def test_samples_not_divisible_by_the_subsets_write_and_count_right(tmp_path):
    """103 samples over the ten subsets: the remainder is drawn too and counted (the speed of a thousand is
    measured by benchmarks/bench_build.py)."""
    synthesize(tmp_path, 103, seed=0)
    info = read_info(tmp_path)
    assert sum(sum(v.values()) for v in info.counts.values()) == 103
    assert sum(1 for split in ("train", "val", "test") for _ in open(tmp_path / f"{split}.jsonl")) == 103


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown subset"):
        synthesize(tmp_path, 5, subsets=["nope"])
    with pytest.raises(ValueError, match="n must be >= 1"):
        synthesize(tmp_path, 0)


# The defaults drew these bytes before --lesion-scale / --distractors existed (pinned on 2026-12-01
# from the code of commit d196ec0): the knobs must not change the default data.
DEFAULT_ARRAYS_SHA256 = "5a2a47f3550c88912210b07849af20dd6fb42146ec7b6a9a3161e1664c69aee5"


def _arrays_digest(**knobs):
    h = hashlib.sha256()
    for k, name in enumerate(SUBSETS):
        info = SUBSETS[name]
        for j in range(4):
            rng = np.random.default_rng([7, k, j])
            label = info.labels[j % len(info.labels)]
            img, mask, count = draw_sample(info, label, rng, (48, 72), **knobs)
            h.update(img.tobytes() + np.packbits(mask).tobytes() + bytes([count]))
    return h.hexdigest()


def test_default_knobs_reproduce_the_data_drawn_before_them():
    assert _arrays_digest() == DEFAULT_ARRAYS_SHA256
    assert (
        _arrays_digest(lesion_scale=(0.10, 0.22), distractors=(0, 0), distractor_rng=np.random.default_rng(1))
        == DEFAULT_ARRAYS_SHA256
    )


def test_distractors_change_pixels_not_masks_and_lesion_scale_sizes_lesions(tmp_path):
    from sim4seg.data.synthetic import distractor_styles

    plain, clutter, small = tmp_path / "plain", tmp_path / "clutter", tmp_path / "small"
    synthesize(plain, 20, seed=4, subsets=["busi", "kvasir_seg"], size_range=(64, 64))
    synthesize(clutter, 20, seed=4, subsets=["busi", "kvasir_seg"], size_range=(64, 64), distractors=(2, 5))
    synthesize(small, 20, seed=4, subsets=["busi", "kvasir_seg"], size_range=(64, 64), lesion_scale=(0.06, 0.09))
    info = read_info(clutter)
    assert info.build["distractors"] == [2, 5] and info.build["lesion_scale"] == [0.10, 0.22]
    assert read_info(small).build["lesion_scale"] == [0.06, 0.09]
    changed = 0
    area = {"plain": [], "small": []}
    for sp in SPLITS:
        for s, c, t in zip(read_split(plain, sp), read_split(clutter, sp), read_split(small, sp)):
            assert s.id == c.id and s.diagnosis == c.diagnosis == t.diagnosis
            assert (read_mask(plain / s.mask) == read_mask(clutter / c.mask)).all()  # blobs are not in the mask
            changed += not np.array_equal(read_image(plain / s.image), read_image(clutter / c.image))
            if s.source.instances == t.source.instances == 1:
                area["plain"].append(read_mask(plain / s.mask).mean())
                area["small"].append(read_mask(small / t.mask).mean())
    assert changed == 20  # every image got 2-5 blobs
    assert area["small"] and max(area["small"]) < 0.04 < np.mean(area["plain"])
    for name in SUBSETS:
        labels = {style_of(SUBSETS[name], lb) for lb in SUBSETS[name].labels}
        assert distractor_styles(SUBSETS[name]) and not labels & set(distractor_styles(SUBSETS[name]))


def test_synth_knobs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="lesion scale"):
        synthesize(tmp_path, 3, lesion_scale=(0.3, 0.2))
    with pytest.raises(ValueError, match="distractors"):
        synthesize(tmp_path, 3, distractors=(3, 1))
