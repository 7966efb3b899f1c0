"""What each protocol runs and how its results map onto the paper's tables.

A *run* is one model: either the base checkpoint evaluated as it is (zero-shot: the converted
LISA at full scale) or a training recipe (overrides of the base recipe) followed by its
*items*: evaluations (``eval/<name>/metrics.json``) and sweeps (``sweeps/<name>/``). Runs live
in ``OUT/runs/<run>/`` and are shared between protocols (Table 2, Table 3 and the figures use
the same fine-tuned models), so a model is trained once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim4seg.data.subsets import MODALITY_NAMES, SUBSETS


@dataclass(frozen=True)
class Item:
    """An evaluation (``kind="eval"``) or a sweep (``tau``, ``tts``) of a run's model."""

    name: str
    kind: str = "eval"
    rvls2m: bool | None = None
    """RVLS2M at inference: on, off, or (``None``) as the model was trained."""
    tts: bool = False
    """Test-time scaling with the scale's m × n."""
    selector: str = "consensus"
    subsets: tuple[str, ...] | None = None
    modalities: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Run:
    name: str
    recipe: dict | None
    """Overrides of the base recipe (dotted keys); ``None``: the base checkpoint, not trained (zero-shot)."""
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Row:
    """One row of a collected table: where its numbers come from."""

    label: str
    """The row as the paper prints it (the key into ``reference.json``)."""
    run: str
    item: str
    layout: str
    """``overall`` (Table 2), ``subsets`` (Table 3), ``avg`` (Table 4), ``heldout`` (Tables 5 and 6),
    ``sweep`` (Figures 6 and 7)."""
    column: str = "overall"


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    runs: tuple[str, ...]
    items: dict[str, tuple[str, ...]]
    """Per run, the items this protocol needs."""
    rows: tuple[Row, ...] = field(default=())


GREEDY = Item("greedy")
TTS_ORACLE = Item("tts-oracle", tts=True, selector="oracle")
TTS_CONSENSUS = Item("tts-consensus", tts=True, selector="consensus")


def _fmt(answer_format: str, rvls2m: bool) -> dict:
    return {"data.answer_format": answer_format, "model.rvls2m.train": rvls2m, "model.rvls2m.infer": rvls2m}


MODALITY_ROWS = {
    "xray": "X-Ray",
    "dermoscopy": "Dermoscopy",
    "endoscopy": "Endoscopy",
    "ultrasound": "Ultrasound",
    "fundus": "Fundus Photography",
}
"""Table 5's row per modality key."""
TABLE6_HELD_OUT = ("isic2017", "kvasir_seg", "tn3k", "chestx_det", "fives")
"""Table 6: the datasets the paper excludes from training one at a time and tests on (§4.4)."""
assert set(MODALITY_ROWS) == set(MODALITY_NAMES)

RUNS: dict[str, Run] = {
    r.name: r
    for r in [
        Run("lisa-zero-shot", None, (Item("rvls2m-off", rvls2m=False), Item("rvls2m-on", rvls2m=True))),
        Run("lisa-ft", _fmt("plain", False), (GREEDY,)),
        Run("lisa-ft-diagnosis", _fmt("diagnosis", False), (GREEDY,)),
        Run("lisa-ft-cot", _fmt("cot", False), (GREEDY,)),
        Run("sim4seg-ft-diagnosis", _fmt("diagnosis", True), (GREEDY,)),
        Run(
            "sim4seg-ft-cot",
            _fmt("cot", True),
            (
                GREEDY,
                TTS_ORACLE,
                TTS_CONSENSUS,
                Item("tau", kind="tau"),
                Item("tts-oracle-sweep", kind="tts", selector="oracle"),
                Item("tts-consensus-sweep", kind="tts", selector="consensus"),
            ),
        ),
        *[
            Run(f"no-{m}", {**_fmt("cot", True), "data.exclude_modalities": [m]}, (Item("held-out", modalities=(m,)),))
            for m in MODALITY_ROWS
        ],
        *[
            Run(f"no-{s}", {**_fmt("cot", True), "data.exclude_subsets": [s]}, (Item("held-out", subsets=(s,)),))
            for s in TABLE6_HELD_OUT
        ],
    ]
}

