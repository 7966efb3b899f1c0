"""The ten M3DS subsets: modality, canonical label set, no-finding label, Table 1 sizes.

A manifest's ``dataset_info.json`` carries its own label sets (so a user can add
subsets of their own); this registry is what the builders and the synthetic M3DS
write there for the paper's subsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Modality keys and the paper's Table 1 column names.
MODALITIES: dict[str, str] = {
    "xray": "X-Ray",
    "dermoscopy": "DS",
    "endoscopy": "End",
    "ultrasound": "US",
    "fundus": "FP",
}

# Long names used in prompts.
MODALITY_NAMES: dict[str, str] = {
    "xray": "X-ray",
    "dermoscopy": "dermoscopy",
    "endoscopy": "endoscopy",
    "ultrasound": "ultrasound",
    "fundus": "fundus photograph",
}

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SubsetInfo:
    name: str
    """Key used in manifests (``subset`` field)."""
    title: str
    """Name as the paper's tables print it."""
    modality: str
    """One of ``MODALITIES``."""
    labels: tuple[str, ...]
    """Canonical diagnosis labels; ``Sample.diagnosis`` is one of them."""
    target: str
    """What the mask shows, as a query names it ("fracture", "polyp", ...)."""
    no_finding: str | None = None
    """Label of images with nothing to segment (empty mask), if the subset has such images."""
    paper_sizes: tuple[int, int, int] = (0, 0, 0)
    """Table 1 train/val/test counts."""
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Other spellings of a label, for parsing free-text answers."""
    short: str = ""
    """Column name in the paper's compact tables (Table 3: "BF", "KS", ...); empty: ``title``."""

    @property
    def column(self) -> str:
        """The subset's column name in reports."""
        return self.short or self.title

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"subset {self.name!r}: unknown modality {self.modality!r}")
        if self.no_finding is not None and self.no_finding not in self.labels:
            raise ValueError(f"subset {self.name!r}: no-finding label {self.no_finding!r} not in its labels")
        for label in self.synonyms:
            if label not in self.labels:
                raise ValueError(f"subset {self.name!r}: synonyms for unknown label {label!r}")

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "modality": self.modality,
            "labels": list(self.labels),
            "target": self.target,
            "no_finding": self.no_finding,
            "paper_sizes": list(self.paper_sizes),
            "synonyms": {k: list(v) for k, v in self.synonyms.items()},
            **({"short": self.short} if self.short else {}),
        }

    @classmethod
    def from_json(cls, name: str, d: dict) -> SubsetInfo:
        return cls(
            name=name,
            title=d.get("title", name),
            modality=d["modality"],
            labels=tuple(d["labels"]),
            target=d.get("target", "abnormal region"),
            no_finding=d.get("no_finding"),
            paper_sizes=tuple(d.get("paper_sizes", (0, 0, 0))),
            synonyms={k: tuple(v) for k, v in d.get("synonyms", {}).items()},
            short=d.get("short", ""),
        )


CHESTX_DET_FINDINGS = (
    "atelectasis",
    "calcification",
    "cardiomegaly",
    "consolidation",
    "diffuse nodule",
    "effusion",
    "emphysema",
    "fibrosis",
    "fracture",
    "mass",
    "nodule",
    "pleural thickening",
    "pneumothorax",
)

