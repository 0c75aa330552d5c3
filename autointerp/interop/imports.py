"""Imports of explanations written by other tools into a run, so our scorers score them beside ours.

Each imported explanation becomes an `explanations` row of the run (iteration 0, explainer
`import:<tool>`, prompt hash `import`); the next `autointerp run` of the same config scores every
explanation that has no scores yet, imported ones included, with the same scorers, windows and
distractors as the run's own. The run's own explainer still writes its explanation of each feature.

Formats read:
- `csv`: a header row with a feature column (`feature_id`, `feature` or `id`) and a text column
  (`explanation`, `text` or `description`); a feature is a full id (`smollm2-135m/mlp.15/417`) or an
  index alone, which needs the run to have one hook, or a `hook` column naming it as stored
  (`mlp.15`, `blocks.15.hook_resid_post`); an optional `kind` column (`neuron`, `sae`, ...) is checked
  too. A UTF-8 byte-order mark is ignored; fields may be up to 16 MiB.
- `neuron-explainer` (OpenAI's automated-interpretability): `NeuronSimulationResults` JSON, one per
  line or file (`explanations/<layer>/<neuron>.jsonl`), a file or a folder of them: `neuron_id`
  {`layer_index`, `neuron_index`} and `scored_explanations[].explanation`. These name MLP neurons and
  match only `neuron` features (`mlp.<layer>`).
- `delphi` (EleutherAI): its results folder, its `explanations/` folder or one file; one file per
  latent named `<hookpoint>_latent<index>.txt` holding the explanation as a JSON string. Hookpoints
  are sparsify module names: `layers.L` (the residual stream after block L) matches an SAE at
  `blocks.L.hook_resid_post` or a transcoder reading `blocks.L.hook_resid_pre`; `layers.L.mlp` an SAE
  at `blocks.L.hook_mlp_out` or a transcoder reading the MLP's input (`blocks.L.mlp.hook_in`, as
  sparsify hooks it; `blocks.L.ln2.hook_normalized` in runs stored before that). A delphi latent
  never matches an MLP neuron. delphi's score files beside the explanations
  (`scores/<scorer>/<latent>.txt`) are read too: per-example classifications (its `detection` and
  `fuzz` scorers) become score rows `import:delphi:<scorer>` with metrics
  `import:delphi:<scorer>_balanced_accuracy` and `..._auroc`, computed as delphi's result analysis
  does; other score files are named as skipped.

Placeholders are refused and counted: empty texts and delphi's parse-failure text "Explanation could
not be parsed.". An import is all or nothing: every file is read and every explanation matched before
anything is written, and a file naming a feature the run does not have (another layer, index, hook
or kind) imports nothing and says which, against which run; importing the same file again adds
nothing (row ids derive from run, feature, tool and text).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autointerp.errors import AutointerpError
from autointerp.records import Explanation, Feature, Rows, Score
from autointerp.store.database import Store

IMPORT_TOOLS = ("csv", "neuron-explainer", "delphi")
IMPORT_PROMPT_HASH = "import"

PLACEHOLDER_TEXTS = frozenset({"explanation could not be parsed."})
"""Texts other tools write when they have no explanation (compared case-insensitively): refused."""

CSV_FIELD_LIMIT = 16 * 1024 * 1024
"""The longest CSV field an import reads (Python's csv module stops at 128 KiB by default)."""

_FEATURE_COLUMNS = ("feature_id", "feature", "id")
_TEXT_COLUMNS = ("explanation", "text", "description")
_DELPHI_NAME = re.compile(r"^(?P<module>.+)_latent(?P<index>\d+)$")
_DELPHI_HOOKPOINT = re.compile(r"^(?:model\.|gpt_neox\.|transformer\.)?(?:layers|h)\.(?P<layer>\d+)(?P<mlp>\.mlp)?$")

Target = tuple[str | None, str | None]
"""(feature kind, stored hook) a foreign explanation may land on; None: any."""


class ImportFileError(AutointerpError):
    """An import file cannot be read or names features the run does not have."""


@dataclass(frozen=True)
class ForeignScore:
    """One metric of one of the other tool's scorers on an explanation."""

    scorer: str
    metric: str
    value: float
    scorer_model: str
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class ForeignExplanation:
    """One explanation from another tool, before it is matched to a feature of the run."""

    text: str
    feature_id: str | None = None
    """A full feature id or a bare index (CSV), or None when the tool names a hook and an index."""
    index: int | None = None
    targets: tuple[Target, ...] | None = None
    """The (kind, hook) pairs the tool's name can denote; None: any hook (a full id, or a bare index)."""
    named: str = ""
    """How the tool named the feature, for messages (e.g. `delphi hookpoint layers.15, latent 417`)."""
    where: str = ""
    """File (and line) it came from, for messages."""
    scores: tuple[ForeignScore, ...] = ()

    def reference(self) -> str:
        """Returns where the explanation came from and how the tool named the feature."""
        name = self.named or (self.feature_id if self.feature_id is not None else f"index {self.index}")
        return f"{self.where} ({name})" if self.where else name


def is_placeholder(text: str) -> bool:
    """True for texts that stand for no explanation: empty, whitespace, or a tool's parse-failure text."""
    return not text.strip() or text.strip().casefold() in PLACEHOLDER_TEXTS


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
    raise ImportFileError(f"import file {path} does not exist")


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, limit))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def read_csv(path: Path) -> Iterator[ForeignExplanation]:
    """Yields the rows of a CSV of feature id + explanation text (and optionally hook and kind)."""
    if not path.is_file():
        raise ImportFileError(f"import file {path} does not exist or is not a file")
    number = 1
    try:
        with _csv_field_limit(CSV_FIELD_LIMIT), path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            feature_column = next((c for c in _FEATURE_COLUMNS if c in columns), None)
            text_column = next((c for c in _TEXT_COLUMNS if c in columns), None)
            if columns and columns[0].lstrip().startswith(("{", "[")):
                raise ImportFileError(
                    f"{path} is JSON, not CSV; pass --from neuron-explainer (NeuronSimulationResults JSON) or"
                    " --from delphi, or write a CSV with feature_id,explanation columns"
                )
            if feature_column is None or text_column is None:
                raise ImportFileError(
                    f"{path} needs a header with a feature column ({', '.join(_FEATURE_COLUMNS)}) and a text "
                    f"column ({', '.join(_TEXT_COLUMNS)}); it has {', '.join(columns) or 'none'}"
                )
            for row in reader:
                number = reader.line_num  # the file's line (blank lines skipped, quoted fields span lines)
                if None in row:  # more fields than the header: an unquoted comma would cut the text short
                    raise ImportFileError(
                        f"{path}:{number} has {len(columns) + len(row[None])} fields where the header has "
                        f'{len(columns)}; quote a field that holds a comma ("cats, dogs"); nothing imported'
                    )
                feature = (row.get(feature_column) or "").strip()
                hook = (row.get("hook") or "").strip() or None
                kind = (row.get("kind") or "").strip() or None
                stated = f"{feature}" + "".join(f" {k}={v}" for k, v in (("hook", hook), ("kind", kind)) if v)
                yield ForeignExplanation(
                    (row.get(text_column) or "").strip(),
                    feature_id=feature,
                    targets=((kind, hook),) if hook or kind else None,
                    named=stated,
                    where=f"{path}:{number}",
                )
    except csv.Error as exc:
        raise ImportFileError(f"{path}:{number + 1} cannot be read as CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_neuron_explainer(path: Path) -> Iterator[ForeignExplanation]:
    """Yields the explanations in neuron-explainer `NeuronSimulationResults` JSON (files or a folder)."""
    for file in _files(path, (".jsonl", ".json")):
        for number, line in enumerate(_text(file).splitlines(), start=1):
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
                yield ForeignExplanation(
                    text.strip() if isinstance(text, str) else "",
                    index=index,
                    targets=(("neuron", f"mlp.{layer}"),),
                    named=f"neuron-explainer MLP neuron, layer {layer} neuron {index}",
                    where=f"{file}:{number}",
                )


def _text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def delphi_targets(hookpoint: str) -> tuple[Target, ...] | None:
    """Returns the (kind, stored hook) pairs a delphi hookpoint can denote (see the module docstring),
    or None when it is not a hookpoint autointerp reads (`layers.L` or `layers.L.mlp`)."""
    match = _DELPHI_HOOKPOINT.match(hookpoint)
    if match is None:
        return None
    layer = int(match.group("layer"))
    if match.group("mlp"):
        return (
            ("sae", f"blocks.{layer}.hook_mlp_out"),
            ("transcoder", f"blocks.{layer}.mlp.hook_in"),
            ("transcoder", f"blocks.{layer}.ln2.hook_normalized"),  # what runs before sparsify's mlp.hook_in stored
        )
    return (("sae", f"blocks.{layer}.hook_resid_post"), ("transcoder", f"blocks.{layer}.hook_resid_pre"))


def _delphi_layout(path: Path) -> tuple[list[Path], Path | None]:
    """Returns (explanation files, the folder holding `scores/` or None) for a delphi results folder, its
    `explanations/` folder or one explanation file."""
    if path.is_dir() and (path / "explanations").is_dir():
        return _files(path / "explanations", (".txt", ".json")), path if (path / "scores").is_dir() else None
    files = _files(path, (".txt", ".json"))
    folder = path if path.is_dir() else path.parent
    root = folder.parent if folder.name == "explanations" and (folder.parent / "scores").is_dir() else None
    return files, root


def _delphi_scorer_model(root: Path) -> str:
    """Returns the model delphi's run scored with (its `run_config.json`), or `delphi` when unknown."""
    try:
        config = json.loads((root / "run_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "delphi"
    model = config.get("explainer_model") if isinstance(config, dict) else None
    return f"delphi:{model}" if isinstance(model, str) and model else "delphi"


def delphi_classification_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Returns delphi's per-latent numbers from its per-example classifier outputs, as its result analysis
    computes them: class-balanced accuracy over the examples with a prediction, and AUROC of the
    probabilities (when there are any and both classes occur)."""
    from autointerp.score.ranking import auroc

    valid = [r for r in records if r.get("prediction") is not None]
    positives = [r for r in valid if r["activating"]]
    negatives = [r for r in valid if not r["activating"]]
    true_pos = sum(1 for r in positives if r["prediction"] >= 0.5)
    true_neg = sum(1 for r in negatives if r["prediction"] < 0.5)
    values = {
        "balanced_accuracy": (
            (true_pos / len(positives) if positives else 0.0) + (true_neg / len(negatives) if negatives else 0.0)
        )
        / 2
    }
    probable = [r for r in records if r.get("probability") is not None]
    if probable:
        area = auroc([float(r["probability"]) for r in probable], [bool(r["activating"]) for r in probable])
        if area is not None:
            values["auroc"] = area
    return values


def read_delphi_scores(root: Path, latent: str, skipped: dict[str, str]) -> tuple[ForeignScore, ...]:
    """Returns the scores in `root/scores/<scorer>/<latent>.txt` for every scorer delphi wrote; adds
    `scorer -> why` to `skipped` for score files that are not per-example classifications."""
    scores: list[ForeignScore] = []
    model = _delphi_scorer_model(root)
    for folder in sorted(p for p in (root / "scores").iterdir() if p.is_dir()):
        file = folder / f"{latent.replace('/', '--')}.txt"
        if not file.is_file():
            continue
        try:
            records = json.loads(_text(file))
        except json.JSONDecodeError:
            skipped.setdefault(folder.name, "not JSON")
            continue
        classified = (
            isinstance(records, list)
            and bool(records)
            and all(isinstance(r, dict) and "activating" in r and "prediction" in r for r in records)
        )
        if not classified:
            skipped.setdefault(folder.name, "not per-example classifications")
            continue
        scorer = f"import:delphi:{folder.name}"
        details = {"file": str(file), "examples": len(records)}
        for metric, value in delphi_classification_metrics(records).items():
            scores.append(ForeignScore(scorer, f"{scorer}_{metric}", value, model, details))
    return tuple(scores)


def read_delphi(path: Path, skipped: dict[str, str] | None = None) -> Iterator[ForeignExplanation]:
    """Yields the explanations in delphi's explanation files (`<hookpoint>_latent<index>.txt`, a JSON
    string), each with the scores delphi wrote for it; unreadable score files go to `skipped`."""
    skipped = {} if skipped is None else skipped
    files, root = _delphi_layout(path)
    for file in files:
        match = _DELPHI_NAME.match(file.stem)
        if match is None:
            raise ImportFileError(
                f"{file.name} is not a delphi explanation file name: expected <hookpoint>_latent<index>.txt, "
                "e.g. layers.15_latent417.txt"
            )
        hookpoint, index = match.group("module"), int(match.group("index"))
        targets = delphi_targets(hookpoint)
        if targets is None:
            raise ImportFileError(
                f"{file.name}: delphi hookpoint {hookpoint!r} is not one autointerp reads; expected layers.L (the "
                "residual stream after block L) or layers.L.mlp (the MLP's output; a transcoder's MLP input)"
            )
        raw = _text(file).strip()
        try:
            text = json.loads(raw)
        except json.JSONDecodeError:
            text = raw  # a plain-text explanation
        if isinstance(text, dict):
            text = text.get("explanation", "")
        yield ForeignExplanation(
            text.strip() if isinstance(text, str) else "",
            index=index,
            targets=targets,
            named=f"delphi hookpoint {hookpoint}, latent {index}",
            where=str(file),
            scores=read_delphi_scores(root, file.stem, skipped) if root is not None else (),
        )


def _describe_targets(targets: tuple[Target, ...]) -> str:
    return " or ".join(f"{kind or 'any kind'} at {hook or 'any hook'}" for kind, hook in targets)


class _Matcher:
    """Maps a ForeignExplanation to the id of the run's feature it names, or None."""

    def __init__(self, features: list[Feature]) -> None:
        self.ids = {f.id: f for f in features}
        self.hooks = sorted({f.hook for f in features})
        self.by_index: dict[int, list[Feature]] = {}
        for feature in sorted(features, key=lambda f: (f.id.endswith("-"), f.id)):  # + pole first
            self.by_index.setdefault(int(feature.idx), []).append(feature)

    @staticmethod
    def _fits(feature: Feature, targets: tuple[Target, ...]) -> bool:
        return any(
            (kind is None or feature.kind == kind) and (hook is None or feature.hook == hook) for kind, hook in targets
        )

    def __call__(self, item: ForeignExplanation) -> str | None:
        if item.feature_id is not None and item.feature_id in self.ids:
            feature = self.ids[item.feature_id]
            return feature.id if item.targets is None or self._fits(feature, item.targets) else None
        if item.feature_id is not None:
            if not item.feature_id.isdigit():
                return None
            index = int(item.feature_id)
            if item.targets is None and len(self.hooks) != 1:
                return None  # a bare index is ambiguous when the run has several hooks
        else:
            index = int(item.index or 0)
        candidates = [f for f in self.by_index.get(index, []) if item.targets is None or self._fits(f, item.targets)]
        if len({f.hook for f in candidates}) != 1:
            return None
        return candidates[0].id


def _unknown_examples(unknown: list[ForeignExplanation]) -> str:
    first = unknown[0]
    text = f"e.g. {first.reference()}"
    if first.targets is not None:
        index = f", index {first.index}" if first.index is not None else ""
        text += f", which can be {_describe_targets(first.targets)}{index}"
    others = [u.named or str(u.feature_id) for u in unknown[1:3]]
    return text + (f"; also {', '.join(others)}" if others else "")


def _run_summary(features: list[Feature]) -> str:
    kinds = sorted({f"{f.kind} features at {f.hook}" for f in features})
    shown = ", ".join(kinds[:3]) + (f" and {len(kinds) - 3} more hooks" if len(kinds) > 3 else "")
    return f"{len(features)} {shown} (e.g. {features[0].id})"


def import_id(run_id: str, feature_id: str, tool: str, text: str) -> str:
    """Returns the stable row id of an imported explanation (re-importing a file adds nothing)."""
    digest = hashlib.sha256("\x1f".join((run_id, feature_id, tool, text)).encode()).hexdigest()
    return f"import-{digest[:24]}"


def _score_id(explanation_id: str, scorer: str, metric: str) -> str:
    digest = hashlib.sha256("\x1f".join((explanation_id, scorer, metric)).encode()).hexdigest()
    return f"import-score-{digest[:24]}"


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    run_id: str
    read: int
    """Explanations read, placeholders included."""
    added: int
    already_there: int
    """Explanations the run held before this import (the same feature, tool and text)."""
    repeated: int = 0
    """Explanations that repeat an earlier one of the same file (stored once)."""
    refused: int = 0
    """Placeholders refused: empty texts and parse-failure texts."""
    scores_added: int = 0
    skipped_scores: dict[str, str] = field(default_factory=dict)
    """The other tool's scorers whose files were not read -> why."""


def import_explanations(store: Store, run_id: str, tool: str, path: Path) -> ImportResult:
    """Adds the explanations in `path` (written by `tool`) to the run as `import:<tool>` explanations,
    with the tool's scores where it wrote them, all in one transaction after every item is matched;
    raises an ImportFileError (nothing added) when any names a feature the run does not have."""
    if tool not in IMPORT_TOOLS:
        raise ImportFileError(f"unknown import format {tool!r}; choose one of {', '.join(IMPORT_TOOLS)}")
    features = store.features(run_id)
    if not features:
        raise ImportFileError(f"run {run_id} has no collected features; run `autointerp run` first, then import")
    source = Path(path).expanduser()
    skipped: dict[str, str] = {}
    if tool == "csv":
        read = list(read_csv(source))
    elif tool == "neuron-explainer":
        read = list(read_neuron_explainer(source))
    else:
        read = list(read_delphi(source, skipped))
    items = [item for item in read if not is_placeholder(item.text)]
    refused = len(read) - len(items)
    if not items:
        detail = f" (placeholders refused: {refused}, empty or 'Explanation could not be parsed.')" if refused else ""
        raise ImportFileError(f"{path} holds no {tool} explanations{detail}; nothing imported")
    match = _Matcher(features)
    matched = [(item, match(item)) for item in items]
    unknown = [item for item, feature_id in matched if feature_id is None]
    if unknown:
        raise ImportFileError(
            f"{len(unknown)} of {len(items)} explanations in {path} name features that run {run_id} does not have "
            f"({_unknown_examples(unknown)}); nothing imported. The run has {_run_summary(features)}"
        )
    existing = store.explanation_ids(run_id)
    existing_scores = store.score_keys(run_id)
    rows, seen, added, scores_added, repeated = Rows(), set(existing), 0, 0, 0
    for item, feature_id in matched:
        assert feature_id is not None
        row_id = import_id(run_id, feature_id, tool, item.text)
        repeated += row_id in seen and row_id not in existing
        if row_id not in seen:
            seen.add(row_id)
            added += 1
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
        for score in item.scores:
            key = (row_id, score.scorer, score.metric)
            if key in existing_scores:
                continue
            existing_scores.add(key)
            scores_added += 1
            rows.add(
                Score(
                    run_id=run_id,
                    explanation_id=row_id,
                    scorer=score.scorer,
                    scorer_model=score.scorer_model,
                    metric=score.metric,
                    value=score.value,
                    details=dict(score.details),
                    id=_score_id(row_id, score.scorer, score.metric),
                )
            )
    if len(rows):
        store.write_results(rows)
    return ImportResult(
        run_id=run_id,
        read=len(read),
        added=added,
        already_there=len(items) - added - repeated,
        repeated=repeated,
        refused=refused,
        scores_added=scores_added,
        skipped_scores=skipped,
    )
