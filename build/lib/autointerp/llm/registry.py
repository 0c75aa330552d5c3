"""Backends by name: `backend:model` strings resolved through the `autointerp.backends` entry points.

Built-in backends register through the same entry-point group as third-party ones, so a
plugin package needs only `[project.entry-points."autointerp.backends"] name = "pkg:factory"`,
where `factory(model: str) -> ChatBackend`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from autointerp.errors import LLMError
from autointerp.llm.base import ChatBackend

ENTRY_POINT_GROUP = "autointerp.backends"

BackendFactory = Callable[[str], ChatBackend]

_registered: dict[str, BackendFactory] = {}
_instances: dict[str, ChatBackend] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Registers a backend factory under `name`; a second registration of a name is an error."""
    if name in _registered and _registered[name] is not factory:
        raise LLMError(f"backend {name!r} is registered twice")
    _registered[name] = factory


def available_backends() -> dict[str, BackendFactory]:
    """Returns every backend name -> factory, from entry points and register_backend."""
    found: dict[str, BackendFactory] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, _lazy_factory(entry))
    found.update(_registered)
    return found


def _lazy_factory(entry: EntryPoint) -> BackendFactory:
    """Returns a factory that imports the entry point only when the backend is first used."""

    def create(model: str) -> ChatBackend:
        try:
            factory = entry.load()
        except ImportError as exc:
            raise LLMError(f"backend {entry.name!r} cannot be imported ({exc}); install its package") from None
        backend: ChatBackend = factory(model)
        return backend

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
    factories = available_backends()
    if backend not in factories:
        known = ", ".join(sorted(factories)) or "none"
        raise LLMError(f"unknown LLM backend {backend!r} in {spec!r}; known backends: {known}")
    instance = factories[backend](model)
    _instances[spec] = instance
    return instance
