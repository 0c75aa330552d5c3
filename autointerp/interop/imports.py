"""Imports of explanations written by other tools into a run, so our scorers score them beside ours.

Each imported explanation becomes an `explanations` row of the run (iteration 0, explainer
`import:<tool>`, prompt hash `import`); the next `autointerp run` of the same config scores every
explanation that has no scores yet, imported ones included, with the same scorers, windows and
distractors as the run's own. The run's own explainer still writes its explanation of each feature.

Formats read:
- `csv`: a header row with a feature column (`feature_id`, `feature` or `id`) and a text column
  (`explanation`, `text` or `description`); a feature is a full id (`smollm2-135m/mlp.15/417`) or, when
  every feature of the run has the same hook, its index alone.
- `neuron-explainer` (OpenAI's automated-interpretability): `NeuronSimulationResults` JSON, one per
  line or file (`explanations/<layer>/<neuron>.jsonl`), a file or a folder of them: `neuron_id`
  {`layer_index`, `neuron_index`} and `scored_explanations[].explanation`.
- `delphi` (EleutherAI): its `explanations/` folder (or one file), one file per latent named
  `<hookpoint>_latent<index>.txt` (`layers.15_latent417.txt`) holding the explanation as a JSON string.

Layer-and-index formats match the run's features by (block, index). An import is all or nothing: a
file naming features the run does not have imports nothing and says how many, and which run it was
matched against; importing the same file again adds nothing (row ids derive from run, feature, tool
and text).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autointerp.errors import AutointerpError
from autointerp.interop.export import layer_of
from autointerp.records import Explanation, Rows
from autointerp.store import Store

IMPORT_TOOLS = ("csv", "neuron-explainer", "delphi")
IMPORT_PROMPT_HASH = "import"

_FEATURE_COLUMNS = ("feature_id", "feature", "id")
_TEXT_COLUMNS = ("explanation", "text", "description")
_DELPHI_NAME = re.compile(r"^(?P<module>.+)_latent(?P<index>\d+)$")


class ImportFileError(AutointerpError):
    """An import file cannot be read or names features the run does not have."""


@dataclass(frozen=True)
class ForeignExplanation:
    """One explanation from another tool, before it is matched to a feature of the run."""

    text: str
    feature_id: str | None = None
    """A full feature id (CSV), or None when the tool names a (layer, index)."""
    layer: int | None = None
    index: int | None = None
    where: str = ""
    """File (and line) it came from, for messages."""

    def reference(self) -> str:
        """Returns how the tool named the feature."""
        return self.feature_id if self.feature_id is not None else f"layer {self.layer} index {self.index}"


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
    raise ImportFileError(f"import file {path} does not exist")


def read_csv(path: Path) -> Iterator[ForeignExplanation]:
    """Yields the rows of a CSV of feature id + explanation text."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        feature_column = next((c for c in _FEATURE_COLUMNS if c in columns), None)
        text_column = next((c for c in _TEXT_COLUMNS if c in columns), None)
        if feature_column is None or text_column is None:
            raise ImportFileError(
                f"{path} needs a header with a feature column ({', '.join(_FEATURE_COLUMNS)}) and a text column "
                f"({', '.join(_TEXT_COLUMNS)}); it has {', '.join(columns) or 'none'}"
            )
        for number, row in enumerate(reader, start=2):
            text = (row.get(text_column) or "").strip()
            if text:
                yield ForeignExplanation(
                    text, feature_id=(row.get(feature_column) or "").strip(), where=f"{path}:{number}"
                )


