"""sim4seg: Medical Diagnosis Segmentation with Sim4Seg (AAAI 2026).

Sub-packages: ``data`` (M3DS schema, image I/O, builders, synthetic data), ``model``
(LVLM + RVLS2M + SAM), ``engine`` (training, prediction, test-time scaling), ``eval``
(metrics and reports) and ``cot`` (diagnosis chain-of-thought generation).
"""

__version__ = "0.1.0"
