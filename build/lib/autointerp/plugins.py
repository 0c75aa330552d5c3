"""Registries of named plugins resolved through entry-point groups, built-ins included.

Scorers (`autointerp.scorers`), feature sources (`autointerp.feature_sources`) and experiment
kinds (`autointerp.experiment_kinds`) are found the way LLM backends are: built-in ones are
declared in autointerp's own `pyproject.toml` under the same groups a third-party package uses.
Names are listed without importing anything (config validation stays fast); an entry is imported
on first use, and a name registered twice for different objects is an error.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from autointerp.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> plugin object for one entry-point group, plus objects registered in code."""

    def __init__(self, group: str, what: str) -> None:
        self.group = group
        self.what = what
        """What the plugins are, for messages ("scorer", "feature source")."""
        self._registered: dict[str, T] = {}
        self._loaded: dict[str, T] = {}
        self._lock = threading.Lock()

    def register(self, name: str, plugin: T) -> None:
        """Registers `plugin` under `name` in this process; a different plugin of the same name is an error."""
        with self._lock:
            if name in self._registered and self._registered[name] is not plugin:
                raise ConfigError(f"{self.what} {name!r} is registered twice")
            self._registered[name] = plugin

    def names(self) -> list[str]:
        """Returns every known name, sorted, without importing any plugin."""
        found = {entry.name for entry in entry_points(group=self.group)}
        return sorted(found | set(self._registered))

    def get(self, name: str) -> T:
        """Returns the plugin named `name`; raises ConfigError naming the known ones."""
        with self._lock:
            if name in self._registered:
                return self._registered[name]
            if name in self._loaded:
                return self._loaded[name]
        matches = [entry for entry in entry_points(group=self.group) if entry.name == name]
        if not matches:
            raise ConfigError(f"unknown {self.what} {name!r}; known: {', '.join(self.names()) or 'none'}")
        targets = {entry.value for entry in matches}
        if len(targets) > 1:
            raise ConfigError(f"{self.what} {name!r} is registered twice: {', '.join(sorted(targets))}")
        try:
            plugin: T = matches[0].load()
        except ImportError as exc:
            raise ConfigError(f"{self.what} {name!r} cannot be imported ({exc}); install its package") from None
        with self._lock:
            self._loaded[name] = plugin
        return plugin

    def check(self, names: list[str], setting: str) -> list[str]:
        """Returns `names` when all are known; raises ConfigError naming `setting` and the choices."""
        known = self.names()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"{setting}: unknown {self.what} {unknown[0]!r}; choose from {', '.join(known)}")
        return names
