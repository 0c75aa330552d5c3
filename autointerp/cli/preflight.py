"""Checks made before a run starts, so bad input fails in a second instead of after collection.

`check_run(config)` checks, in this order, without loading the subject model or starting Prefect:
the store path (not under a file, schema not newer than this code), the user's prompt templates
(`llm.prompts`: each uses exactly the variables its stage provides), every LLM the config uses
(`check_models`: backend known, then the backend's own check: API key present, server reachable), the
subject model (the name resolves: embedded alias, folder, GGUF file or a Hugging Face id in the local
cache), the features
(layer and indices in range, a direction matrix without NaN rows, planted functions that run and
return finite values), the corpus (a readable, non-empty, mostly UTF-8 file that yields a window), and
what each scorer and experiment kind checks of its own. Backends, feature sources, scorers and experiment
kinds are asked through their registries: there is no list of kinds here. Each failure raises an
AutointerpError whose one-line message says what to change; what cannot be checked in advance comes back
as warnings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from autointerp.config import CorpusConfig, FeaturesConfig, RunConfig
from autointerp.errors import FeatureError, LLMError, SubjectModelError
from autointerp.pipeline.resume import check_resumable
from autointerp.prompts import check_prompt_folder
from autointerp.store.database import Store
from autointerp.subject.locate import check_model_files, folder_tokenizer, locate_model
from autointerp.subject.shape import ModelShape

if TYPE_CHECKING:
    pass

PROBE_TIMEOUT_S = 5.0
"""Seconds one reachability probe of an LLM server may take."""
CHAT_PROBE_TIMEOUT_S = 15.0
"""Seconds the preflight's one 1-token chat request to each remote model may take."""


# models -------------------------------------------------------------------------------------------


def models_in_use(config: RunConfig, *, experiments: bool | None = None) -> dict[str, list[str]]:
    """Returns `backend:model` -> the config keys that use it, for the LLMs this run will call:
    the explainer always, the simulator and the judge when a configured scorer declares that role
    (simulation; detection, fuzzing; the simulator also for best-of-k), the proposer when experiments run
    (`experiments`; default: when `experiments.lowest_n` > 0)."""
    from autointerp.score.registry import SCORERS

    roles: list[tuple[str, str]] = [("explainer.model", config.explainer.model)]
    needed = {SCORERS.get(name).role for name in config.score.methods}
    if "simulator" in needed or config.explainer.best_of > 1:  # best-of-k candidates are simulated
        roles.append(("score.simulator.model", config.score.simulator.model))
    if "judge" in needed:
        roles.append(("score.judge.model", config.score.judge.model))
    if experiments if experiments is not None else config.experiments.lowest_n > 0:
        roles.append(("experiments.proposer.model", config.experiments.proposer.model))
    return names_by_spec(roles)


