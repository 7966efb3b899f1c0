"""Synthetic M3DS: procedurally drawn images for all five modalities.

Every sample's diagnosis is decided by what is drawn: each label of a subset has its
own lesion *style* (outline regularity × fill texture × intensity), and for FIVES,
whose masks are vessel maps, a pathology sign (red dots, yellow drusen, a large optic
cup, or nothing). A model can therefore learn both the mask and the label from the
pixels. The subsets, label sets, split ratios (Table 1) and manifest layout are those of
the real M3DS. Output is a pure function of ``(seed, subset, index)``: sample ``j`` of a
subset is the same whatever ``n`` is.

Two knobs make the task harder for ablations (``sim4seg data synth --lesion-scale LO HI
--distractors MIN MAX``): the lesion radius as a fraction of the image's shorter side (default
0.10–0.22), and distractor blobs — drawn in lesion styles that are no label of the subset, left
out of the mask — from a random stream of their own, so that the defaults (no distractors)
reproduce the data drawn before the knobs existed, bit for bit. FIVES (vessel masks) gets no
distractors.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sim4seg.data import prompts
from sim4seg.data.io import write_image, write_mask
from sim4seg.data.schema import Answers, DatasetInfo, Sample, Source, write_manifest
from sim4seg.data.subsets import SPLITS, SUBSETS, SubsetInfo

log = logging.getLogger(__name__)

LESION_SCALE = (0.10, 0.22)
"""Default lesion radius range, as a fraction of the image's shorter side."""
DISTRACTORS = (0, 0)
"""Default number of distractor blobs per image (min, max): none."""

SHAPES = ("round", "spiky", "oblong")
TEXTURES = ("solid", "striped", "dotted")
TONES = ("bright", "dark")


@dataclass(frozen=True)
class Style:
    shape: str
    texture: str
    tone: str


