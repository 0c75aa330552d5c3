"""Scoring explanations: metrics, the simulation scorer and the embedding scorer."""

from autointerp.score.embedding import EmbeddingScore, embed_texts, embedding_score
from autointerp.score.metrics import pearson_correlation, pooled_correlation
from autointerp.score.ranking import auroc
from autointerp.score.simulation import build_simulation_prompt, simulate_all_at_once

__all__ = [
    "EmbeddingScore",
    "auroc",
    "build_simulation_prompt",
    "embed_texts",
    "embedding_score",
    "pearson_correlation",
    "pooled_correlation",
    "simulate_all_at_once",
]
