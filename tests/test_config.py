import tomllib
from pathlib import Path
from typing import Any

import pytest

from autointerp.config import CollectConfig, FeaturesConfig, RunConfig, changed_settings, load_config
from autointerp.errors import ConfigError
from autointerp.pipeline.resume import check_resumable
from autointerp.store.database import Store


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


def test_a_config_file_that_cannot_be_read_as_text_is_one_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[explainer]\nmodel = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"^config file .*latin1\.toml is not UTF-8 text \(byte 0xe9 at offset 24\)"):
        load_config(latin1)
    with pytest.raises(ConfigError, match=r"^config file .* is a folder; pass a \.toml file$"):
        load_config(tmp_path)


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


def _readme_config_block() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Configuration") :]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


def test_the_readme_configuration_shows_the_real_defaults() -> None:
    """The README's configuration block says "defaults shown": every key it shows is a config key with that
    default (it had shown the untrained models after the trained adapters became the defaults)."""
    shown = tomllib.loads(_readme_config_block())
    actual = load_config(None).model_dump(mode="json")
    wrong: list[str] = []

    def compare(section: dict[str, Any], defaults: dict[str, Any], prefix: str) -> None:
        for key, value in section.items():
            name = f"{prefix}{key}"
            if key not in defaults:
                wrong.append(f"{name} is not a config key")
            elif isinstance(value, dict):
                compare(value, defaults[key], f"{name}.")
            elif value != defaults[key]:
                wrong.append(f"{name}: README {value!r}, default {defaults[key]!r}")

    compare(shown, actual, "")
    assert shown["explainer"]["model"] and shown["score"]["simulator"]["model"]  # the block holds the model keys
    assert not wrong, wrong


