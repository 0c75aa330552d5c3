"""Prompt templates: the installed ones are the top-level prompts/ folder and use exactly what their stages
provide; a user's folder (`llm.prompts` or $AUTOINTERP_PROMPTS) replaces the roles it holds, and a
template that misses a variable or uses an unknown one is refused in one line by the preflight."""

from __future__ import annotations

from pathlib import Path

import pytest

from autointerp.cli.preflight import check_run
from autointerp.config import load_config
from autointerp.errors import ConfigError
from autointerp.prompts import (
    OPTIONAL_PROMPT_VARIABLES,
    PROMPT_VARIABLES,
    SAMPLE_VALUES,
    check_prompt_folder,
    check_template,
    installed_prompts,
    load_prompt,
    prompts_from,
    template_variables,
)

ROOT = Path(__file__).resolve().parents[1]
EXPLAIN = "You explain features.\n=== user\n{% for e in exemplars %}{{ e.marked_text }}\n{% endfor %}{{ top_tokens }}\n"


def test_the_installed_templates_are_the_top_level_folder_and_use_what_their_stages_provide() -> None:
    folder = ROOT / "prompts"
    assert {p.stem for p in folder.glob("*.jinja")} == set(PROMPT_VARIABLES)
    assert set(SAMPLE_VALUES) == set().union(*PROMPT_VARIABLES.values(), *OPTIONAL_PROMPT_VARIABLES.values())
    for role, provided in PROMPT_VARIABLES.items():
        source = (folder / f"{role}.jinja").read_text(encoding="utf-8")
        assert installed_prompts().joinpath(f"{role}.jinja").read_text(encoding="utf-8") == source
        assert template_variables(source) == provided | OPTIONAL_PROMPT_VARIABLES.get(role, frozenset()), role
        check_template(role, source, f"{role}.jinja")


def test_a_folder_replaces_the_roles_it_holds_and_the_others_stay_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOINTERP_PROMPTS", raising=False)
    (tmp_path / "explain.jinja").write_text(EXPLAIN, encoding="utf-8")
    installed = load_prompt("explain")
    with prompts_from(tmp_path):
        mine = load_prompt("explain")
        assert mine.source == EXPLAIN and mine.hash != installed.hash
        assert load_prompt("simulate").source == installed_prompts().joinpath("simulate.jinja").read_text(
            encoding="utf-8"
        )
        messages, prefill = mine.render(exemplars=[{"marked_text": "a <<b>>"}], top_tokens="'b' (10)")
        assert messages[1].content == "a <<b>>\n'b' (10)" and prefill == ""
        check_prompt_folder()  # it leaves out {{ patterns }}, which a template may
    assert load_prompt("explain") == installed
    monkeypatch.setenv("AUTOINTERP_PROMPTS", str(tmp_path))  # the environment variable works as before
    assert load_prompt("explain").source == EXPLAIN


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        ("explain.jinja", "=== user\n{{ top_tokens }}", r"does not use \{\{ exemplars \}\}, which the explain stage"),
        (
            "simulate.jinja",
            "{{ explanation }} {{ tokens }}",
            r"uses \{\{ tokens \}\}, which the simulate stage does not",
        ),
        ("simulate.jinja", "{{ explanation }} {{ patterns }}", r"uses \{\{ patterns \}\}, which the simulate stage"),
        ("detect.jinja", "{{ explanation }} {{ text ", r"detect.jinja line 1: "),
        ("explian.jinja", "{{ exemplars }}", r"explian.jinja is not one a stage reads"),
        # parsed and used the right variables, then failed in every call of a run, after collection
        ("explain.jinja", EXPLAIN + "{{ 1 / 0 }}", r"explain.jinja fails when rendered .*\(ZeroDivisionError"),
        (
            "revise.jinja",
            "{{ explanation }}{% for e in exemplars %}{{ e.nope.deeper }}{% endfor %}{{ results }}",
            r"revise.jinja fails when rendered with sample values \(UndefinedError: .* has no attribute 'nope'",
        ),
        (
            "propose.jinja",
            "{{ explanation }}{{ exemplars }}{{ previous }}{% if side != 'activating' %}{{ 1 // 0 }}{% endif %}",
            r"propose.jinja fails when rendered",  # only on its non-activating side
        ),
    ],
)
def test_a_bad_template_is_one_line_naming_it(tmp_path: Path, name: str, source: str, message: str) -> None:
    (tmp_path / name).write_text(source, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        check_prompt_folder(tmp_path)
    assert "\n" not in str(caught.value) and name in str(caught.value)


def test_the_preflight_checks_the_configured_folder(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "revise.jinja").write_text("{{ explanation }} {{ results }}", encoding="utf-8")
    config = load_config(None, [f"store.path='{tmp_path / 'db.duckdb'}'", f"llm.prompts='{tmp_path / 'prompts'}'"])
    with pytest.raises(ConfigError, match=r"revise.jinja does not use \{\{ exemplars \}\}"):
        check_run(config)
    missing = load_config(None, [f"store.path='{tmp_path / 'db.duckdb'}'", f"llm.prompts='{tmp_path / 'none'}'"])
    with pytest.raises(ConfigError, match=r"prompt folder .* does not exist; set llm.prompts"):
        check_run(missing)
