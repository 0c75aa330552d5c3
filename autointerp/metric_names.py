"""The names of the numbers every part of autointerp ranks by; torch-free, so the CLI and the review
app can import them without loading a model.

The headline metric is the simulation score on top-and-random held-out windows (Bills et al. 2023);
each scorer declares its own headline in `autointerp.score.registry`, and this is the one the run
table, the experiment loop and the review app sort by.
"""

MAIN_METRIC = "correlation_top_and_random"
"""The metric the run table, the review list and the experiment loop rank explanations by."""

DISTRACTOR_SUFFIX = "_distractor"
"""Appended to a metric's name for the same scorer run with another feature's explanation (chance level)."""

HARD_SUFFIX = "_hard"
"""Appended to a metric's name for the same scorer on hard negatives (`score.negatives = "both"`)."""
