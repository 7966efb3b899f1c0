"""Bootstrap intervals and the paired permutation test, against hand-computed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sim4seg.eval.stats import bootstrap_ci, mean_sd, paired_permutation_test


def test_paired_permutation_exact_against_enumeration():
    a, b = [0.70, 0.62, 0.81, 0.55], [0.60, 0.65, 0.71, 0.50]
    d = np.subtract(a, b)
    flips = [abs(np.mean(np.multiply(s, d))) for s in itertools.product((1, -1), repeat=4)]
    expected = np.mean([f >= abs(d.mean()) - 1e-12 for f in flips])
    assert paired_permutation_test(a, b) == pytest.approx(expected)
    # all six differences of one sign: only the two all-same flips are as extreme -> 2 / 64
    assert paired_permutation_test([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0]) == pytest.approx(2 / 64)
    assert paired_permutation_test([0.5, 0.5], [0.5, 0.5]) == 1.0
    big = paired_permutation_test(np.arange(20) + 1.0, np.zeros(20), n_perm=2000)  # sampled: never 0
    assert 0 < big <= 1 / 2001 + 1e-12
    with pytest.raises(ValueError):
        paired_permutation_test([1.0], [1.0, 2.0])


def test_bootstrap_ci_brackets_the_metric():
    rows = [
        {"iou": v, "intersection": i, "union": u, "correct": c}
        for v, i, u, c in [(0.2, 2, 10, True), (0.9, 9, 10, False), (0.5, 5, 10, True), (0.7, 14, 20, True)]
    ]
    lo, hi = bootstrap_ci(rows, "giou")
    assert lo <= np.mean([0.2, 0.9, 0.5, 0.7]) <= hi and 0.2 <= lo < hi <= 0.9
    lo, hi = bootstrap_ci(rows, "ciou")
    assert lo <= 30 / 50 <= hi
    assert bootstrap_ci(rows, "acc")[1] == 1.0
    assert bootstrap_ci([{"iou": None, "correct": None}], "giou") is None
    assert bootstrap_ci(rows, "giou") == bootstrap_ci(rows, "giou")  # seeded
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0))) and mean_sd([4.0]) == (4.0, 0.0)


def test_bootstrap_ci_reads_the_evaluators_rows(synth_m3ds):
    from sim4seg.data.io import read_mask
    from sim4seg.data.schema import read_split
    from sim4seg.eval.evaluate import evaluate

    samples = read_split(synth_m3ds, "test")
    ev = evaluate(((s, read_mask(synth_m3ds / s.mask), s.answers.diagnosis) for s in samples), synth_m3ds)
    for metric in ("giou", "ciou", "dice", "acc"):
        assert bootstrap_ci(ev.rows, metric) == (1.0, 1.0), metric
