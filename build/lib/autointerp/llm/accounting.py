"""What calls cost: the price table, and the per-run budget that stops a run before it overspends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from autointerp.errors import ConfigError, LLMError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Returns the USD cost of one call."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


FREE = Price(0.0, 0.0)

DEFAULT_PRICES: dict[str, Price] = {
    # Local models and self-hosted servers cost nothing per token; override `openai-compatible:*`
    # (or one `openai-compatible:<url>#<model>`) in `llm.prices` for a paid gateway.
    "local:*": FREE,
    "openai-compatible:*": FREE,
    # List prices (USD per million input / output tokens) as published by the providers.
    "openai:gpt-4o": Price(2.50, 10.00),
    "openai:gpt-4o-mini": Price(0.15, 0.60),
    "openai:gpt-4.1": Price(2.00, 8.00),
    "openai:gpt-4.1-mini": Price(0.40, 1.60),
    "openai:gpt-4.1-nano": Price(0.10, 0.40),
    "anthropic:claude-3-5-haiku-latest": Price(0.80, 4.00),
    "anthropic:claude-haiku-4-5": Price(1.00, 5.00),
    "anthropic:claude-sonnet-4-5": Price(3.00, 15.00),
    "anthropic:claude-opus-4-1": Price(15.00, 75.00),
}
"""Built-in prices keyed by `backend:model` or `backend:*`; `llm.prices` in the config overrides them."""


class PriceTable:
    """Looks up the price of `backend:model`: an exact entry first, then `backend:*`."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.prices = {**DEFAULT_PRICES, **(overrides or {})}
        self._warned: set[str] = set()

    def price(self, backend: str, model: str) -> Price | None:
        """Returns the price, or None when the table has no entry for the model."""
        return self.prices.get(f"{backend}:{model}") or self.prices.get(f"{backend}:*")

    def cost(self, backend: str, model: str, input_tokens: int, output_tokens: int) -> float:
        """Returns the USD cost of a call; 0 (with one warning) for a model without a price."""
        price = self.price(backend, model)
        if price is None:
            if f"{backend}:{model}" not in self._warned:
                self._warned.add(f"{backend}:{model}")
                logger.warning("no price for %s:%s; its calls count as $0 (set llm.prices)", backend, model)
            return 0.0
        return price.cost(input_tokens, output_tokens)


class BudgetExceeded(LLMError):
    """The run reached its token or cost budget; raise the budget and rerun to resume it."""


class Budget:
    """The run's spending so far against its caps; checked before every call, thread-safe."""

    def __init__(
        self,
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
        spent_tokens: int = 0,
        spent_usd: float = 0.0,
    ) -> None:
        self.max_tokens = max_tokens
        self.max_cost_usd = max_cost_usd
        self.spent_tokens = spent_tokens
        self.spent_usd = spent_usd
        self._lock = threading.Lock()

    def check(self, run_id: str, backend: str, model: str, prices: PriceTable) -> None:
        """Raises BudgetExceeded when a cap is reached, ConfigError when a cost cap meets an unpriced model."""
        if self.max_cost_usd is not None and prices.price(backend, model) is None:
            raise ConfigError(
                f"llm.max_cost_usd is set but {backend}:{model} has no price; add it under llm.prices"
                f" (input_per_mtok, output_per_mtok)"
            )
        with self._lock:
            if self.max_tokens is not None and self.spent_tokens >= self.max_tokens:
                raise BudgetExceeded(
                    f"run {run_id} reached its token budget ({self.spent_tokens} of llm.max_tokens="
                    f"{self.max_tokens}); raise it and rerun to resume"
                )
            if self.max_cost_usd is not None and self.spent_usd >= self.max_cost_usd:
                raise BudgetExceeded(
                    f"run {run_id} reached its cost budget (${self.spent_usd:.4f} of llm.max_cost_usd="
                    f"{self.max_cost_usd:g}); raise it and rerun to resume"
                )

    def spend(self, tokens: int, usd: float) -> None:
        """Adds one call's tokens and cost."""
        with self._lock:
            self.spent_tokens += tokens
            self.spent_usd += usd
