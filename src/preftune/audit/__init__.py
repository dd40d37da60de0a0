"""Vetting comparisons with models: cross-fitted mislabel scores (noise.py) and the audit page (page.py).
The model-free part of the audit (agreement, Dawid-Skene, labeller statistics) lives in preftune.data."""
