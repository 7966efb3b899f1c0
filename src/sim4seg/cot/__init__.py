"""Diagnosis chain-of-thought generation (the paper's §2.2, Figure 3).

A medical assistant LVLM writes a chain of thought from the image, the question and
the known diagnosis; a critical assistant reviews it; rejected chains go back with the
critic's feedback for up to ``max_rounds`` rounds; what is still rejected goes to human
review. See ``docs/cot.md``.
"""
