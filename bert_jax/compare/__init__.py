"""Objective comparisons: equal-budget pretraining sweeps scored by one downstream suite.

``bert-jax compare`` (configs/compare.py): `cells` names the objectives and the paper
tables they form, `sweep` runs (and resumes) every (cell, seed), `suite` scores each
model the same way (`probes`, `pairs`, on `features`), `results` writes results.json and
results.md beside the papers' numbers (`paper`), `plots` the PNG figures.
"""
