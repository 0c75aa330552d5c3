"""Prompt templates (Jinja2): where they come from, rendering into chat messages, their hashes, and the
check that a template uses exactly the variables its stage provides.

The templates live in the repository's top-level `prompts/` folder; the build installs them into the
package as `autointerp.prompt_templates` (pyproject's package-dir), so a wheel carries them and an
editable install reads the folder itself. A run can read its own templates instead: `llm.prompts` (a
folder) or the `AUTOINTERP_PROMPTS` environment variable; a role whose `<role>.jinja` is not in that
folder uses the installed one.

A template file holds the system message, then `=== user`, then optionally `=== assistant`
followed by the text the assistant's answer is prefilled with.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from autointerp.errors import ConfigError
from autointerp.llm.base import ChatMessage

TEMPLATE_PACKAGE = "autointerp.prompt_templates"
ENV_VAR = "AUTOINTERP_PROMPTS"

PROMPT_VARIABLES: dict[str, frozenset[str]] = {
    "explain": frozenset({"exemplars", "top_tokens"}),
    "explain_contrastive": frozenset({"exemplars", "top_tokens", "contrast", "contrast_wanted"}),
    "simulate": frozenset({"explanation"}),
    "simulate_fewshot": frozenset({"explanation"}),
    "simulate_generate": frozenset({"explanation", "tokens"}),
    "detect": frozenset({"explanation", "text"}),
    "detect_batch": frozenset({"explanation", "texts"}),
    "fuzz": frozenset({"explanation", "text"}),
    "fuzz_batch": frozenset({"explanation", "texts"}),
    "output_judge": frozenset({"explanation", "prompt", "first", "second"}),
    "explain_output": frozenset({"promoted", "suppressed", "steer_raised", "steer_lowered"}),
    "explain_both": frozenset({"exemplars", "top_tokens", "promoted", "suppressed", "steer_raised", "steer_lowered"}),
    "intruder": frozenset({"texts"}),
    "propose": frozenset({"explanation", "exemplars", "side", "previous"}),
    "minimal_pair": frozenset({"explanation", "marked_text", "token"}),
    "predict_output": frozenset({"explanation"}),
    "revise": frozenset({"explanation", "exemplars", "results"}),
}
"""Every template the stages read (`<role>.jinja`) -> the variables its stage renders it with. A template
must use each of them and no other (`check_prompt_folder`), except those in `OPTIONAL_PROMPT_VARIABLES`."""

OPTIONAL_PROMPT_VARIABLES: dict[str, frozenset[str]] = {
    "explain": frozenset({"patterns"}),
    "explain_contrastive": frozenset({"patterns"}),
    "explain_both": frozenset({"patterns"}),
}
"""Variables a stage also provides that a user's template may leave out (added after templates were written
against the stage: `patterns`, what the marked tokens have in common)."""

SAMPLE_VALUES: dict[str, Any] = {
    "exemplars": [{"marked_text": "The <<cat>> sat on the mat."}, {"marked_text": "A <<dog>> barked."}],
    "top_tokens": "' cat' (10), ' dog' (8)",
    "patterns": "animal nouns",
    "contrast": ["The car stopped.", "It rained all day."],
    "contrast_wanted": 2,
    "explanation": "names of animals",
    "tokens": ["The", " cat", " sat"],
    "text": "The cat sat on the mat.",
    "texts": ["The cat sat on the mat.", "It rained all day.", "A dog barked.", "She read a book."],
    "prompt": "Once upon a time",
    "first": " there was a cat.",
    "second": " there was a king.",
    "promoted": "' cat', ' dog'",
    "suppressed": "' car', ' rain'",
    "steer_raised": "' cat', ' kitten'",
    "steer_lowered": "' the', ' a'",
    "side": "activating",
    "previous": ["The cat slept."],
    "results": ["'The cat sat.' -> 9 (predicted: fires)"],
    "marked_text": "The <<cat>> sat on the mat.",
    "token": "' cat'",
}
"""A value of each variable, shaped as its stage passes it: `check_template` renders a user's template with
them, so one that fails when rendered (`{{ 1 / 0 }}`, `{{ exemplars.nope }}`) is refused before a run."""

SAMPLE_SIDES = ("activating", "non_activating")
"""`side` of the `propose` template: it is rendered with each."""

_folder: Path | None = None
"""The folder `use_prompt_folder` set for this process (None: `$AUTOINTERP_PROMPTS`, else the installed)."""


def installed_prompts() -> Traversable:
    """Returns the templates installed with the package."""
    return resources.files(TEMPLATE_PACKAGE)


def prompt_folder() -> Path | None:
    """Returns the folder of the user's own templates: the one `use_prompt_folder` set (a run's
    `llm.prompts`), else `$AUTOINTERP_PROMPTS`; None when neither is set."""
    if _folder is not None:
        return _folder
    override = os.environ.get(ENV_VAR)
    return Path(override).expanduser() if override else None


def use_prompt_folder(folder: Path | None) -> None:
    """Reads templates from `folder` (a run's `llm.prompts`) in this process from now on; None: back to
    `$AUTOINTERP_PROMPTS`, else the installed templates."""
    global _folder
    _folder = None if folder is None else Path(folder).expanduser()


@contextmanager
def prompts_from(folder: Path | None) -> Iterator[None]:
    """Reads templates from `folder` inside the block (as `use_prompt_folder`), then as before."""
    before = _folder
    use_prompt_folder(folder)
    try:
        yield
    finally:
        use_prompt_folder(before)


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
    """Returns the template `<role>.jinja`: from the user's prompt folder when it holds one, else the
    installed one."""
    folder = prompt_folder()
    if folder is not None and (folder / f"{role}.jinja").is_file():
        return PromptTemplate(role=role, source=(folder / f"{role}.jinja").read_text(encoding="utf-8"))
    path = installed_prompts() / f"{role}.jinja"
    if not path.is_file():
        raise ConfigError(f"prompt template {role}.jinja is missing; put it in the folder that llm.prompts names")
    return PromptTemplate(role=role, source=path.read_text(encoding="utf-8"))


def template_variables(source: str) -> set[str]:
    """Returns the variables a template's source reads (loop and `set` variables excluded)."""
    return set(meta.find_undeclared_variables(_environment().parse(source)))


def check_template(role: str, source: str, where: str) -> None:
    """Checks that a template parses and uses exactly the variables its stage provides; ConfigError (one
    line naming the file and the variable) otherwise."""
    optional = OPTIONAL_PROMPT_VARIABLES.get(role, frozenset())
    provided = PROMPT_VARIABLES[role] | optional
    try:
        used = template_variables(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"prompt template {where} line {exc.lineno}: {exc.message}") from None
    unknown = sorted(used - provided)
    if unknown:
        raise ConfigError(
            f"prompt template {where} uses {{{{ {unknown[0]} }}}}, which the {role} stage does not provide "
            f"(it provides {', '.join(sorted(provided))})"
        )
    missing = sorted(provided - optional - used)
    if missing:
        raise ConfigError(
            f"prompt template {where} does not use {{{{ {missing[0]} }}}}, which the {role} stage provides "
            f"(it provides {', '.join(sorted(provided))})"
        )
    for side in SAMPLE_SIDES if "side" in provided else (None,):
        values = {name: SAMPLE_VALUES[name] for name in provided} | ({"side": side} if side else {})
        try:
            PromptTemplate(role, source).render(**values)
        except Exception as exc:  # whatever a template's expressions raise on a stage's values
            why = str(exc).splitlines()[0] if str(exc) else ""
            raise ConfigError(
                f"prompt template {where} fails when rendered with sample values ({type(exc).__name__}: {why})"
            ) from None


def check_prompt_folder(folder: Path | None = None) -> None:
    """Checks a folder of the user's own templates (default: `prompt_folder()`; nothing to check when none
    is set): it exists, every `.jinja` in it is a template a stage reads, and each uses exactly the
    variables its stage provides. ConfigError (one line) otherwise."""
    folder = prompt_folder() if folder is None else Path(folder).expanduser()
    if folder is None:
        return
    if not folder.is_dir():
        raise ConfigError(f"prompt folder {folder} does not exist; set llm.prompts (or {ENV_VAR}) to a folder")
    for path in sorted(folder.glob("*.jinja")):
        role = path.stem
        if role not in PROMPT_VARIABLES:
            raise ConfigError(
                f"prompt template {path} is not one a stage reads; name it after one of {', '.join(PROMPT_VARIABLES)}"
            )
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"prompt template {path} cannot be read ({exc})") from None
        check_template(role, source, str(path))
