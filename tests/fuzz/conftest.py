"""Hypothesis profiles for the fuzz suite (tests/fuzz).

``ci`` (the default) bounds each parser to a few hundred examples, derandomized (the same
examples on every run, so CI is reproducible), and the whole suite stays within about a
minute on two cores; ``fuzz`` (``make fuzz``, or SIM4SEG_FUZZ_PROFILE=fuzz) runs 5,000
random examples per parser (SIM4SEG_FUZZ_EXAMPLES=N to change). Every fuzz test states one
property: the parser returns a valid result or raises ``InputError`` (or a subclass) —
never another exception — within its time bound.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

# The per-example bound ("never a hang"): generous against a loaded CI machine, where one
# example takes well under a second; each test also has a pytest timeout for the whole run.
_COMMON = dict(
    deadline=timedelta(seconds=20),
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
settings.register_profile("ci", max_examples=300, derandomize=True, **_COMMON)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("SIM4SEG_FUZZ_EXAMPLES", "5000")), derandomize=False, **_COMMON
)
settings.load_profile(os.environ.get("SIM4SEG_FUZZ_PROFILE", "ci"))