def names_by_spec(named: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Returns `backend:model` -> the settings or options that name it (each once, in order) from (name,
    spec) pairs: what `check_model_specs` reads, so one spec named by several is checked, and named, once."""
    used: dict[str, list[str]] = {}
    for name, spec in named:
        names = used.setdefault(spec, [])
        if name not in names:
            names.append(name)
    return used


def check_models(
    config: RunConfig,
    *,
    experiments: bool | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
    chat_timeout_s: float | None = -1.0,
) -> list[str]:
    """Checks every LLM the run will call (see `models_in_use`): the spec parses, the backend is
    registered, its API key is set, its server answers one cheap `GET .../models` and one 1-token chat
    request within `chat_timeout_s` (default `CHAT_PROBE_TIMEOUT_S`; None: not sent); a `local:` model
    name must resolve like a subject model and its folder hold weights and a tokenizer (nothing is
    loaded). Each backend kind checks its own (`BackendKind.check`, the `autointerp.backends` registry).
    Returns warnings (a plugin backend without a check, a model the server does not list); raises a
    one-line LLMError."""
    if chat_timeout_s is not None and chat_timeout_s < 0:
        chat_timeout_s = CHAT_PROBE_TIMEOUT_S  # read now, so that a test can shorten it
    return check_model_specs(
        models_in_use(config, experiments=experiments), timeout_s=timeout_s, chat_timeout_s=chat_timeout_s
    )


def check_model_specs(
    used: dict[str, list[str]], *, timeout_s: float = PROBE_TIMEOUT_S, chat_timeout_s: float | None = None
) -> list[str]:
    """Checks each `backend:model` in `used` (spec -> the settings that name it, for the messages) as
    `check_models` does (the chat request only when `chat_timeout_s` is set). Returns warnings; raises a
    one-line LLMError."""
    from autointerp.llm.registry import ProbeLimits, backend_kind, parse_model_spec

    warnings: list[str] = []
    limits = ProbeLimits(timeout_s, chat_timeout_s)
    for spec, keys in used.items():
        who = f"{' / '.join(keys)} {spec!r}"
        try:
            backend, model = parse_model_spec(spec)
        except LLMError as exc:
            raise LLMError(f"{' / '.join(keys)}: {exc}") from None
        try:
            kind = backend_kind(backend)
        except LLMError as exc:
            raise LLMError(f"{who}: {exc}") from None
        warnings += kind.check(model, who, limits)
    return warnings


def check_scorers(config: RunConfig) -> list[str]:
    """Checks what each configured scorer needs beyond its model, through its own `check` (the
    `autointerp.scorers` registry; e.g. the embedding model's package). Returns warnings; raises an
    AutointerpError."""
    from autointerp.score.registry import SCORERS

    return [warning for name in config.score.methods for warning in SCORERS.get(name).check(config)]


def check_experiment_kinds(config: RunConfig, *, experiments: bool | None = None) -> list[str]:
    """Checks each configured experiment kind through its own `check` (the `autointerp.experiment_kinds`
    registry) when experiments run (`experiments`; default: when `experiments.lowest_n` > 0). Returns
    warnings; raises an AutointerpError."""
    if not (experiments if experiments is not None else config.experiments.lowest_n > 0):
        return []
    from autointerp.experiments.kinds import EXPERIMENT_KINDS

    return [warning for name in config.experiments.kinds for warning in EXPERIMENT_KINDS.get(name)().check(config)]


def _dictionary_width(features: FeaturesConfig) -> int | None:
    """Returns the number of latents of an SAE / sparsify / transcoder folder from its cfg.json, or None."""
    if features.path is None:
        return None
    cfg_path = Path(features.path).expanduser() / "cfg.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    for key in ("d_sae", "num_latents"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    return None


def check_feature_count(features: FeaturesConfig, shape: ModelShape) -> None:
    """Refuses a `features.count` set above the number of features there are (neurons per block,
    dictionary latents or direction rows), which would silently mean every feature: set it to that
    number or to "all". The default count is not refused (a 3-row matrix gives its 3 directions).
    Returns None; raises FeatureError."""
    count = features.count
    if features.indices or count == "all" or "count" not in features.model_fields_set:
        return
    width: int | None = None
    what = "features"
    if features.kind == "mlp":
        width, what = shape.d_mlp, f"neurons in each MLP block of {shape.slug}"
    elif features.kind in ("sae", "sparsify", "transcoder"):
        width, what = _dictionary_width(features), f"latents in {features.path}"
    elif features.kind == "direction" and features.path is not None:
        from autointerp.subject.sources import load_directions

        try:
            width, what = int(load_directions(Path(features.path)).shape[0]), f"directions in {features.path}"
        except Exception:  # check_features reports an unreadable matrix
            return
    if width is not None and int(count) > width:
        raise FeatureError(
            f'features.count = {count} but there are only {width} {what}; set features.count <= {width}, or "all"'
        )


# features -------------------------------------------------------------------------------------------


def check_features(features: FeaturesConfig, shape: ModelShape) -> None:
    """Checks the features config against the model's shape through its kind's own `check` (the
    `autointerp.feature_sources` registry): layers and indices, a direction file, a dictionary folder's
    cfg.json and weights header, planted functions. Returns None; raises FeatureError/ConfigError."""
    from autointerp.subject.kinds import FEATURE_SOURCES

    FEATURE_SOURCES.get(features.kind)().check(features, shape)


# corpus and store ------------------------------------------------------------------------------------


def check_corpus_config(corpus: CorpusConfig, shape: ModelShape | None = None) -> None:
    """Checks the corpus source: the builtin name, or a readable, non-empty, mostly UTF-8 .txt/.jsonl
    file (not a folder) whose start yields a window of `window_tokens` tokens when the model's tokenizer
    is at hand. Returns None; raises CorpusError."""
    from autointerp.corpus.sources import check_corpus

    tokenizer = folder_tokenizer(str(shape.folder)) if shape is not None and shape.folder is not None else None
    check_corpus(
        corpus.source,
        text_field=corpus.text_field,
        tokenizer=tokenizer,
        window_tokens=corpus.window_tokens,
        max_windows=corpus.max_windows,
    )


def check_store(path: Path) -> Store:
    """Checks that `path` can hold the run's database (no file where a folder must be) and that an
    existing file can be written and its schema is not newer than this code. Returns the store checked;
    raises StoreError."""
    store = Store(path)
    store.check_schema()
    store.check_writable()
    return store


def check_run(config: RunConfig, *, experiments: bool | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """Checks everything a run needs before its first stage (see the module docstring), without loading
    the subject model. Returns warnings; raises an AutointerpError naming the first problem."""
    changed = check_resumable(check_store(config.store.path), config)
    check_prompt_folder(config.llm.prompts)
    if config.llm.cache:  # opened by the first LLM stage, after collection: an unusable path fails now
        from autointerp.llm.calls import shared_cache

        shared_cache(config.llm.cache_path)
    if config.subject.device not in ("cpu", "auto"):  # torch only when a device has to be looked for
        from autointerp.subject.model import resolve_device

        resolve_device(config.subject.device)
    warnings = [changed] if changed else []
    warnings += check_models(config, experiments=experiments, timeout_s=timeout_s)
    try:
        shape = locate_model(config.subject.model, hooks=True)
    except SubjectModelError as exc:
        raise SubjectModelError(f"subject.model: {exc}") from None
    if shape.folder is not None:
        try:
            check_model_files(shape.folder)
        except SubjectModelError as exc:
            raise SubjectModelError(f"subject.model: {exc}") from None
    check_feature_count(config.features, shape)
    check_features(config.features, shape)
    check_corpus_config(config.corpus, shape)
    warnings += check_scorers(config)
    warnings += check_experiment_kinds(config, experiments=experiments)
    return warnings
