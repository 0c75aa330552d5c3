"""What a dictionary folder holds, read without its tensors: the `DictionarySpec` that a layout's cfg.json
gives (SAELens: `autointerp.subject.sae`; sparsify: `autointerp.subject.sparsify`), the safetensors
header checked against it (names, shapes; a cut-short or corrupt file), then the tensors themselves.
Every problem is one FeatureError line naming the file, what was found and what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from autointerp.errors import FeatureError


@dataclass(frozen=True)
class DictionarySpec:
    """What a dictionary folder's cfg.json says, read without the weights: enough for the preflight's
    checks, and with the weights (`check_weights`, then the loader) for the latents."""

    folder: Path
    cfg_file: Path
    weights_file: Path
    layout: str
    """"SAELens" or "sparsify"."""
    architecture: str
    activation: str
    """relu, jumprelu, topk or groupmax."""
    hook_name: str
    hook_name_out: str | None
    d_in: int
    d_sae: int
    d_out: int | None
    """Transcoders: the width written (None when cfg.json does not say; the weights tell)."""
    k: int | None = None
    apply_b_dec_to_input: bool = True
    rescale_acts_by_decoder_norm: bool = False
    cfg: dict[str, Any] = field(default_factory=dict)

    @property
    def is_transcoder(self) -> bool:
        """True when the dictionary writes to another hook point than it reads."""
        return self.hook_name_out is not None

    def expected_tensors(self) -> dict[str, tuple[int | None, ...]]:
        """Returns the tensors the weights file must hold -> their shapes (None: any size)."""
        d_in, d_sae, d_out = self.d_in, self.d_sae, self.d_out if self.is_transcoder else self.d_in
        if self.layout == "sparsify":
            return {
                "encoder.weight": (d_sae, d_in),
                "encoder.bias": (d_sae,),
                "W_dec": (d_sae, d_out),
                "b_dec": (d_out,),
            }
        return {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_out), "b_dec": (d_out,)}


def describe_tensors(expected: dict[str, tuple[int | None, ...]]) -> str:
    """Returns `W_enc [576, 48], b_enc [48], ...` for messages."""
    return ", ".join(
        f"{name} [{', '.join('d' if n is None else str(n) for n in shape)}]" for name, shape in expected.items()
    )


def safetensors_shapes(path: Path, expected: str) -> dict[str, tuple[int, ...]]:
    """Returns tensor name -> shape from a safetensors file's header, without reading the tensors;
    FeatureError (naming the file, what is wrong and `expected`) when the file is unreadable, not a
    safetensors file, or shorter than its header says."""

    def bad(why: str) -> FeatureError:
        return FeatureError(f"{path} {why}; expected a safetensors file with {expected}")

    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            first = handle.read(8)
            if len(first) < 8:
                raise bad(f"is {size} bytes, too short for a safetensors header")
            length = int.from_bytes(first, "little")
            if length + 8 > size:
                raise bad(
                    f"is cut short or not a safetensors file ({size} bytes; its first 8 bytes announce a "
                    f"{length}-byte header)"
                )
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError):
        raise bad("has a header that is not JSON (not a safetensors file?)") from None
    if not isinstance(header, dict):
        raise bad("has a header that is not a JSON object")
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(n) for n in info["shape"])
            start, stop = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"has a malformed header entry for {name!r}") from None
        shapes[name] = shape
        end = max(end, start, stop)
    if 8 + length + end > size:
        raise bad(f"is cut short ({size} bytes; its tensors need {8 + length + end})")
    return shapes


def check_weights(spec: DictionarySpec) -> DictionarySpec:
    """Checks the weights file's header against `spec` (every tensor present, shapes as cfg.json says);
    returns the spec with `d_out` filled in from W_dec. Reads no tensor data."""
    expected = spec.expected_tensors()
    shapes = safetensors_shapes(spec.weights_file, f"{describe_tensors(expected)} ({spec.layout} layout)")
    d_out = spec.d_out
    if spec.is_transcoder and d_out is None and len(shapes.get("W_dec", ())) == 2:
        d_out = shapes["W_dec"][1]
        expected = {name: tuple(d_out if n is None else n for n in shape) for name, shape in expected.items()}
    if spec.activation == "jumprelu":
        key = "threshold" if "threshold" in shapes or "log_threshold" not in shapes else "log_threshold"
        expected[key] = (spec.d_sae,)
    for name, shape in expected.items():
        if name not in shapes:
            held = ", ".join(sorted(shapes)) or "no tensors"
            raise FeatureError(
                f"{spec.weights_file} has no tensor {name!r} (it holds {held}); expected {describe_tensors(expected)}"
            )
        if any(want is not None and have != want for have, want in zip(shapes[name], shape, strict=False)) or len(
            shapes[name]
        ) != len(shape):
            sizes = f"d_in = {spec.d_in}, d_sae = {spec.d_sae}" + (f", d_out = {d_out}" if spec.is_transcoder else "")
            raise FeatureError(
                f"{spec.weights_file}: {name} is {list(shapes[name])} but {spec.cfg_file.name} says {sizes} "
                f"(expected {describe_tensors({name: shape})})"
            )
    return spec if d_out == spec.d_out else _replace_d_out(spec, d_out)


def check_finite_weights(spec: DictionarySpec) -> None:
    """Raises FeatureError naming the first weight tensor (`W_enc`, `b_enc`, `W_dec`, `b_dec`, a JumpReLU's
    `threshold`; sparsify's names in its layout) that holds NaN or infinity, which the run met only at
    collection. Reads the tensors one at a time (memory-mapped). Returns None."""
    from safetensors import safe_open

    try:
        with safe_open(str(spec.weights_file), framework="pt") as weights:
            names = list(spec.expected_tensors())
            held = set(weights.keys())
            names += ["threshold"] if "threshold" in held else []  # JumpReLU's (log_threshold may be -inf)
            for name in names:
                tensor = weights.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    bad = "NaN" if bool(torch.isnan(tensor).any()) else "infinity"
                    raise FeatureError(f"{spec.weights_file}: {name} holds {bad}; retrain or re-export the dictionary")
    except FeatureError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FeatureError(f"cannot read the weights in {spec.weights_file} ({why})") from None


def _replace_d_out(spec: DictionarySpec, d_out: int | None) -> DictionarySpec:
    from dataclasses import replace

    return replace(spec, d_out=d_out)


def load_tensors(spec: DictionarySpec) -> dict[str, torch.Tensor]:
    """Returns the tensors of a dictionary whose header `check_weights` passed; FeatureError when the
    data cannot be read."""
    try:
        return load_file(str(spec.weights_file))
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FeatureError(
            f"cannot read {spec.weights_file} ({reason}); expected a safetensors file with "
            f"{describe_tensors(spec.expected_tensors())}"
        ) from None


def read_cfg_json(cfg_file: Path, layout: str) -> dict[str, Any]:
    """Returns a cfg.json's object; FeatureError naming the file when it is not readable JSON."""
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FeatureError(
            f"cannot read {cfg_file} ({reason}); expected the JSON object of a {layout} cfg.json"
        ) from None
    if not isinstance(cfg, dict):
        raise FeatureError(f"{cfg_file} holds a JSON {type(cfg).__name__}; expected the object of a {layout} cfg.json")
    return cfg


def cfg_int(cfg: dict[str, Any], key: str, cfg_file: Path, meaning: str, default: int | None = None) -> int:
    """Returns cfg[key] as a positive int (or `default` when absent); FeatureError otherwise."""
    value = cfg.get(key, default)
    if value is None:
        raise FeatureError(f"{cfg_file} has no {key!r} ({meaning}, a positive integer)")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FeatureError(f"{cfg_file}: {key} is {value!r}; expected {meaning}, a positive integer")
    return value