_ALL = (
    SubsetInfo(
        "fracatlas",
        "FracAtlas",
        "xray",
        ("hand fracture", "leg fracture", "hip fracture", "shoulder fracture", "multi-region fracture", "no fracture"),
        target="fracture",
        no_finding="no fracture",
        paper_sizes=(574, 82, 61),
        synonyms={
            "multi-region fracture": ("mixed fracture", "multiple fractures"),
            "no fracture": ("non-fractured", "not fractured", "normal"),
        },
    ),
    SubsetInfo(
        "bone_fracture",
        "bone fracture",
        "xray",
        ("angle", "fracture", "line", "messed up angle", "no fracture"),
        target="bone fracture",
        no_finding="no fracture",
        paper_sizes=(311, 83, 43),
        synonyms={
            "messed up angle": ("messed_up_angle", "messed-up angle"),
            "no fracture": ("normal", "non-fractured"),
        },
        short="BF",
    ),
    SubsetInfo(
        "bfd",
        "BFD",
        "xray",
        (
            "elbow positive",
            "fingers positive",
            "forearm fracture",
            "humerus fracture",
            "humerus",
            "shoulder fracture",
            "wrist positive",
        ),
        target="fracture",
        paper_sizes=(1804, 173, 83),
        synonyms={
            "elbow positive": ("elbow fracture",),
            "fingers positive": ("finger fracture", "fingers fracture"),
            "wrist positive": ("wrist fracture",),
        },
    ),
    SubsetInfo(
        "isbi2016",
        "ISBI",
        "dermoscopy",
        ("benign", "malignant"),
        target="skin lesion",
        paper_sizes=(899, 277, 101),
        synonyms={"benign": ("benign lesion",), "malignant": ("malignant lesion", "malignancy")},
    ),
    SubsetInfo(
        "isic2017",
        "ISIC",
        "dermoscopy",
        ("melanoma", "seborrheic keratosis", "nevus"),
        target="skin lesion",
        paper_sizes=(2000, 150, 600),
        synonyms={
            "seborrheic keratosis": ("seborrhoeic keratosis", "seborrheic_keratosis"),
            "nevus": ("naevus", "benign nevus", "mole"),
        },
    ),
    SubsetInfo(
        "kvasir_seg",
        "Kvasir-SEG",
        "endoscopy",
        ("polyp",),
        target="polyp",
        paper_sizes=(801, 99, 100),
        synonyms={"polyp": ("colorectal polyp", "polyps")},
        short="KS",
    ),
    SubsetInfo(
        "busi",
        "BUSI",
        "ultrasound",
        ("benign", "malignant", "normal"),
        target="breast lesion",
        no_finding="normal",
        paper_sizes=(532, 55, 60),
        synonyms={
            "benign": ("benign tumor", "benign tumour"),
            "malignant": ("malignant tumor", "malignant tumour"),
            "normal": ("no lesion", "normal breast"),
        },
    ),
    SubsetInfo(
        "tn3k",
        "TN3K",
        "ultrasound",
        ("benign", "malignant"),
        target="thyroid nodule",
        paper_sizes=(2001, 878, 614),
        synonyms={"benign": ("benign nodule",), "malignant": ("malignant nodule",)},
    ),
    SubsetInfo(
        "chestx_det",
        "ChestX-Det",
        "xray",
        CHESTX_DET_FINDINGS + ("no finding",),
        target="thoracic abnormality",
        no_finding="no finding",
        paper_sizes=(2478, 388, 101),
        synonyms={
            "pleural thickening": ("pleural_thickening",),
            "diffuse nodule": ("diffuse nodules",),
            "effusion": ("pleural effusion",),
            "no finding": ("normal", "no findings"),
        },
        short="CXD",
    ),
    SubsetInfo(
        "fives",
        "FIVES",
        "fundus",
        ("age-related macular degeneration", "diabetic retinopathy", "glaucoma", "normal"),
        target="retinal vessels",
        paper_sizes=(600, 99, 101),
        synonyms={"age-related macular degeneration": ("AMD", "macular degeneration"), "diabetic retinopathy": ("DR",)},
    ),
)

SUBSETS: dict[str, SubsetInfo] = {s.name: s for s in _ALL}
"""The subset registry: the paper's ten, in the order of its Table 3, then any added with ``register_subset``."""


def register_subset(info: SubsetInfo) -> SubsetInfo:
    """Add a subset of one's own (e.g. a new source's ``SUBSET_INFO``); a paper subset cannot be replaced."""
    if info.name in SUBSETS and SUBSETS[info.name] != info:
        raise ValueError(f"subset {info.name!r} is already registered with other settings")
    SUBSETS[info.name] = info
    return info


def get_subset(name: str) -> SubsetInfo:
    try:
        return SUBSETS[name]
    except KeyError:
        raise KeyError(f"unknown subset {name!r}; known: {', '.join(SUBSETS)}") from None
