"""Language-model backends behind one interface, resolved by `backend:model` names through the
`autointerp.backends` registry (each backend kind builds and checks its own)."""

from autointerp.llm.accounting import Budget, BudgetExceeded, Price, PriceTable
from autointerp.llm.base import ChatBackend, ChatMessage, ChatRequest, ChatResponse
from autointerp.llm.cache import ResponseCache
from autointerp.llm.calls import CallRecorder, LLMSession
from autointerp.llm.limits import CallLimiter
from autointerp.llm.registry import (
    BackendKind,
    ProbeLimits,
    available_backends,
    backend_kind,
    backend_names,
    get_backend,
    parse_model_spec,
    register_backend,
)

__all__ = [
    "BackendKind",
    "Budget",
    "BudgetExceeded",
    "CallLimiter",
    "CallRecorder",
    "ChatBackend",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "LLMSession",
    "Price",
    "PriceTable",
    "ProbeLimits",
    "ResponseCache",
    "available_backends",
    "backend_kind",
    "backend_names",
    "get_backend",
    "parse_model_spec",
    "register_backend",
]
