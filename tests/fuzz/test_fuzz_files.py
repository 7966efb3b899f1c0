"""Fuzzing the file readers of outside input: manifest records, predictions files (and their mask
paths), YAML recipes. Each example is written to a file and read the way the commands read it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim4seg.data.schema import Sample, iter_split, read_split
from sim4seg.errors import InputError
from sim4seg.eval.evaluate import evaluate_predictions, read_predictions
from sim4seg.train.recipe import Config, load_config  # imported here: not inside the first example's deadline


def scaled(n: int) -> int:
    """``n`` examples under the ``ci`` profile (these write files); the profile's count under ``fuzz``."""
    return max(n, settings.default.max_examples) if settings.default.max_examples > 300 else n


# The whole test's bound: the ci profile finishes in seconds; `make fuzz` runs far more examples.
TIMEOUT = 3600 if os.environ.get("SIM4SEG_FUZZ_PROFILE") == "fuzz" else 300


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_subnormal=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _mutated(record: dict):
    """A valid record with some fields replaced, removed or added."""
    keys = sorted(record) + ["cot", "extra", "answers.plain", "source.files", "source.instances"]
    return st.lists(st.tuples(st.sampled_from(keys), st.one_of(JSON, st.just("__delete__"))), max_size=4).map(
        lambda edits: _apply(record, edits)
    )


def _apply(record: dict, edits) -> dict:
    out = json.loads(json.dumps(record))
    for key, value in edits:
        parent, _, leaf = key.rpartition(".")
        target = out.get(parent) if parent else out
        if not isinstance(target, dict):
            continue
        if value == "__delete__":
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return out


def _line_bytes(draw_line: str | bytes) -> bytes:
    return draw_line if isinstance(draw_line, bytes) else draw_line.encode("utf-8", "surrogatepass")


def _damage():
    """Bytes-level damage to a JSONL body: a BOM, invalid UTF-8, truncation, random lines."""
    return st.sampled_from(["none", "bom", "bad-utf8", "truncate", "junk", "deep"])


def _apply_damage(body: bytes, how: str, junk: bytes, cut: int) -> bytes:
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    if how == "bad-utf8":
        return body[: cut % (len(body) + 1)] + b"\xff\xfe\x80" + body[cut % (len(body) + 1) :]
    if how == "truncate":
        return body[: cut % (len(body) + 1)]
    if how == "junk":
        return body + junk + b"\n"
    if how == "deep":
        return body + b"[" * 5000 + b"\n"
    return body