def label_styles(n: int) -> list[Style]:
    """``n`` distinct styles, ordered so that labels of a small set differ in several properties."""
    combos = [Style(SHAPES[i % 3], TEXTURES[(i // 3 + i) % 3], TONES[i % 2]) for i in range(18)]
    seen, out = set(), []
    for s in combos + [Style(a, b, c) for a in SHAPES for b in TEXTURES for c in TONES]:
        if s not in seen:
            seen.add(s)
            out.append(s)
    if n > len(out):
        raise ValueError(f"at most {len(out)} distinct lesion styles, asked for {n}")
    return out[:n]


def style_of(info: SubsetInfo, label: str) -> Style | None:
    """The lesion style that marks ``label`` (``None`` for the no-finding label)."""
    if label == info.no_finding:
        return None
    findings = [lb for lb in info.labels if lb != info.no_finding]
    return label_styles(len(findings))[findings.index(label)]


def split_counts(n: int, ratio: tuple[int, int, int]) -> tuple[int, int, int]:
    """Split ``n`` by ``ratio`` (largest remainder), at least one val and test sample when n >= 3."""
    total = sum(ratio)
    raw = [n * r / total for r in ratio]
    counts = [math.floor(x) for x in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    if n >= 3:
        for i in (1, 2):
            if counts[i] == 0:
                counts[i] = 1
                counts[0] -= 1
    return counts[0], counts[1], counts[2]


# ---------------------------------------------------------------- drawing helpers


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int = 24) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8), mode="L")
    return np.asarray(grid.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0


def _outline(rng: np.random.Generator, shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "oblong":  # a rotated rectangle, about 2.5 times as long as wide
        a = rng.uniform(0, math.pi)
        hw, hh = r * 1.1, r * 0.42
        pts = [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
        return [(cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)) for x, y in pts]
    n = 40 if shape == "round" else 16
    aspect = rng.uniform(0.85, 1.0)
    out = []
    for k in range(n):
        t = 2 * math.pi * k / n
        rr = r * (rng.uniform(0.95, 1.05) if shape == "round" else (1.0 if k % 2 == 0 else 0.5))
        out.append((cx + rr * math.cos(t), cy + rr * aspect * math.sin(t)))
    return out


def _texture(texture: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Fill pattern in [0, 1] (1 = full lesion contrast)."""
    if texture == "solid":
        return np.ones((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if texture == "striped":
        a = rng.uniform(0, math.pi)
        return (np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / 7)) > 0).astype(np.float32)
    return ((np.mod(xx, 6) < 3) & (np.mod(yy, 6) < 3)).astype(np.float32)  # dotted


# Background colour, lesion colour per tone, and whether the modality is gray.
_PALETTE = {
    "xray": ((70, 70, 70), {"bright": (215, 215, 215), "dark": (10, 10, 10)}),
    "dermoscopy": ((222, 178, 150), {"bright": (170, 110, 70), "dark": (70, 35, 25)}),
    "endoscopy": ((205, 95, 85), {"bright": (245, 190, 160), "dark": (110, 30, 35)}),
    "ultrasound": ((95, 95, 95), {"bright": (225, 225, 225), "dark": (12, 12, 12)}),
    "fundus": ((200, 90, 40), {"bright": (250, 220, 120), "dark": (110, 20, 15)}),
}


def _background(modality: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.array(_PALETTE[modality][0], np.float32)
    noise = _smooth_noise(rng, h, w)[..., None]
    img = base * (0.85 + 0.3 * noise)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if modality == "xray":  # a bright bone-like band across the image
        a = rng.uniform(0, math.pi)
        d = np.abs((xx - w / 2) * math.sin(a) - (yy - h / 2) * math.cos(a))
        img += 45.0 * (d < min(h, w) * rng.uniform(0.1, 0.2))[..., None]
    elif modality == "ultrasound":  # multiplicative speckle
        img *= rng.rayleigh(0.8, (h, w, 1)).astype(np.float32)
    elif modality in ("endoscopy", "fundus"):  # dark vignette outside a disc
        r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
        img *= np.clip(1.25 - r, 0, 1)[..., None] if modality == "endoscopy" else (r < 0.95)[..., None]
    img += rng.normal(0, 4, img.shape)
    return img


def _draw_lesions(
    img: np.ndarray, rng: np.random.Generator, modality: str, style: Style, scale: tuple[float, float] = LESION_SCALE
) -> tuple[np.ndarray, int]:
    h, w = img.shape[:2]
    mask_img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask_img)
    count = int(rng.choice([1, 1, 1, 2, 2, 3]))
    m = min(h, w)
    for _ in range(count):
        r = rng.uniform(*scale) * m
        cx, cy = rng.uniform(r + 2, w - r - 2), rng.uniform(r + 2, h - r - 2)
        draw.polygon(_outline(rng, style.shape, cx, cy, r), fill=255)
    mask = np.asarray(mask_img) > 0
    colour = np.array(_PALETTE[modality][1][style.tone], np.float32)
    alpha = (0.45 + 0.55 * _texture(style.texture, h, w, rng))[..., None] * mask[..., None]
    img[:] = img * (1 - alpha) + colour * alpha
    return mask, count


def distractor_styles(info: SubsetInfo) -> list[Style]:
    """Lesion styles that mark no label of ``info`` (what distractor blobs are drawn in)."""
    findings = [lb for lb in info.labels if lb != info.no_finding]
    used = set(label_styles(len(findings)))
    return [s for s in label_styles(len(SHAPES) * len(TEXTURES) * len(TONES)) if s not in used]


def _draw_distractors(
    img: np.ndarray, rng: np.random.Generator, info: SubsetInfo, count: int, scale: tuple[float, float]
) -> None:
    """Paint ``count`` blobs in styles of no label of ``info`` onto ``img`` (they are not in the mask)."""
    h, w = img.shape[:2]
    styles = distractor_styles(info)
    m = min(h, w)
    for _ in range(count):
        style = styles[int(rng.integers(len(styles)))]
        r = rng.uniform(*scale) * m
        cx, cy = rng.uniform(r + 2, w - r - 2), rng.uniform(r + 2, h - r - 2)
        blob = Image.new("L", (w, h), 0)
        ImageDraw.Draw(blob).polygon(_outline(rng, style.shape, cx, cy, r), fill=255)
        sel = (np.asarray(blob) > 0)[..., None]
        colour = np.array(_PALETTE[info.modality][1][style.tone], np.float32)
        alpha = (0.45 + 0.55 * _texture(style.texture, h, w, rng))[..., None] * sel
        img[:] = img * (1 - alpha) + colour * alpha


def _draw_fundus(img: np.ndarray, rng: np.random.Generator, label: str) -> np.ndarray:
    """Vessels (the mask) plus the sign of ``label``."""
    h, w = img.shape[:2]
    vessels = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(vessels)
    disc = (w * rng.uniform(0.25, 0.35), h * rng.uniform(0.4, 0.6))
    for _ in range(int(rng.integers(4, 7))):
        x, y = disc
        angle = rng.uniform(0, 2 * math.pi)
        pts = [(x, y)]
        for _ in range(12):
            angle += rng.normal(0, 0.3)
            x, y = x + math.cos(angle) * min(h, w) / 14, y + math.sin(angle) * min(h, w) / 14
            pts.append((x, y))
        draw.line(pts, fill=255, width=max(2, min(h, w) // 45))
    mask = np.asarray(vessels) > 0
    mask &= np.hypot(*np.meshgrid((np.arange(w) - w / 2) / (w / 2), (np.arange(h) - h / 2) / (h / 2))) < 0.95
    img[mask] = img[mask] * 0.45 + np.array([120, 15, 10], np.float32) * 0.55
    sign = Image.new("L", (w, h), 0)
    sd = ImageDraw.Draw(sign)
    disc_r = min(h, w) * (0.13 if label == "glaucoma" else 0.06)
    sd.ellipse([disc[0] - disc_r, disc[1] - disc_r, disc[0] + disc_r, disc[1] + disc_r], fill=255)
    colour = {"bright": np.array([255, 235, 150], np.float32), "dark": np.array([90, 10, 10], np.float32)}
    sel = np.asarray(sign) > 0
    img[sel] = colour["bright"]
    macula = (w * 0.65, h * 0.5)
    if label == "diabetic retinopathy":
        for _ in range(int(rng.integers(12, 20))):
            x, y = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
            r = min(h, w) * 0.015
            dots = Image.new("L", (w, h), 0)
            ImageDraw.Draw(dots).ellipse([x - r, y - r, x + r, y + r], fill=255)
            img[np.asarray(dots) > 0] = colour["dark"]
    elif label == "age-related macular degeneration":
        drusen = Image.new("L", (w, h), 0)
        dd = ImageDraw.Draw(drusen)
        for _ in range(int(rng.integers(8, 14))):
            x, y = macula[0] + rng.normal(0, w * 0.05), macula[1] + rng.normal(0, h * 0.05)
            r = min(h, w) * 0.025
            dd.ellipse([x - r, y - r, x + r, y + r], fill=255)
        img[np.asarray(drusen) > 0] = np.array([240, 230, 110], np.float32)
    return mask


def draw_sample(
    info: SubsetInfo,
    label: str,
    rng: np.random.Generator,
    size_range: tuple[int, int] = (160, 256),
    *,
    lesion_scale: tuple[float, float] = LESION_SCALE,
    distractors: tuple[int, int] = DISTRACTORS,
    distractor_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw one image of ``info``'s modality showing ``label``; return ``(image, mask, instances)``.

    Distractor blobs (``distractors`` = (min, max) per image) are drawn under the lesions from
    ``distractor_rng`` alone, so that ``rng`` draws the same lesions with or without them.
    """
    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    img = _background(info.modality, rng, h, w)
    if distractors[1] > 0 and info.modality != "fundus":
        drng = distractor_rng if distractor_rng is not None else np.random.default_rng()
        _draw_distractors(img, drng, info, int(drng.integers(distractors[0], distractors[1] + 1)), lesion_scale)
    if info.modality == "fundus":
        mask, count = _draw_fundus(img, rng, label), 1
    else:
        style = style_of(info, label)
        if style is None:
            mask, count = np.zeros((h, w), bool), 0
        else:
            mask, count = _draw_lesions(img, rng, info.modality, style, lesion_scale)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if info.modality in ("xray", "ultrasound"):
        image = np.repeat(image.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
    return image, mask, count


_DISTRACTOR_STREAM = 0xD157
"""Fourth seed word of the distractors' own random stream."""


def check_knobs(lesion_scale: tuple[float, float], distractors: tuple[int, int]) -> None:
    """``ValueError`` unless 0 < LO <= HI <= 0.45 and 0 <= MIN <= MAX."""
    lo, hi = lesion_scale
    if not 0 < lo <= hi <= 0.45:
        raise ValueError(f"lesion scale must satisfy 0 < LO <= HI <= 0.45 (radius / shorter side), got {lo}, {hi}")
    if not 0 <= distractors[0] <= distractors[1]:
        raise ValueError(f"distractors must satisfy 0 <= MIN <= MAX, got {distractors[0]}, {distractors[1]}")


def _label_for(info: SubsetInfo, rng: np.random.Generator) -> str:
    return info.labels[int(rng.integers(len(info.labels)))]


def make_sample(
    root: Path,
    info: SubsetInfo,
    index: int,
    split: str,
    seed: int,
    size_range: tuple[int, int] = (160, 256),
    *,
    lesion_scale: tuple[float, float] = LESION_SCALE,
    distractors: tuple[int, int] = DISTRACTORS,
) -> Sample:
    """Draw sample ``index`` of subset ``info``, write its files under ``root``, return its record."""
    subset_idx = list(SUBSETS).index(info.name) if info.name in SUBSETS else 100 + sum(map(ord, info.name))
    rng = np.random.default_rng([seed, subset_idx, index])
    drng = np.random.default_rng([seed, subset_idx, index, _DISTRACTOR_STREAM])
    label = _label_for(info, rng)
    image, mask, count = draw_sample(
        info, label, rng, size_range, lesion_scale=lesion_scale, distractors=distractors, distractor_rng=drng
    )
    sid = f"{info.name}-{index:05d}"
    gray = info.modality in ("xray", "ultrasound")
    image_rel = f"images/{info.name}/{sid}.{'png' if gray else 'jpg'}"
    mask_rel = f"masks/{info.name}/{sid}.png"
    write_image(root / image_rel, image[..., 0] if gray else image)
    write_mask(root / mask_rel, mask)
    return Sample(
        id=sid,
        subset=info.name,
        modality=info.modality,
        split=split,
        image=image_rel,
        mask=mask_rel,
        query=prompts.make_query(info, seed, sid),
        diagnosis=label,
        answers=Answers(**prompts.make_answers(label, seed, sid)),
        source=Source(
            dataset="synthetic",
            files=[],
            annotation_ids=[],
            mask_from="synthetic" if mask.any() else "empty",
            instances=count,
        ),
    )


def synthesize(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    *,
    subsets: list[str] | None = None,
    size_range: tuple[int, int] = (160, 256),
    progress: bool = False,
    lesion_scale: tuple[float, float] = LESION_SCALE,
    distractors: tuple[int, int] = DISTRACTORS,
) -> DatasetInfo:
    """Write a synthetic M3DS of ``n`` samples to ``out``; subsets share ``n`` equally.

    ``lesion_scale``: lesion radius range as a fraction of the shorter side; ``distractors``:
    (min, max) blobs per image in styles of no label (not in the mask). Both are recorded in
    ``dataset_info.json``'s ``build``.
    """
    names = list(SUBSETS) if not subsets else subsets
    unknown = [s for s in names if s not in SUBSETS]
    if unknown:
        raise ValueError(f"unknown subset(s) {unknown}; known: {', '.join(SUBSETS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (16 <= size_range[0] <= size_range[1]):
        raise ValueError(f"size_range must satisfy 16 <= min <= max, got {size_range}")
    lesion_scale, distractors = tuple(map(float, lesion_scale)), tuple(map(int, distractors))
    check_knobs(lesion_scale, distractors)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    per_subset = [n // len(names) + (1 if i < n % len(names) else 0) for i in range(len(names))]
    jobs = []
    for name, count in zip(names, per_subset):
        info = SUBSETS[name]
        bounds = np.cumsum(split_counts(count, info.paper_sizes))
        jobs += [(info, j, SPLITS[int(np.searchsorted(bounds, j, side="right"))]) for j in range(count)]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc="synth", unit="img")
    samples = [
        make_sample(root, info, j, split, seed, size_range, lesion_scale=lesion_scale, distractors=distractors)
        for info, j, split in jobs
    ]
    info = DatasetInfo(
        subsets={name: SUBSETS[name] for name in names},
        build={
            "command": "synth",
            "n": n,
            "seed": seed,
            "subsets": names,
            "size_range": list(size_range),
            "lesion_scale": list(lesion_scale),
            "distractors": list(distractors),
        },
    )
    write_manifest(root, samples, info)
    log.info("wrote %d synthetic samples to %s", len(samples), root)
    return info
