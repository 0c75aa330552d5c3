"""Scoring explanations: simulation, detection, fuzzing and embedding scorers, distractors, metrics."""

from autointerp.score.distractors import choose_distractors
from autointerp.score.embedding import EmbeddingScore, embed_texts, embedding_score, embedding_scores
from autointerp.score.judge import JudgeOptions
from autointerp.score.metrics import balanced_accuracy, pearson_correlation, pooled_correlation
from autointerp.score.outcome import ScoreOutcome
from autointerp.score.ranking import auroc
from autointerp.score.registry import SCORERS, Scorer, ScorerOptions, ScoringContext, get_scorer
from autointerp.score.scorers import methods, primary_value, score_candidates
from autointerp.score.simulation import SimulationOptions, parse_simulation_lines, simulate_generated
from autointerp.score.windows import HeldOutWindow

__all__ = [
    "SCORERS",
    "EmbeddingScore",
    "HeldOutWindow",
    "JudgeOptions",
    "ScoreOutcome",
    "Scorer",
    "ScorerOptions",
    "ScoringContext",
    "SimulationOptions",
    "auroc",
    "balanced_accuracy",
    "choose_distractors",
    "embed_texts",
    "embedding_score",
    "embedding_scores",
    "get_scorer",
    "methods",
    "parse_simulation_lines",
    "pearson_correlation",
    "pooled_correlation",
    "primary_value",
    "score_candidates",
    "simulate_generated",
]