@pytest.fixture(scope="module")
def manifest(synth_m3ds):
    """A copy of the synthetic manifest's info and its first val records (no images needed to parse)."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-manifest-"))
    shutil.copy(synth_m3ds / "dataset_info.json", root / "dataset_info.json")
    records = [s.to_json() for s in read_split(synth_m3ds, "val")[:3]]
    yield root, records
    shutil.rmtree(root, ignore_errors=True)


def _valid_record() -> dict:
    from sim4seg.data.prompts import make_answers

    return {
        "id": "busi-00001",
        "subset": "busi",
        "modality": "ultrasound",
        "split": "val",
        "image": "images/busi/busi-00001.png",
        "mask": "masks/busi/busi-00001.png",
        "query": "Segment the lesion.",
        "diagnosis": "benign",
        "answers": make_answers("benign", 0, "k"),
        "cot": "",
        "source": {"dataset": "busi", "files": ["a.png"], "annotation_ids": [], "mask_from": "pixel", "instances": 1},
    }


@pytest.mark.timeout(TIMEOUT)
@settings(max_examples=scaled(120))
@given(
    recs=st.lists(_mutated(_valid_record()), min_size=1, max_size=3),
    how=_damage(),
    junk=st.binary(max_size=40),
    cut=st.integers(0, 10_000),
)
def test_manifest_records(manifest, recs, how, junk, cut):
    root, _ = manifest
    body = b"".join(json.dumps(r, allow_nan=True).encode() + b"\n" for r in recs)
    (root / "val.jsonl").write_bytes(_apply_damage(body, how, junk, cut))
    try:
        samples = read_split(root, "val")
    except InputError as e:
        assert e.path is not None  # names the file
    else:
        assert all(isinstance(s, Sample) for s in samples)
        for s in samples:
            s.validate()
    errors: list = []
    for _ in iter_split(root, "val", errors=errors):  # verify's mode: collects, never raises
        pass
    assert all(isinstance(e, InputError) and e.line for e in errors)


@pytest.fixture(scope="module")
def pred_dir():
    d = Path(tempfile.mkdtemp(prefix="fuzz-preds-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


PATHS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "../../etc/passwd",
            "/dev/zero",
            "/dev/null",
            "masks",
            ".",
            "",
            "a\x00b",
            "x" * 5000,
            "/proc/self/mem",
            "~/m.png",
            "m.png/",
        ]
    ),
)


ROW = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["busi-00001", "busi-00002", "kvasir_seg-00003"]) | st.text(max_size=10) | JSON,
        "mask": st.none() | PATHS | JSON,
        "answer": st.none() | st.text(max_size=200) | JSON,
        "failed": st.none() | st.text(max_size=20) | JSON,
        "tts": JSON,
    },
)


@pytest.mark.timeout(TIMEOUT)
@settings(max_examples=scaled(120))
@given(
    rows=st.lists(ROW | JSON, min_size=0, max_size=6),
    how=_damage(),
    junk=st.binary(max_size=40),
    cut=st.integers(0, 10_000),
)
def test_predictions_files(pred_dir, rows, how, junk, cut):
    path = pred_dir / "p.jsonl"
    body = b"".join(json.dumps(r, allow_nan=True).encode("utf-8", "surrogatepass") + b"\n" for r in rows)
    path.write_bytes(_apply_damage(body, how, junk, cut))
    try:
        preds = read_predictions(path)
    except InputError as e:
        assert e.path is not None
        return
    assert preds and all(p.id for p in preds.values())


@pytest.mark.timeout(TIMEOUT)
@settings(max_examples=scaled(60))
@given(paths=st.lists(PATHS, min_size=3, max_size=3), keep=st.lists(st.booleans(), min_size=3, max_size=3))
def test_prediction_mask_paths_are_scored_or_refused(pred_dir, synth_m3ds, paths, keep):
    """Every id present, the mask paths fuzzed: evaluate reads them as images or refuses with file:line."""
    from sim4seg.data.schema import load_split

    _, samples = load_split(synth_m3ds, "test")
    samples = samples[:3]
    good = {s.id: str(synth_m3ds / s.mask) for s in samples}
    rows = [
        {"id": s.id, "mask": good[s.id] if k else p, "answer": "Diagnosis: x."} for s, p, k in zip(samples, paths, keep)
    ]
    path = pred_dir / "e.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    try:
        evaluate_predictions(_subset_root(synth_m3ds, samples, pred_dir), "test", path)
    except InputError as e:
        assert e.path is not None


def _subset_root(root: Path, samples, work: Path) -> Path:
    """A manifest whose test split holds only ``samples`` (images and masks taken from ``root``)."""
    sub = work / "subset"
    if not (sub / "dataset_info.json").is_file():
        sub.mkdir(exist_ok=True)
        info = json.loads((root / "dataset_info.json").read_text())
        info["counts"] = {}
        (sub / "dataset_info.json").write_text(json.dumps(info))
        for name in ("images", "masks"):
            if not (sub / name).exists():
                (sub / name).symlink_to(root / name)
        (sub / "test.jsonl").write_text("".join(json.dumps(s.to_json()) + "\n" for s in samples))
    return sub


import yaml  # noqa: E402

RECIPES = [
    p.read_text(encoding="utf-8") for p in sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
][:4]


def _yaml_texts():
    recipes = RECIPES
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**40), 2**40)
        | st.floats(allow_subnormal=False)
        | st.text(max_size=12)
    )

    def mutate(text: str, edits) -> str:
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        for section, key, value in edits:
            if isinstance(d, dict) and isinstance(d.get(section), dict):
                d[section][key if key else next(iter(d[section]), "x")] = value
            elif isinstance(d, dict):
                d[section] = value
        return yaml.safe_dump(d)

    texts = st.one_of(
        st.builds(
            mutate,
            st.sampled_from(recipes),
            st.lists(
                st.tuples(
                    st.sampled_from(["model", "data", "optim", "train", "loss", "zzz"]),
                    st.sampled_from(["", "lr", "batch_size", "epochs", "output_dir", "zzz"]),
                    scalars | JSON,
                ),
                max_size=3,
            ),
        ),
        st.builds(
            lambda t, i, s: t[: i % (len(t) + 1)] + s + t[i % (len(t) + 1) :],
            st.sampled_from(recipes),
            st.integers(0, 5000),
            st.sampled_from(
                ["\t", ": :", "- [", "&a [*a]", "!!python/object:os.system", "{", "'", "\x00", "\ufeff", "? ", "*x"]
            ),
        ),
        st.text(max_size=200),
    )
    return texts


@pytest.mark.timeout(TIMEOUT)
@settings(max_examples=scaled(80))
@given(text=_yaml_texts())
def test_yaml_recipes(pred_dir, text):
    assert RECIPES
    path = pred_dir / "recipe.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(path)
    except InputError:
        return
    assert isinstance(cfg, Config)


@pytest.mark.timeout(60)
def test_yaml_alias_bomb_is_refused_without_expanding_it(pred_dir):
    """A 'billion laughs' recipe: 9 levels of 9 aliases. Quoting the value whole in the error
    message used to walk all 9**9 leaves (a hang); the message now shows a bounded repr."""

    text = 'optim:\n  lr:\n    - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghi":
        text += f"    - &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    path = pred_dir / "laughs.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=r"laughs\.yaml: optim\.lr must be a number, got \[") as e:
        load_config(path)
    assert len(str(e.value)) < 2000