def read_neuron_explainer(path: Path) -> Iterator[ForeignExplanation]:
    """Yields the explanations in neuron-explainer `NeuronSimulationResults` JSON (files or a folder)."""
    for file in _files(path, (".jsonl", ".json")):
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                neuron = record["neuron_id"]
                layer, index = int(neuron["layer_index"]), int(neuron["neuron_index"])
                explanations = [e["explanation"] for e in record["scored_explanations"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ImportFileError(
                    f"{file}:{number} is not neuron-explainer NeuronSimulationResults JSON ({type(exc).__name__}: "
                    f"{exc}); expected neuron_id.layer_index, neuron_id.neuron_index, scored_explanations[].explanation"
                ) from None
            for text in explanations:
                if isinstance(text, str) and text.strip():
                    yield ForeignExplanation(text.strip(), layer=layer, index=index, where=f"{file}:{number}")


def read_delphi(path: Path) -> Iterator[ForeignExplanation]:
    """Yields the explanations in delphi's explanation files (`<hookpoint>_latent<index>.txt`, a JSON string)."""
    for file in _files(path, (".txt", ".json")):
        match = _DELPHI_NAME.match(file.stem)
        layer = None if match is None else layer_of(match.group("module"))
        if match is None or layer is None:
            raise ImportFileError(
                f"{file.name} is not a delphi explanation file name: expected <hookpoint>_latent<index>.txt, "
                "e.g. layers.15_latent417.txt"
            )
        raw = file.read_text(encoding="utf-8").strip()
        try:
            text = json.loads(raw)
        except json.JSONDecodeError:
            text = raw  # a plain-text explanation
        if isinstance(text, dict):
            text = text.get("explanation", "")
        if isinstance(text, str) and text.strip():
            yield ForeignExplanation(text.strip(), layer=layer, index=int(match.group("index")), where=str(file))


READERS = {"csv": read_csv, "neuron-explainer": read_neuron_explainer, "delphi": read_delphi}


def _matcher(features: list[dict[str, Any]]) -> Any:
    """Returns a function mapping a ForeignExplanation to a feature id of the run, or None."""
    ids = {f["id"] for f in features}
    hooks = {f["hook"] for f in features}
    by_index = {str(f["idx"]): f["id"] for f in features} if len(hooks) == 1 else {}
    by_layer: dict[tuple[int | None, int], str] = {}
    for feature in sorted(features, key=lambda f: (str(f["id"]).endswith("-"), f["id"])):  # a signed feature's + pole
        by_layer.setdefault((layer_of(str(feature["hook"])), int(feature["idx"])), feature["id"])

    def match(item: ForeignExplanation) -> str | None:
        if item.feature_id is not None:
            return item.feature_id if item.feature_id in ids else by_index.get(item.feature_id)
        return by_layer.get((item.layer, int(item.index or 0)))

    return match


def import_id(run_id: str, feature_id: str, tool: str, text: str) -> str:
    """Returns the stable row id of an imported explanation (re-importing a file adds nothing)."""
    digest = hashlib.sha256("\x1f".join((run_id, feature_id, tool, text)).encode()).hexdigest()
    return f"import-{digest[:24]}"


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    run_id: str
    read: int
    added: int
    already_there: int


def import_explanations(store: Store, run_id: str, tool: str, path: Path) -> ImportResult:
    """Adds the explanations in `path` (written by `tool`) to the run as `import:<tool>` explanations,
    all in one transaction; raises an ImportFileError (nothing added) when any names an unknown feature."""
    if tool not in READERS:
        raise ImportFileError(f"unknown import format {tool!r}; choose one of {', '.join(IMPORT_TOOLS)}")
    features = store.features(run_id)
    if not features:
        raise ImportFileError(f"run {run_id} has no collected features; run `autointerp run` first, then import")
    items = list(READERS[tool](Path(path).expanduser()))
    if not items:
        raise ImportFileError(f"{path} holds no {tool} explanations")
    match = _matcher(features)
    unknown = [item for item in items if match(item) is None]
    if unknown:
        examples = ", ".join(item.reference() for item in unknown[:3])
        raise ImportFileError(
            f"{len(unknown)} of {len(items)} explanations in {path} name features that run {run_id} does not have "
            f"(e.g. {examples}); nothing imported. The run has {len(features)} features, e.g. {features[0]['id']}"
        )
    existing = {r["id"] for r in store.query("SELECT id FROM explanations WHERE run_id = ?", [run_id])}
    rows, seen = Rows(), set(existing)
    for item in items:
        feature_id = str(match(item))
        row_id = import_id(run_id, feature_id, tool, item.text)
        if row_id in seen:
            continue
        seen.add(row_id)
        rows.add(
            Explanation(
                run_id=run_id,
                feature_id=feature_id,
                text=item.text,
                explainer=f"import:{tool}",
                prompt_hash=IMPORT_PROMPT_HASH,
                llm_call_id=None,
                id=row_id,
            )
        )
    added = len(seen) - len(existing)
    if added:
        store.write_results(rows)
    return ImportResult(run_id=run_id, read=len(items), added=added, already_there=len(items) - added)
