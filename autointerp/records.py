"""Typed records for what the pipeline reads and writes, and the one place that maps each to its table.

The store hands back `Feature` and `Exemplar` records (`Store.features`, `Store.exemplars`, ...), so
code outside the store needs no column name. Stages build `Explanation`,
`Score`, `Experiment` and `LLMCall` records; `Rows` groups them by table so a feature's work (its rows
with all its calls) is written in one transaction; `record_from_row` turns a row dict into its record.
Torch-free: the CLI and the review app import it without loading a model.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar


def now() -> datetime:
    """Returns the current UTC time (what every created_at holds)."""
    return datetime.now(UTC)


def new_id() -> str:
    """Returns a fresh random row id."""
    return str(uuid.uuid4())


@dataclass
class Record:
    """Base of every stored record: knows its table and which fields are stored as JSON."""

    TABLE: ClassVar[str]
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_row(self) -> dict[str, Any]:
        """Returns the record as a row of its table (JSON fields serialised)."""
        row = flat_row(self)
        for name in self.JSON_FIELDS:
            if row[name] is not None and not isinstance(row[name], str):
                row[name] = json.dumps(row[name], default=_json_default)
        return row


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(kind: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(kind))
    return names


def flat_row(record: Any) -> dict[str, Any]:
    """Returns a dataclass record's fields as a dict, list values copied: what `asdict` returns for the flat
    records of this module, without its deep copy of every value (a call record's whole prompt, a score's
    per-window details), which cost more client CPU than the call itself at 64 calls in flight."""
    return {
        name: list(value) if isinstance(value, list) else value
        for name in _field_names(type(record))
        for value in (getattr(record, name),)
    }


def stored_json(value: Any) -> Any:
    """Returns a JSON column's value decoded where it is JSON text (as DuckDB hands it back), the value itself
    where it is not text (already decoded, or None), and None where the text is not JSON."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        return None


