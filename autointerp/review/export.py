"""Reviewed explanations as JSONL, CSV or Parquet bytes."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from autointerp.errors import AutointerpError
from autointerp.review.queries import ReviewQueries
from autointerp.store.database import Store

EXPORT_FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8", "parquet": "application/x-parquet"}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


def export_reviews(store: Store, fmt: str) -> bytes:
    """Returns every reviewed explanation (latest verdict, final text) in `fmt`: jsonl, csv or parquet."""
    if fmt not in EXPORT_FORMATS:
        raise AutointerpError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    rows = ReviewQueries(store).reviewed_explanations()
    if fmt == "jsonl":
        return "".join(json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in rows).encode()
    table = pa.Table.from_pylist(rows) if rows else pa.table({"feature_id": pa.array([], pa.string())})
    sink = io.BytesIO()
    if fmt == "csv":
        pa_csv.write_csv(table, sink)
    else:
        pq.write_table(table, sink)
    return sink.getvalue()
