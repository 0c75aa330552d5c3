"""The four stages of the loop as plain functions over a run's config and store.

Each stage reads its inputs from the store, skips work already stored for the run, and
writes each unit of work (one feature, one explanation) with its LLM calls in one
transaction, so a run that stops part-way resumes without redoing or duplicating rows.
"""

from autointerp.pipeline.collect import choose_neurons, run_collect
from autointerp.pipeline.common import MAIN_METRIC, feature_id, load_subject
from autointerp.pipeline.experiment import run_experiments
from autointerp.pipeline.explain import run_explain
from autointerp.pipeline.score import run_score

__all__ = [
    "MAIN_METRIC",
    "choose_neurons",
    "feature_id",
    "load_subject",
    "run_collect",
    "run_experiments",
    "run_explain",
    "run_score",
]