def _json_default(value: Any) -> Any:
    """Returns a dataclass found inside a JSON field as a dict (what `asdict` made of it before)."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _known_fields(kind: type[Any], row: dict[str, Any]) -> dict[str, Any]:
    """Returns the values of `row` that are fields of the dataclass `kind` (other columns dropped)."""
    return {f.name: row[f.name] for f in fields(kind) if f.name in row}


@dataclass(frozen=True)
class Feature:
    """One feature of a run (a row of `features`): what it is, and what collection measured on it."""

    TABLE: ClassVar[str] = "features"
    run_id: str
    id: str
    """Stable id, e.g. `smollm2-135m/mlp.15/417` (a signed pole ends in `+` or `-`)."""
    model: str
    hook: str
    """Hook point, e.g. `mlp.15`."""
    kind: str
    """What is stored: neuron, sae, direction, planted, ..."""
    idx: int
    """Index of the feature at its hook."""
    max_activation: float
    mean_activation: float = 0.0
    density: float = 0.0
    """Fraction of tokens on which it fires."""
    tokens: int = 0
    """Tokens the statistics were measured over."""
    dead: bool = False
    window_max_histogram: list[int] | None = None
    """Counts of window maxima per `autointerp.collect.sampler.HISTOGRAM_EDGES` bin."""
    firing_windows: int | None = None
    """Firing (top) windows kept; None in rows written before it was counted."""
    nonfiring_windows: int | None = None
    skip_reason: str | None = None
    """Why it is left out of explaining and scoring; None: it is not."""

    @property
    def live(self) -> bool:
        """True when the feature is explained and scored: not dead and not skipped."""
        return not self.dead and self.skip_reason is None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        """Returns the feature held in a row of `features` (unknown columns ignored)."""
        return cls(**_known_fields(cls, row))

    def to_row(self) -> dict[str, Any]:
        """Returns the feature as a row of `features`."""
        return flat_row(self)


@dataclass(frozen=True)
class Exemplar:
    """One window kept for a feature (a row of `exemplars`): its tokens and the feature's activation on each."""

    TABLE: ClassVar[str] = "exemplars"
    run_id: str
    feature_id: str
    kind: str
    """top, quantile-k or random (non-activating)."""
    rank: int
    doc_id: int
    token_offset: int
    token_ids: list[int]
    tokens: list[str]
    """Decoded tokens, one per id."""
    activations: list[float]
    max_activation: float
    split: str
    """explain or score (held out)."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        """Returns the exemplar held in a row of `exemplars` (unknown columns ignored)."""
        return cls(**_known_fields(cls, row))

    def to_row(self) -> dict[str, Any]:
        """Returns the exemplar as a row of `exemplars`."""
        return flat_row(self)


@dataclass
class Explanation(Record):
    """One explanation of a feature: a first one (iteration 0) or a revision of `parent_id`."""

    TABLE: ClassVar[str] = "explanations"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("details",)
    run_id: str
    feature_id: str
    text: str
    explainer: str
    """`backend:model` that wrote it (the stage's explainer also where `details.best_of` shows the kept
    candidate is the list of the strongest tokens, `explainer.top_tokens_candidate`)."""
    prompt_hash: str
    llm_call_id: str | None
    iteration: int = 0
    parent_id: str | None = None
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=now)
    details: dict[str, Any] | None = None
    """How it was chosen, when more than one was written: `{"best_of": {...}}` (see `explain_select`)."""


@dataclass
class Score(Record):
    """One metric of one scorer on one explanation (NULL value: the reason is in `details.undefined`)."""

    TABLE: ClassVar[str] = "scores"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("details",)
    run_id: str
    explanation_id: str
    scorer: str
    scorer_model: str
    metric: str
    value: float | None
    details: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=now)


@dataclass
class FeatureScore(Record):
    """One metric of an explanation-free scorer (the intruder test) on one feature (NULL value: the reason is
    in `details.undefined`)."""

    TABLE: ClassVar[str] = "feature_scores"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("details",)
    run_id: str
    feature_id: str
    scorer: str
    scorer_model: str
    metric: str
    value: float | None
    details: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=now)


@dataclass
class Experiment(Record):
    """One experiment on an explanation: what was done, predicted and measured, and the verdict."""

    TABLE: ClassVar[str] = "experiments"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("spec", "predicted", "measured")
    run_id: str
    explanation_id: str
    kind: str
    spec: dict[str, Any]
    predicted: dict[str, Any]
    measured: dict[str, Any]
    verdict: str
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=now)


@dataclass
class LLMCall(Record):
    """One call to a language model (or one forward pass standing for one), never with a key in it."""

    TABLE: ClassVar[str] = "llm_calls"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("request",)
    run_id: str
    role: str
    backend: str
    model: str
    prompt_hash: str
    request: dict[str, Any]
    response: str | None
    feature_id: str | None = None
    explanation_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost: float = 0.0
    error: str | None = None
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=now)


R = TypeVar("R", bound=Record)


class Rows:
    """Records grouped by table, in the order they were added: what one transaction writes."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records: list[Record] = list(records)

    def add(self, record: R) -> R:
        """Adds one record; returns it."""
        self._records.append(record)
        return record

    def extend(self, records: Iterable[Record]) -> None:
        """Adds several records."""
        self._records.extend(records)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def of(self, kind: type[R]) -> list[R]:
        """Returns the records of one type."""
        return [r for r in self._records if isinstance(r, kind)]

    def by_table(self) -> dict[str, list[dict[str, Any]]]:
        """Returns table -> rows, for `Store.write_results`."""
        tables: dict[str, list[dict[str, Any]]] = {}
        for record in self._records:
            tables.setdefault(record.TABLE, []).append(record.to_row())
        return tables


def record_from_row(kind: type[R], row: dict[str, Any]) -> R:
    """Returns the record of `kind` held in a row dict read from its table (JSON fields parsed)."""
    values = {f.name: row.get(f.name) for f in fields(kind) if f.name in row}
    for name in kind.JSON_FIELDS:
        raw = values.get(name)
        if isinstance(raw, str):
            values[name] = json.loads(raw)
    return kind(**values)
