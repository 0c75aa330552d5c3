"""Language-model backends behind one interface, resolved by `backend:model` names."""

from autointerp.llm.base import ChatBackend, ChatMessage, ChatRequest, ChatResponse
from autointerp.llm.calls import CallRecorder
from autointerp.llm.registry import available_backends, get_backend, parse_model_spec, register_backend

__all__ = [
    "CallRecorder",
    "ChatBackend",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "available_backends",
    "get_backend",
    "parse_model_spec",
    "register_backend",
]