_T2 = [
    ("LISA", "lisa-zero-shot", "rvls2m-off"),
    ("LISA (ft)", "lisa-ft", "greedy"),
    ("LISA (ft-diagnosis)", "lisa-ft-diagnosis", "greedy"),
    ("LISA (ft-CoT)", "lisa-ft-cot", "greedy"),
    ("Sim4Seg (ft-diagnosis)", "sim4seg-ft-diagnosis", "greedy"),
    ("Sim4Seg (ft-CoT)", "sim4seg-ft-cot", "greedy"),
    ("Sim4Seg (ft-CoT) +test-time scaling", "sim4seg-ft-cot", "tts-oracle"),
    ("Sim4Seg (ft-CoT) +test-time scaling, consensus (ground-truth-free)", "sim4seg-ft-cot", "tts-consensus"),
]
_T3 = [
    ("zero-shot (w/o RVLS2M)", "lisa-zero-shot", "rvls2m-off"),
    ("+FT w/o diagnosis (w/o RVLS2M)", "lisa-ft", "greedy"),
    ("+FT w/ diagnosis (w/o RVLS2M)", "lisa-ft-diagnosis", "greedy"),
    ("+FT w/ diagnosis-CoT (w/o RVLS2M)", "lisa-ft-cot", "greedy"),
    ("+FT w/ diagnosis (w/ RVLS2M)", "sim4seg-ft-diagnosis", "greedy"),
    ("+FT w/ diagnosis-CoT (w/ RVLS2M)", "sim4seg-ft-cot", "greedy"),
    ("+FT w/ diagnosis-CoT (TTS) (w/ RVLS2M)", "sim4seg-ft-cot", "tts-oracle"),
    ("+FT w/ diagnosis-CoT (TTS, consensus) (w/ RVLS2M)", "sim4seg-ft-cot", "tts-consensus"),
]


def _protocol(name: str, title: str, rows: list[Row]) -> Protocol:
    items: dict[str, tuple[str, ...]] = {}
    for r in rows:
        if r.item not in items.get(r.run, ()):
            items[r.run] = items.get(r.run, ()) + (r.item,)
    return Protocol(name, title, tuple(items), items, tuple(rows))


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in [
        _protocol(
            "table2",
            "Table 2: main results on the M3DS test split (overall)",
            [Row(label, run, item, "overall") for label, run, item in _T2],
        ),
        _protocol(
            "table3",
            "Table 3: per-subset results, with and without RVLS2M",
            [Row(label, run, item, "subsets") for label, run, item in _T3],
        ),
        _protocol(
            "table4",
            "Table 4: RVLS2M plugged zero-shot into LISA",
            [
                Row("LISA", "lisa-zero-shot", "rvls2m-off", "avg"),
                Row("LISA w/ RVLS2M module", "lisa-zero-shot", "rvls2m-on", "avg"),
            ],
        ),
        _protocol(
            "table5",
            "Table 5: cross-modality generalisation (trained without the modality, tested on it)",
            [Row(label, f"no-{m}", "held-out", "heldout", "Sim4Seg") for m, label in MODALITY_ROWS.items()],
        ),
        _protocol(
            "table6",
            "Table 6: cross-dataset generalisation (trained without the dataset, tested on it)",
            [Row(SUBSETS[s].title, f"no-{s}", "held-out", "heldout", "Sim4Seg") for s in TABLE6_HELD_OUT],
        ),
        _protocol(
            "fig6",
            "Figure 6: τ strategies (top-k on a 16×16 grid) and grid sizes (top-36)",
            [Row("τ sweep", "sim4seg-ft-cot", "tau", "sweep", "tau")],
        ),
        _protocol(
            "fig7",
            "Figure 7: test-time scaling, m answers × n masks (oracle as the paper; consensus ours)",
            [
                Row("TTS oracle", "sim4seg-ft-cot", "tts-oracle-sweep", "sweep", "oracle"),
                Row("TTS consensus", "sim4seg-ft-cot", "tts-consensus-sweep", "sweep", "consensus"),
            ],
        ),
    ]
}


def item(run: str, name: str) -> Item:
    return next(i for i in RUNS[run].items if i.name == name)
