"""Where a subject (or `local:`) model is and what it looks like, read without loading its weights:
`locate_model` resolves a name as the loader does (embedded alias, folder, .gguf file, Hugging Face
id in the local cache) into a `ModelShape`; `check_model_files` checks that a folder holds readable
weights and tokenizer files. The preflight and the local backend's own check use both."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autointerp.errors import SubjectModelError
from autointerp.subject.shape import ModelShape

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


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
def folder_tokenizer(folder: str) -> PreTrainedTokenizerBase | None:
    """Returns the tokenizer of a local model folder (no weights), or None when it cannot be read."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception:
        return None


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""A transformers folder's weights: one file, or a sharded index naming its shards."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
"""Any one of these makes a tokenizer (with tokenizer_config.json and, for vocab.json, merges.txt)."""


def _readable(path: Path) -> str | None:
    """Returns None when `path` is a file whose first bytes can be read, else why not."""
    try:
        with path.open("rb") as handle:
            first = handle.read(8)
    except IsADirectoryError:
        return "is a folder"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not first:
        return "is empty"
    if path.suffix == ".safetensors":
        size = path.stat().st_size
        header = int.from_bytes(first, "little") if len(first) == 8 else size
        if header + 8 > size:
            return f"is cut short ({size} bytes; its header alone says {header + 8})"
    return None


def check_model_files(folder: Path) -> None:
    """Checks that a transformers model folder holds readable weights (model.safetensors, a sharded
    index and every shard it names, or pytorch_model.bin) and tokenizer files, so a folder with only
    config.json fails here in one line instead of in the tokenizer or loader after the run started.
    Returns None; raises SubjectModelError."""
    folder = Path(folder)
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).exists()]
    if not weights:
        raise SubjectModelError(
            f"model folder {folder} has config.json but no weights ({', '.join(WEIGHT_FILES[::2])} or a sharded "
            "*.index.json); copy the weights in, or point at the complete folder"
        )
    for path in weights:
        problem = _readable(path)
        if problem is not None:
            raise SubjectModelError(f"model weights {path} {problem}; copy the file again")
        if path.name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise SubjectModelError(f"{path} is not a weight index (no 'weight_map'); copy it again") from None
            for shard in shards:
                problem = _readable(folder / str(shard)) if (folder / str(shard)).exists() else "is missing"
                if problem is not None:
                    raise SubjectModelError(f"weight shard {folder / str(shard)} named in {path.name} {problem}")
    tokenizers = [folder / name for name in TOKENIZER_FILES if (folder / name).exists()]
    if not tokenizers:
        raise SubjectModelError(
            f"model folder {folder} has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json + "
            "merges.txt); copy them from where the model came from"
        )
    for path in tokenizers:
        problem = _readable(path)
        if problem is not None:
            raise SubjectModelError(f"tokenizer file {path} {problem}; copy it again")
