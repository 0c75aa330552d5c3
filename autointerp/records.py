"""Typed records for what the pipeline writes, and the one place that maps each to its table.

Stages build `Explanation`, `Score`, `Experiment` and `LLMCall` records; `Rows` groups them by
table so a feature's work (its rows with all its calls) is written in one transaction. Reads
still come back as row dicts; `record_from_row` turns one into its record where a stage needs it.
Torch-free: the CLI and the review app import it without loading a model.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar


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
        row = asdict(self)
        for name in self.JSON_FIELDS:
            if row[name] is not None and not isinstance(row[name], str):
                row[name] = json.dumps(row[name])
        return row


@dataclass
class Explanation(Record):
    """One explanation of a feature: a first one (iteration 0) or a revision of `parent_id`."""

    TABLE: ClassVar[str] = "explanations"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("details",)
    run_id: str
    feature_id: str
    text: str
    explainer: str
    """`backend:model` that wrote it."""
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
