"""Backends by name: `backend:model` strings resolved through the `autointerp.backends` registry.

Backends are registered like scorers, feature sources and experiment kinds: a `plugins.Registry`
over one entry-point group, where the built-ins are declared in autointerp's own pyproject exactly
as a plugin package declares its own (`[project.entry-points."autointerp.backends"] name = "pkg:obj"`).

An entry is a `BackendKind` (a class, or an instance of one): it builds the backend of a model name
(`create`) and checks one for the preflight (`check`: key set, server answering), so the preflight
asks each kind and has no list of backends. A plain factory `factory(model: str) -> ChatBackend` is
accepted too; it is wrapped in a kind whose check says it is first checked when called.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from autointerp.errors import ConfigError, LLMError
from autointerp.llm.base import ChatBackend
from autointerp.plugins import Registry

ENTRY_POINT_GROUP = "autointerp.backends"

BackendFactory = Callable[[str], ChatBackend]
B = TypeVar("B", bound=ChatBackend, covariant=True)


@dataclass(frozen=True)
class ProbeLimits:
    """How long the preflight's requests to a model server may take."""

    timeout_s: float
    """Seconds one `GET .../models` may take."""
    chat_timeout_s: float | None = None
    """Seconds one 1-token chat request may take; None: no chat request is sent."""


class BackendKind(ABC, Generic[B]):
    """A kind of LLM backend (the part before `:` in `backend:model`): builds and checks its backends.

    A kind is also a factory: `kind(model)` is `kind.create(model)`.
    """

    @abstractmethod
    def create(self, model: str) -> B:
        """Returns the backend of `model` (the text after `backend:`); raises LLMError."""

    def check(self, model: str, who: str, limits: ProbeLimits) -> list[str]:
        """The preflight's check of `model` (`who` names the settings that use it, for messages): raises a
        one-line LLMError saying what to change, returns warnings. Must not load a model. The default checks
        nothing: a kind that does not override it is first checked when its backend is called."""
        return [f"{who}: the backend is a plugin without a preflight check; it is first checked when it is called"]

    def __call__(self, model: str) -> B:
        return self.create(model)


class FactoryKind(BackendKind[ChatBackend]):
    """A plain `factory(model) -> ChatBackend` registered as a backend: built by it, checked when called."""

    def __init__(self, factory: BackendFactory) -> None:
        self.factory = factory

    def create(self, model: str) -> ChatBackend:
        return self.factory(model)


BACKENDS: Registry[Any] = Registry(ENTRY_POINT_GROUP, "LLM backend")
"""Every backend kind by name: a `BackendKind` class or instance, or a plain factory."""

_instances: dict[str, ChatBackend] = {}


def register_backend(name: str, factory: BackendKind[Any] | type[BackendKind[Any]] | BackendFactory) -> None:
    """Registers a backend kind (or a plain factory) under `name`; a second, different one is an error."""
    try:
        BACKENDS.register(name, factory)
    except ConfigError as exc:
        raise LLMError(str(exc)) from None


def backend_names() -> list[str]:
    """Returns every backend name, sorted, without importing any backend."""
    return BACKENDS.names()


def backend_kind(name: str) -> BackendKind[ChatBackend]:
    """Returns the kind registered as `name`; raises LLMError naming the known ones."""
    if name not in BACKENDS.names():
        raise LLMError(f"unknown LLM backend {name!r}; known backends: {', '.join(backend_names()) or 'none'}")
    try:
        plugin = BACKENDS.get(name)
    except ConfigError as exc:  # an entry point whose package cannot be imported
        raise LLMError(str(exc)) from None
    if inspect.isclass(plugin) and issubclass(plugin, BackendKind):
        plugin = plugin()
    if isinstance(plugin, BackendKind):
        return plugin
    return FactoryKind(plugin)


def available_backends() -> dict[str, BackendFactory]:
    """Returns every backend name -> a factory that imports it on first use."""
    return {name: _lazy(name) for name in backend_names()}


def _lazy(name: str) -> BackendFactory:
    def create(model: str) -> ChatBackend:
        return backend_kind(name).create(model)

    return create


def parse_model_spec(spec: str) -> tuple[str, str]:
    """Returns (backend, model) from `backend:model`."""
    backend, sep, model = spec.partition(":")
    if not sep or not backend or not model:
        raise LLMError(f"model {spec!r} must look like backend:model, e.g. local:smollm2-135m")
    return backend, model


def get_backend(spec: str) -> ChatBackend:
    """Returns the (cached) backend instance for `backend:model`."""
    if spec in _instances:
        return _instances[spec]
    backend, model = parse_model_spec(spec)
    if backend not in backend_names():
        known = ", ".join(backend_names()) or "none"
        raise LLMError(f"unknown LLM backend {backend!r} in {spec!r}; known backends: {known}")
    instance = backend_kind(backend).create(model)
    _instances[spec] = instance
    return instance
