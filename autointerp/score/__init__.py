"""Scoring explanations: simulation, detection, fuzzing and embedding scorers, distractors, metrics."""

from autointerp.score.distractors import choose_distractors
from autointerp.score.embedding import EmbeddingScore, embed_texts, embedding_score, embedding_scores
from autointerp.score.metrics import balanced_accuracy, pearson_correlation, pooled_correlation
from autointerp.score.outcome import ScoreOutcome
from autointerp.score.ranking import auroc
from autointerp.score.scorers import METHODS, primary_value, score_candidates
from autointerp.score.simulation import (
    build_simulation_prompt,
    parse_simulation_lines,
    simulate_all_at_once,
    simulate_generated,
    simulate_many,
)
from autointerp.score.windows import HeldOutWindow

__all__ = [
    "METHODS",
    "EmbeddingScore",
    "HeldOutWindow",
    "ScoreOutcome",
    "auroc",
    "balanced_accuracy",
    "build_simulation_prompt",
    "choose_distractors",
    "embed_texts",
    "embedding_score",
    "embedding_scores",
    "parse_simulation_lines",
    "pearson_correlation",
    "pooled_correlation",
    "primary_value",
    "score_candidates",
    "simulate_all_at_once",
    "simulate_generated",
    "simulate_many",
]
