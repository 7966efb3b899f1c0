"""Fixture trees of the ten source datasets, in their real layouts, with their quirks.

Each ``write_<source>(base)`` writes a small copy of the dataset under ``base`` and
returns the folder a user would pass as ``--source <source>=PATH``. Pixel geometry
follows the builder's convention (a pixel belongs to a shape when its centre is
inside), so a rectangle ``x0..x1 × y0..y1`` covers columns ``x0..x1-1`` and rows
``y0..y1-1``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def image(path: Path, w: int, h: int, mode: str = "RGB", orientation: int | None = None, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + w * 31 + h)
    arr = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    img = Image.fromarray(arr, mode=mode)
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    img.save(path, format=fmt, **kwargs)


def rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def mask_file(path: Path, mask: np.ndarray, mode: str = "L", fmt: str | None = None) -> None:
    """Write a bool mask as gray/RGB/RGBA PNG or JPEG (fmt from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gray = np.where(mask, 255, 0).astype(np.uint8)
    if mode == "RGB":
        arr = np.stack([gray] * 3, axis=2)
    elif mode == "RGBA":
        arr = np.stack([gray] * 3 + [np.full_like(gray, 255)], axis=2)
    else:
        arr = gray
    fmt = fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    Image.fromarray(arr, mode=mode).save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def poly(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


# ---------------------------------------------------------------- FracAtlas

FRACATLAS_COLS = (
    "image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,frontal,lateral,oblique"
)


def write_fracatlas(base: Path) -> Path:
    root = base / "FracAtlas"
    frac, non = root / "images" / "Fractured", root / "images" / "Non_fractured"
    image(frac / "IMG0000001.jpg", 40, 30)
    image(frac / "IMG0000002.jpg", 40, 30, mode="L")  # grayscale
    image(frac / "IMG0002628.jpg", 40, 30, orientation=8)  # annotated in the displayed frame
    image(frac / "IMG0000004.jpg", 40, 30, orientation=6)  # annotated in the stored frame
    image(frac / "IMG0000005.jpg", 40, 30)  # fractured=0 in the CSV
    image(frac / "IMG0000006.jpg", 40, 30)  # only bad polygons
    for n in (10, 11, 13, 14, 17, 20):  # numbering has gaps
        image(non / f"IMG{n:07d}.jpg", 24, 24, seed=n)
    images = [
        ("IMG0000001.jpg", 40, 30),
        ("IMG0000002.jpg", 40, 30),
        ("IMG0002628.jpg", 30, 40),
        ("IMG0000004.jpg", 40, 30),
        ("IMG0000005.jpg", 40, 30),
        ("IMG0000006.jpg", 40, 30),
        ("IMG0000010.jpg", 24, 24),
        ("IMG0000099.jpg", 40, 30),
    ]
    coco_images = [{"id": i + 1, "file_name": f, "width": w, "height": h} for i, (f, w, h) in enumerate(images)]
    anns = [
        (1, poly(5, 5, 15, 10)),
        (1, poly(20, 20, 30, 25)),
        (1, [3, 3, 8, 8]),  # 2 instances + a degenerate one
        (2, [10, 10, 20, 10, 10, 20]),  # triangle
        (3, poly(2, 20, 8, 30)),  # displayed 30x40 frame
        (4, poly(0, 0, 10, 5)),  # stored 40x30 frame
        (5, poly(30, 0, 45, 10)),  # partly outside: clipped
        (6, [1, 1, 1, 1, 1, 1]),
        (6, poly(100, 100, 120, 120)),  # degenerate, outside
        (8, poly(1, 1, 5, 5)),  # image missing
    ]
    coco = {
        "images": coco_images,
        "categories": [{"id": 0, "name": "bone"}, {"id": 1, "name": "fractured"}],
        "annotations": [
            {"id": k, "image_id": im, "category_id": 1, "segmentation": [p], "bbox": [], "area": 0}
            for k, (im, p) in enumerate(anns)
        ]
        + [{"id": 99, "image_id": 7, "category_id": 0, "segmentation": [poly(1, 1, 9, 9)]}],
    }  # other category
    ann_path = root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    ann_path.parent.mkdir(parents=True)
    ann_path.write_text(json.dumps(coco))
    rows = [
        FRACATLAS_COLS,
        "IMG0000001.jpg,1,0,0,0,0,0,0,1,2,1,0,0",
        "IMG0000002.jpg,0,1,1,0,0,0,0,1,1,1,0,0",
        "IMG0002628.jpg,0,0,0,1,0,0,0,1,1,1,0,0",
        "IMG0000004.jpg,0,0,1,0,0,0,0,1,1,0,1,0",
        "IMG0000005.jpg,1,0,0,0,0,0,0,0,0,1,0,0",
        "IMG0000006.jpg,1,0,0,0,0,0,0,1,1,1,0,0",
    ]
    rows += [f"IMG{n:07d}.jpg,0,1,0,0,0,0,0,0,0,1,0,0" for n in (10, 11, 13, 14, 17, 20)]
    (root / "dataset.csv").write_bytes(("\n".join(rows) + "\n").encode("utf-8-sig"))  # with a BOM
    split = root / "Utilities" / "Fracture Split"
    split.mkdir(parents=True)
    (split / "train.csv").write_text("image_id\nIMG0000001.jpg\nIMG0000002.jpg\nIMG0002628.jpg\nIMG0000006.jpg\n")
    (split / "valid.csv").write_text("image_id\nIMG0000004.jpg\n")
    (split / "test.csv").write_text("image_id\nIMG0000005.jpg\n")
    return base


# ---------------------------------------------------------------- Roboflow YOLO exports


def _yolo(root: Path, names: list[str], files: dict[str, tuple[int, int, str | None]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(
        f"train: ../train/images\nval: ../valid/images\nnc: {len(names)}\nnames: {names!r}\n"
    )
    for folder in ("train", "valid", "test"):
        (root / folder / "images").mkdir(parents=True, exist_ok=True)
        (root / folder / "labels").mkdir(parents=True, exist_ok=True)
    for rel, (w, h, label) in files.items():
        folder, name = rel.split("/")
        image(root / folder / "images" / name, w, h)
        if label is not None:
            (root / folder / "labels" / (Path(name).stem + ".txt")).write_text(label)


def write_bone_fracture(base: Path) -> Path:
    root = base / "bone-fracture-7fylg"
    _yolo(
        root,
        ["angle", "fracture", "line", "messed_up_angle"],
        {
            "train/105_jpg.rf.aaa.jpg": (40, 20, "1 0.5 0.5 0.5 0.5\n3 0.25 0.25 0.1 0.1"),  # no trailing newline
            "train/106_jpg.rf.bbb.jpg": (40, 20, ""),  # empty: no fracture
            "valid/105_jpg.rf.ccc.jpg": (40, 20, "1 0.5 0.5 0.5 0.5\n"),  # copy of 105
            "valid/107_jpg.rf.ddd.jpg": (30, 30, "3 0.5 0.5 0.2 0.2\n"),
            "test/108_jpg.rf.eee.jpg": (30, 30, None),  # no label file
            "test/109_jpg.rf.fff.jpg": (30, 30, "0 0.5 0.5 0.4 0.4\n7 0.5 0.5 0.1 0.1\n"),  # class 7 unknown
        },
    )
    return root


BFD_NAMES = [
    "elbow positive",
    "fingers positive",
    "forearm fracture",
    "humerus fracture",
    "humerus",
    "shoulder fracture",
    "wrist positive",
]


def write_bfd(base: Path, names: list[str] | None = None) -> Path:
    root = base / "BoneFractureYolo8"
    closed = "0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5 0.1 0.1\n"  # closed by repeating the first point
    _yolo(
        root,
        names or BFD_NAMES,
        {
            "train/a1_jpg.rf.x1.jpg": (40, 40, closed),
            "valid/a1_jpg.rf.x2.jpg": (40, 40, closed),
            "test/a1_jpg.rf.x3.jpg": (40, 40, closed),
            "train/a2_jpg.rf.y1.jpg": (40, 40, ""),  # empty: excluded
            "train/a3_jpg.rf.z1.jpg": (40, 40, "4 0.0 0.0 0.25 0.0 0.25 0.25\n2 0.5 0.5 1.0 0.5 1.0 1.0 0.5 1.0\n"),
            "test/b1_jpg.rf.w1.jpg": (40, 40, f"{len(names or BFD_NAMES) - 1} 0.5 0.5 0.5 0.5\n"),  # 5 values: a box
        },
    )
    return base


# ---------------------------------------------------------------- dermoscopy


def write_isbi2016(base: Path) -> Path:
    root = base / "isbi2016"
    for part, ids in (("Training", (0, 1)), ("Test", (3, 4, 5, 6))):
        for i in ids:
            image(root / f"ISBI2016_ISIC_Part1_{part}_Data" / f"ISIC_{i:07d}.jpg", 32, 24, seed=i)
            if i != 6:
                mask_file(
                    root / f"ISBI2016_ISIC_Part1_{part}_GroundTruth" / f"ISIC_{i:07d}_Segmentation.png",
                    rect(24, 32, i, 2, 20 + i, 20),
                )
    (root / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv").write_text("ISIC_0000000,benign\nISIC_0000001,malignant\n")
    (root / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv").write_text(
        "ISIC_0000003,0.0\nISIC_0000004,1.0\nISIC_0000005,0.0\nISIC_0000006,1.0\n"
    )
    return root


def write_isic2017(base: Path) -> Path:
    root = base / "isic2017"
    parts = {
        "Training": [(10, "1.0,0.0"), (11, "0.0,0.0")],
        "Validation": [(12, "0.0,1.0")],
        "Test_v2": [(13, "0.0,0.0"), (14, "1.0,1.0")],
    }
    for part, rows in parts.items():
        data = root / f"ISIC-2017_{part}_Data"
        for i, _ in rows:
            image(data / f"ISIC_{i:07d}.jpg", 30, 20, seed=i)
            suffix = "_Segmentation" if part == "Validation" else "_segmentation"
            mask_file(
                root / f"ISIC-2017_{part}_Part1_GroundTruth" / f"ISIC_{i:07d}{suffix}.png", rect(20, 30, 3, 3, 12, 9)
            )
        image(data / f"ISIC_{rows[0][0]:07d}_superpixels.png", 30, 20)
        (data / f"ISIC-2017_{part}_Data_metadata.csv").write_text("image_id,age_approximate,sex\n")
        csv = "image_id,melanoma,seborrheic_keratosis\n" + "".join(f"ISIC_{i:07d},{v}\n" for i, v in rows)
        (root / f"ISIC-2017_{part}_Part3_GroundTruth.csv").write_bytes(csv.encode("utf-8-sig"))
    return root


# ---------------------------------------------------------------- endoscopy, ultrasound


def kvasir_mask(i: int) -> np.ndarray:
    return rect(32, 48, 8 + i, 8, 32 + i, 24)


def write_kvasir_seg(base: Path) -> Path:
    root = base / "Kvasir-SEG"
    boxes = {}
    for i in range(10):
        name = f"cju{i:04d}xyz"
        image(root / "images" / f"{name}.jpg", 48, 32, seed=i)
        mask_file(root / "masks" / f"{name}.jpg", kvasir_mask(i), mode="RGB")  # lossy 3-channel JPEG
        boxes[name] = {
            "height": 32,
            "width": 48,
            "bbox": [{"label": "polyp", "xmin": 8 + i, "ymin": 8, "xmax": 32 + i, "ymax": 24}],
        }
    (base / "kavsir_bboxes.json").write_text(json.dumps(boxes))
    return base


def write_busi(base: Path) -> Path:
    root = base / "Dataset_BUSI_with_GT"
    image(root / "benign" / "benign (1).png", 30, 20, mode="L")
    mask_file(root / "benign" / "benign (1)_mask.png", rect(20, 30, 2, 2, 10, 10), mode="RGBA")
    mask_file(root / "benign" / "benign (1)_mask_1.png", rect(20, 30, 15, 5, 25, 15))
    image(root / "benign" / "benign (2).png", 30, 20, mode="L", seed=2)
    mask_file(root / "benign" / "benign (2)_mask.png", rect(20, 30, 0, 0, 5, 5))
    image(root / "malignant" / "malignant (1).png", 30, 20, seed=3)
    mask_file(root / "malignant" / "malignant (1)_mask.png", rect(20, 30, 5, 5, 20, 15), mode="RGB")
    image(root / "malignant" / "malignant (2).png", 30, 20, seed=4)  # no mask
    image(root / "normal" / "normal (1).png", 30, 20, mode="L", seed=5)
    mask_file(root / "normal" / "normal (1)_mask.png", np.zeros((20, 30), bool))
    return base


def write_tn3k(base: Path) -> Path:
    root = base / "tn3k"
    for part, n in (("trainval", 4), ("test", 2)):
        for i in range(n):
            image(root / f"{part}-image" / f"{i:04d}.jpg", 32, 32, mode="L", seed=i)
            mask_file(root / f"{part}-mask" / f"{i:04d}.jpg", rect(32, 32, 4, 4, 20 + i, 20))
    (base / "tn3k-trainval-fold0.json").write_text(json.dumps({"train": [0, 2, 3], "val": [1]}))
    (base / "label4trainval.csv").write_bytes("0000.jpg,0\n0001.jpg,1\n0002.jpg,0\n".encode("utf-8-sig"))
    (base / "label4test.csv").write_text("0000.jpg,1\n0001.jpg,0\n")
    return base


# ---------------------------------------------------------------- chest X-ray, fundus


def write_chestx_det(base: Path) -> Path:
    root = base / "chestx_det"
    for n in (1, 2, 3):
        image(root / "train_data" / f"{n}.png", 40, 40, mode="L", seed=n)
    for n in (4, 5):
        image(root / "test_data" / f"{n}.png", 40, 40, mode="L", seed=n)
    rgba = Image.fromarray(np.random.default_rng(6).integers(0, 256, (40, 40, 4), dtype=np.uint8), mode="RGBA")
    rgba.save(root / "test_data" / "6.png")  # RGBA PNG

    def pts(x0, y0, x1, y1):
        return [[x0, y0], [x1, y0], [x1, y0], [x1, y1], [x0, y1]]  # a duplicate point

    train = [
        {
            "file_name": "1.png",
            "syms": ["Effusion", "Nodule", "Effusion"],
            "boxes": [],
            "polygons": [pts(0, 0, 10, 10), pts(30, 30, 33, 33), pts(20, 0, 30, 10)],
        },
        {"file_name": "2.png", "syms": [], "boxes": [], "polygons": []},
        {"file_name": "3.png", "syms": ["Pleural Thickening"], "boxes": [], "polygons": [pts(5, 5, 15, 25)]},
        {"file_name": "404.png", "syms": ["Mass"], "boxes": [], "polygons": [pts(1, 1, 5, 5)]},
    ]
    test = [
        {"file_name": "4.png", "syms": ["Pneumothorax"], "boxes": [], "polygons": [pts(0, 0, 40, 20)]},
        {"file_name": "5.png", "syms": [], "boxes": [], "polygons": []},
        {"file_name": "6.png", "syms": ["Diffuse Nodule"], "boxes": [], "polygons": [pts(10, 10, 20, 20)]},
    ]
    (root / "ChestX_Det_train.json").write_text(json.dumps(train))
    (root / "ChestX_Det_test.json").write_text(json.dumps(test))
    return root


def write_fives(base: Path) -> Path:
    root = base / "FIVES A Fundus Image Dataset"
    files = {"train": ("1_A", "2_N"), "test": ("3_D", "4_G", "5_X")}
    for split, stems in files.items():
        gt = root / split / ("Ground truth" if split == "train" else "Groud truth")
        for i, stem in enumerate(stems):
            image(root / split / "Original" / f"{stem}.png", 36, 36, seed=i)
            mask_file(gt / f"{stem}.png", rect(36, 36, 0, 16 + i, 36, 18 + i), mode="RGB" if i == 0 else "L")
    return base


WRITERS = {
    "fracatlas": write_fracatlas,
    "bone_fracture": write_bone_fracture,
    "bfd": write_bfd,
    "isbi2016": write_isbi2016,
    "isic2017": write_isic2017,
    "kvasir_seg": write_kvasir_seg,
    "busi": write_busi,
    "tn3k": write_tn3k,
    "chestx_det": write_chestx_det,
    "fives": write_fives,
}


def write_all(base: Path) -> dict[str, Path]:
    return {name: fn(base / name) for name, fn in WRITERS.items()}


def jpeg_roundtrip_mask(mask: np.ndarray) -> np.ndarray:
    """What a 0/255 mask saved as a quality-90 JPEG reads back as after thresholding at 127."""
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return np.asarray(Image.open(buf).convert("L")) > 127
