"""Scoring explanations: metrics and the simulation scorer."""

from autointerp.score.metrics import pearson_correlation, pooled_correlation
from autointerp.score.simulation import build_simulation_prompt, simulate_all_at_once

__all__ = ["build_simulation_prompt", "pearson_correlation", "pooled_correlation", "simulate_all_at_once"]
