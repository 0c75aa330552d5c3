"""Language-model backends behind one interface, resolved by `backend:model` names."""

from autointerp.llm.accounting import Budget, BudgetExceeded, Price, PriceTable
from autointerp.llm.base import ChatBackend, ChatMessage, ChatRequest, ChatResponse
from autointerp.llm.cache import ResponseCache
from autointerp.llm.calls import CallRecorder, LLMSession
from autointerp.llm.limits import CallLimiter
from autointerp.llm.registry import available_backends, get_backend, parse_model_spec, register_backend

__all__ = [
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
    "ResponseCache",
    "available_backends",
    "get_backend",
    "parse_model_spec",
    "register_backend",
]
