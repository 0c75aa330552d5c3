"""Prompt templates (Jinja2) shipped in `autointerp/prompt_templates/`: rendering into chat messages,
and their hashes.

A template file holds the system message, then `=== user`, then optionally `=== assistant`
followed by the text the assistant's answer is prefilled with.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2

from autointerp.errors import ConfigError
from autointerp.llm.base import ChatMessage

TEMPLATE_PACKAGE = "autointerp.prompt_templates"


def prompts_dir() -> Traversable:
    """Returns the prompt folder: `$AUTOINTERP_PROMPTS`, else the templates installed with the package."""
    override = os.environ.get("AUTOINTERP_PROMPTS")
    return Path(override) if override else resources.files(TEMPLATE_PACKAGE)


@dataclass(frozen=True)
class PromptTemplate:
    """A role's template source and its hash (stored with every call that used it)."""

    role: str
    source: str

    @property
    def hash(self) -> str:
        """Returns the first 16 hex digits of the source's SHA-256."""
        return _source_hash(self.source)

    def render(self, **values: Any) -> tuple[list[ChatMessage], str]:
        """Returns (system + user messages, assistant prefill) with `values` filled in."""
        text = _compiled(self.source).render(**values)
        sections: dict[str, list[str]] = {"system": [], "user": [], "assistant": []}
        current = "system"
        for line in text.splitlines():
            if line.startswith("=== ") and line[4:].strip() in sections:
                current = line[4:].strip()
                continue
            sections[current].append(line)
        messages = [
            ChatMessage(role="system", content="\n".join(sections["system"]).strip()),
            ChatMessage(role="user", content="\n".join(sections["user"]).strip()),
        ]
        return messages, "\n".join(sections["assistant"]).strip()


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@lru_cache(maxsize=64)
def _compiled(source: str) -> jinja2.Template:
    """Returns the compiled template of `source` (compiling costs more than a call's HTTP round trip)."""
    return _environment().from_string(source)


@lru_cache(maxsize=64)
def _source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def load_prompt(role: str) -> PromptTemplate:
    """Returns the template `<role>.jinja` of the prompt folder."""
    path = prompts_dir() / f"{role}.jinja"
    if not path.is_file():
        raise ConfigError(f"prompt template {path} is missing; set AUTOINTERP_PROMPTS to a folder that has it")
    return PromptTemplate(role=role, source=path.read_text(encoding="utf-8"))
