"""A collection's exemplars as one Arrow table, built column by column.

Per-row dicts cost 15 us each to turn into Arrow (`pa.Table.from_pylist` walks every token and activation as a
Python object), more than the store's write of the same rows. Here each distinct window's token ids and strings
are built once and taken for every exemplar that kept it, activations go through numpy once, and the strings come
from one array of the distinct tokens' text.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from autointerp.collect.results import Exemplar
from autointerp.corpus.sources import Window


def _list_array(lengths: np.ndarray, values: pa.Array) -> pa.ListArray:
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _windows(exemplars: Sequence[Exemplar]) -> tuple[list[Window], pa.Array]:
    """Returns the distinct windows (by object) and, per exemplar, its window's position among them."""
    seen: dict[int, int] = {}
    windows: list[Window] = []
    positions = np.empty(len(exemplars), np.int64)
    for row, exemplar in enumerate(exemplars):
        at = seen.get(id(exemplar.window))
        if at is None:
            at = seen[id(exemplar.window)] = len(windows)
            windows.append(exemplar.window)
        positions[row] = at
    return windows, pa.array(positions)


def _window_tokens(windows: list[Window], decode: Callable[[list[int]], list[str]]) -> tuple[pa.Array, pa.Array]:
    """Returns the windows' token ids and token strings as list arrays, one row per window."""
    lengths = np.fromiter((len(w.token_ids) for w in windows), np.int64, len(windows))
    ids = np.fromiter(itertools.chain.from_iterable(w.token_ids for w in windows), np.int64, int(lengths.sum()))
    distinct, position = np.unique(ids, return_inverse=True)
    text = pa.array(decode([int(t) for t in distinct]), pa.string())
    strings = text.take(pa.array(position.reshape(-1)))
    return _list_array(lengths, pa.array(ids)), _list_array(lengths, strings)  # int64: the store checks the range


ROWS_PER_BATCH = 262_144
"""Exemplars per Arrow record batch: a batch's token text stays far below the 2 GiB a string array can hold."""


def exemplar_table(
    run_id: str, feature_ids: Sequence[str], exemplars: Sequence[Exemplar], decode: Callable[[list[int]], list[str]]
) -> pa.Table:
    """Returns the rows of `exemplars` with the columns of the store's `exemplars`, in record batches of
    `ROWS_PER_BATCH` (`feature_ids` by feature index; `decode` gives the text of a list of token ids, and is asked
    once for each distinct id)."""
    text: dict[int, str] = {}

    def decode_once(token_ids: list[int]) -> list[str]:
        new = [t for t in token_ids if t not in text]
        text.update(zip(new, decode(new), strict=True))
        return [text[t] for t in token_ids]

    batches = range(0, max(len(exemplars), 1), ROWS_PER_BATCH)
    return pa.concat_tables(
        _batch(run_id, feature_ids, exemplars[first : first + ROWS_PER_BATCH], decode_once) for first in batches
    )


def _batch(
    run_id: str, feature_ids: Sequence[str], exemplars: Sequence[Exemplar], decode: Callable[[list[int]], list[str]]
) -> pa.Table:
    windows, position = _windows(exemplars)
    token_ids, tokens = _window_tokens(windows, decode)
    lengths = np.fromiter((len(e.activations) for e in exemplars), np.int64, len(exemplars))
    activations = np.fromiter(
        itertools.chain.from_iterable(e.activations for e in exemplars), np.float32, int(lengths.sum())
    )
    if len(exemplars) and lengths.min() > 0:
        starts = np.concatenate([[0], np.cumsum(lengths[:-1])])
        maxima = pa.array(np.maximum.reduceat(activations, starts))
    else:
        maxima = pa.array([e.max_activation for e in exemplars], pa.float32())
    return pa.table(
        {
            "run_id": pa.array([run_id] * len(exemplars), pa.string()),
            "feature_id": pa.array([feature_ids[e.feature_index] for e in exemplars], pa.string()),
            "kind": pa.array([e.kind for e in exemplars], pa.string()),
            "rank": pa.array([e.rank for e in exemplars], pa.int32()),
            "doc_id": pa.array([w.doc_id for w in windows], pa.int64()).take(position),
            "token_offset": pa.array([w.offset for w in windows], pa.int64()).take(position),
            "token_ids": token_ids.take(position),
            "tokens": tokens.take(position),
            "activations": _list_array(lengths, pa.array(activations)),
            "max_activation": maxima,
            "split": pa.array([e.split for e in exemplars], pa.string()),
        }
    )
