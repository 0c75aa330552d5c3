from pathlib import Path

import pytest

from autointerp.config import RunConfig, load_config
from autointerp.errors import ConfigError


def test_defaults_validate_and_run_id_is_stable() -> None:
    first, second = load_config(), load_config()
    assert first.resolved_run_id() == second.resolved_run_id()
    assert first.resolved_run_id().startswith("run-")


def test_overrides_parse_toml_values() -> None:
    config = load_config(None, ["features.indices=[1, 2]", "corpus.source=/tmp/x.txt", "features.layer=3"])
    assert config.features.indices == [1, 2]
    assert config.corpus.source == "/tmp/x.txt"
    assert config.features.layer == 3


def test_results_changing_keys_change_the_run_id_but_the_store_path_does_not() -> None:
    base = load_config()
    assert load_config(None, ["features.layer=3"]).resolved_run_id() != base.resolved_run_id()
    assert load_config(None, ["store.path=/tmp/other.duckdb"]).resolved_run_id() == base.resolved_run_id()


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[features]\nlayr = 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'features.layr'"):
        load_config(path)


def test_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"config key 'corpus.window_tokens'"):
        load_config(None, ["corpus.window_tokens=0"])
    with pytest.raises(ConfigError, match=r"config key 'features.indices'"):
        load_config(None, ["features.indices=[-1]"])


def test_bad_toml_and_missing_file_and_bad_override(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[features\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["features.layer"])


def test_config_hash_ignores_run_id() -> None:
    assert RunConfig(run_id="a").config_hash() == RunConfig(run_id="b").config_hash()


def test_override_keys_are_toml_dotted_keys() -> None:
    config = load_config(
        None, ['llm.prices."openai:gpt-4.1".input_per_mtok=2.0', 'llm.prices."openai:gpt-4.1".output_per_mtok=8.0']
    )
    assert config.llm.prices["openai:gpt-4.1"].input_per_mtok == 2.0
    unquoted = load_config(
        None, ["llm.prices.openai-compatible:*.input_per_mtok=1", "llm.prices.openai-compatible:*.output_per_mtok=2"]
    )
    assert unquoted.llm.prices["openai-compatible:*"].output_per_mtok == 2
