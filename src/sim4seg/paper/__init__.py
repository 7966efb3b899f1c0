"""The paper's experiments as runnable protocols (``sim4seg paper PROTOCOL``): Tables 2–6, Figures 6–7.

An application layer like ``apps``: each protocol expands into ordinary training runs (a recipe
written out per run), evaluations and sweeps, and ``--collect`` lays the results out as the
paper's tables with its published numbers (``reference.json``) beside ours.
"""