def test_steering_needs_a_strength() -> None:
    """An empty `steering_strengths` with steering among the kinds ran a steering experiment that measured
    nothing; without steering it is allowed."""
    with pytest.raises(ConfigError, match=r"'experiments\.steering_strengths': give at least one strength, or drop"):
        load_config(None, ["experiments.steering_strengths=[]"])
    config = load_config(None, ["experiments.kinds=['input']", "experiments.steering_strengths=[]"])
    assert config.experiments.steering_strengths == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("features.layers=[15, 15]", r"'features\.layers': layers must be unique"),
        ("features.layers=[]", r"'features\.layers': give at least one layer"),
        ("features.layers=[-2]", r"'features\.layers': layers must be >= 0"),
        ("experiments.kinds=['input', 'input']", r"'experiments\.kinds': experiment kinds must be unique"),
    ],
)
def test_repeated_or_empty_lists_are_refused(override: str, message: str) -> None:
    """These passed `check`: a repeated block gave its neurons twice, a repeated kind ran twice each round."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    assert load_config(None, ["features.layers=[3, 15]"]).features.layers == [3, 15]


def test_limit_and_price_keys_name_a_backend() -> None:
    """A key naming no backend (`llm.limits.opneai`) was ignored without a word."""
    with pytest.raises(ConfigError, match=r"llm\.limits key 'opneai' names no backend; write backend or backend:model"):
        load_config(None, ["llm.limits.opneai.concurrency=2"])
    prices = ['llm.prices."nosuch:*".input_per_mtok=1', 'llm.prices."nosuch:*".output_per_mtok=1']
    with pytest.raises(ConfigError, match=r"llm\.prices key 'nosuch:\*' names no backend"):
        load_config(None, prices)
    config = load_config(None, ['llm.limits."openai-compatible:qwen".concurrency=2', "llm.limits.local.concurrency=1"])
    assert set(config.llm.limits) == {"openai-compatible:qwen", "local"}


@pytest.mark.parametrize("run_id", ["../../x", "a/b", "run with space", ".hidden", "x" * 129])
def test_a_run_id_cannot_name_a_path(run_id: str) -> None:
    """A run id names folders and files (a campaign's results folder, checkpoints): `../../x` was accepted."""
    with pytest.raises(ConfigError, match=r"config key 'run_id': a run id may hold letters, digits"):
        load_config(None, [f"run_id='{run_id}'"])
    assert load_config(None, ["run_id='nightly-2026.12_07'"]).resolved_run_id() == "nightly-2026.12_07"


def test_changed_settings_names_what_a_resume_would_change() -> None:
    stored = RunConfig.model_validate({"run_id": "mine", "features": {"layer": 3}})
    data = stored.model_dump(mode="json")
    # the run id, store and llm limits are not settings of the results
    same = RunConfig.model_validate({**data, "store": {"path": "/elsewhere.duckdb"}, "llm": {"concurrency": 3}})
    assert changed_settings(data, same) == []
    other = RunConfig.model_validate({**data, "features": {"layer": 5}, "score": {"simulation_prior": "keep"}})
    assert changed_settings(data, other) == [
        "features.layer: 3 -> 5",
        'score.simulation_prior: "subtract" -> "keep"',
    ]
    # a config stored without settings, or by a version with keys this one does not know: cannot tell
    assert changed_settings({}, other) is None
    assert changed_settings({**data, "retired": {"key": 1}}, other) is None


def test_a_stored_run_resumes_only_from_data_collected_under_its_settings(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.duckdb")
    store.migrate()
    stored = RunConfig.model_validate({"run_id": "mine", "features": {"layer": 3}})
    store.start_run("mine", stored.model_dump(mode="json"), stored.config_hash(), "0", None)
    assert check_resumable(store, stored) is None  # the same settings resume
    assert check_resumable(store, RunConfig.model_validate({"run_id": "yours", "features": {"layer": 5}})) is None
    many = {"run_id": "mine", "features": {"layer": 5, "count": 7}, "corpus": {"max_windows": 8, "window_tokens": 9}}
    # nothing collected yet: any setting may change, said (a killed run's rerun with another corpus)
    warning = check_resumable(store, RunConfig.model_validate(many))
    assert warning is not None and warning.startswith("resuming run mine under changed settings (corpus.max_windows")
    feature: dict[str, Any] = {"run_id": "mine", "id": "smollm2-135m/mlp.3/0", "model": "smollm2-135m", "hook": "mlp.3"}
    feature |= {"kind": "neuron", "idx": 0, "max_activation": 1.0, "mean_activation": 0.1, "density": 0.1}
    store.write_collection("mine", [feature | {"tokens": 32, "dead": False}], [])
    # how often collection checkpoints changes nothing it keeps
    checkpoints = RunConfig.model_validate(
        {"run_id": "mine", "features": {"layer": 3}, "collect": {"checkpoint_every": 1}}
    )
    assert check_resumable(store, checkpoints) is None
    # a run collected on a GPU goes on where there is none; neighbours and outputs (memory) only warn
    elsewhere = RunConfig.model_validate({"run_id": "mine", "features": {"layer": 3}, "subject": {"device": "cuda"}})
    assert check_resumable(store, elsewhere) is None
    smaller = RunConfig.model_validate({"run_id": "mine", "features": {"layer": 3}, "outputs": {"enabled": False}})
    assert (check_resumable(store, smaller) or "").startswith("resuming run mine under changed settings (outputs.")
    with pytest.raises(
        ConfigError,
        match=r"^run mine was collected under other settings \(corpus\.max_windows: .*; and 1 more\): "
        r"set them back to resume it, or give this config another run_id$",
    ):
        check_resumable(store, RunConfig.model_validate(many))
    # the LLM stages' settings may change (an explainer that was down, now at another address): said, not refused
    moved = RunConfig.model_validate({"run_id": "mine", "features": {"layer": 3}, "explainer": {"model": "local:x"}})
    warning = check_resumable(store, moved)
    assert warning is not None and warning.startswith("resuming run mine under changed settings (explainer.model: ")


def test_a_run_stored_before_a_key_existed_resumes_under_that_key_s_old_behaviour() -> None:
    stored = RunConfig().model_dump(mode="json")
    del stored["score"]["simulation_prior"]  # stored before the setting existed: its scores kept the prior
    assert changed_settings(stored, RunConfig()) == ['score.simulation_prior: "keep" -> "subtract"']
    assert changed_settings(stored, RunConfig.model_validate({"score": {"simulation_prior": "keep"}})) == []
    # collected before the first tokens were skipped and quiet windows passed for: a resume under today's
    # defaults is refused, naming both
    del stored["features"]["skip_first_tokens"], stored["collect"]["quiet_pass"]
    kept_prior = RunConfig.model_validate({"score": {"simulation_prior": "keep"}})
    assert changed_settings(stored, kept_prior) == [
        "collect.quiet_pass: false -> true",
        'features.skip_first_tokens: 0 -> "auto"',
    ]
    as_before = kept_prior.model_copy(
        update={"features": FeaturesConfig(skip_first_tokens=0), "collect": CollectConfig(quiet_pass=False)}
    )
    assert changed_settings(stored, as_before) == []
    hashed = as_before.hashed_settings()  # its hash, and run id, as before
    assert "skip_first_tokens" not in hashed["features"] and "quiet_pass" not in hashed["collect"]
