"""Corpora from tables: Hugging Face datasets (`hf:NAME[:CONFIG][@SPLIT]`), folders written by
`Dataset.save_to_disk`, Arrow files, and Parquet / CSV files (read by DuckDB, streamed in batches).

Each record's `text_field` column is one document. A column of strings is tokenised as usual; a
column of integer lists is a pre-tokenised corpus: its token ids are used as they are, after a
check that they fit the subject's tokenizer (`check_token_ids`).

Nothing here downloads unless the hub is reachable: a `hf:` name streams from the hub when it is,
and is read from the local datasets cache when it is not (`HF_HUB_OFFLINE=1`); a name in neither
place is one line saying how to make it available.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from autointerp.errors import CorpusError

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"
TABLE_SUFFIXES = (".parquet", ".csv", ".arrow")
_DATASET_FOLDER_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")
_BATCH_ROWS = 256
CHECKED_TOKEN_IDS = 256
"""A pre-tokenised corpus's documents are checked (`check_token_ids`) until this many ids were."""
_MIN_ROUND_TRIP = 0.98
"""Least share of a pre-tokenised document's ids (its first 256) that must survive decode -> re-encode
with the subject's tokenizer. Its own ids come back unchanged but for a cut word at the ends; another
tokenizer's ids mostly decode to text this tokenizer splits differently (measured with SmolLM2's on
Python documentation: ids shifted by 1, 100, 7919 or 20000 and a random permutation of the
vocabulary kept 80-97 %). A check, not a proof: a tokenizer with a normalizer may need its text column."""

Document = str | list[int]
"""A document: text, or the token ids of a pre-tokenised corpus."""


def is_dataset_source(source: str) -> bool:
    """True when `source` names a dataset, a saved dataset folder, or a Parquet / CSV / Arrow file."""
    if source.startswith(HF_PREFIX):
        return True
    path = Path(source).expanduser()
    if path.suffix in TABLE_SUFFIXES:
        return True
    return path.is_dir() and any((path / name).is_file() for name in _DATASET_FOLDER_FILES)


def parse_hf_source(source: str) -> tuple[str, str | None, str]:
    """Returns (name, config or None, split) of `hf:NAME[:CONFIG][@SPLIT]` (split defaults to train)."""
    spec = source.removeprefix(HF_PREFIX)
    spec, _, split = spec.partition("@")
    name, _, config = spec.partition(":")
    if not name:
        raise CorpusError(f"corpus source {source!r} names no dataset; write hf:NAME[:CONFIG][@SPLIT]")
    return name, config or None, split or "train"


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@contextmanager
def _quiet_hub_requests() -> Iterator[None]:
    """Keeps huggingface_hub's warning about each failed request off the terminal: a dataset that cannot be
    reached ends in one error line that says why (`_hf_rows`)."""
    hub_http = logging.getLogger("huggingface_hub.utils._http")
    level = hub_http.level
    hub_http.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_http.setLevel(level)


def _hf_rows(source: str) -> tuple[Iterable[dict[str, Any]], list[str]]:
    """Returns the rows and column names of a `hf:` source: streamed from the hub, or from the cache offline."""
    import datasets

    name, config, split = parse_hf_source(source)
    attempts = [False] if _offline() else [True, False]
    error: Exception | None = None
    for streaming in attempts:
        try:
            with _quiet_hub_requests():
                data = datasets.load_dataset(name, config, split=split, streaming=streaming)
        except (ConnectionError, FileNotFoundError, OSError) as exc:
            error = exc
            continue
        except ValueError as exc:  # an unknown split or config
            raise CorpusError(f"dataset {name!r}: {str(exc).splitlines()[0]}") from None
        return data, list(data.column_names or [])
    where = "the hub is not reachable (offline)" if _offline() else "it could not be read"
    detail = str(error).splitlines()[0] if error else ""
    raise CorpusError(
        f"dataset {name!r} is not in the local datasets cache and {where} ({detail}); make it available with "
        f"`datasets.load_dataset({name!r}{', ' + repr(config) if config else ''}, split={split!r})` on a "
        "machine that reaches the hub (same HF_HOME), or save it with Dataset.save_to_disk and set corpus.source "
        "to that folder"
    )


def _disk_rows(path: Path) -> tuple[Iterable[dict[str, Any]], list[str]]:
    """Returns the rows and columns of a `save_to_disk` folder or an Arrow file (memory-mapped)."""
    import datasets

    try:
        data: Any = (
            datasets.Dataset.from_file(str(path)) if path.suffix == ".arrow" else datasets.load_from_disk(str(path))
        )
    except (OSError, ValueError) as exc:
        raise CorpusError(f"cannot read dataset {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(data, datasets.DatasetDict):
        splits = list(data)
        split = "train" if "train" in data else splits[0] if len(splits) == 1 else None
        if split is None:
            raise CorpusError(f"dataset {path} has splits {', '.join(splits)} and none is 'train'; save one split")
        data = data[split]
    return data, list(data.column_names)


def _duckdb_rows(path: Path, text_field: str) -> tuple[Iterator[dict[str, Any]], list[str]]:
    """Returns the `text_field` values of a Parquet or CSV file, streamed in batches by DuckDB, and its columns."""
    import duckdb

    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv_auto"
    con = duckdb.connect()
    try:
        columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {reader}(?)", [str(path)]).fetchall()]
    except duckdb.Error as exc:
        con.close()
        raise CorpusError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None

    def rows() -> Iterator[dict[str, Any]]:
        try:
            if text_field not in columns:
                yield {}  # dataset_documents names the columns that exist
                return
            quoted = '"' + text_field.replace('"', '""') + '"'
            cursor = con.execute(f"SELECT {quoted} FROM {reader}(?)", [str(path)])
            while batch := cursor.fetchmany(_BATCH_ROWS):
                for (value,) in batch:
                    yield {text_field: value}
        finally:
            con.close()

    return rows(), columns


def dataset_documents(source: str, text_field: str) -> Iterator[Document]:
    """Yields the documents of a dataset source: the text, or the token ids, in column `text_field`.

    Raises CorpusError naming the columns that exist when `text_field` is not one of them.
    """
    path = Path(source).expanduser()
    if source.startswith(HF_PREFIX):
        rows, columns = _hf_rows(source)
    elif not path.exists():
        raise CorpusError(f"corpus file {path} does not exist")
    elif path.suffix in (".parquet", ".csv"):
        rows, columns = _duckdb_rows(path, text_field)
    else:
        rows, columns = _disk_rows(path)
    for number, row in enumerate(rows):
        if number == 0 and not columns:  # a streamed dataset may name its columns only in its rows
            columns = list(row)
        if text_field not in columns:
            raise CorpusError(
                f"corpus {source} has no column {text_field!r}; its columns are {', '.join(columns)}: "
                "set corpus.text_field"
            )
        value = row.get(text_field)
        if value is None:
            yield ""
        elif isinstance(value, str):
            yield value
        elif isinstance(value, list | tuple) and all(isinstance(t, int) for t in value):
            yield [int(t) for t in value]
        elif hasattr(value, "tolist"):  # numpy arrays from some readers
            yield [int(t) for t in value.tolist()]
        else:
            raise CorpusError(
                f"corpus {source}: column {text_field!r} holds {type(value).__name__} values; it must hold text "
                "or lists of token ids"
            )


def check_token_ids(tokenizer: PreTrainedTokenizerBase, token_ids: list[int], source: str) -> None:
    """Raises CorpusError when a pre-tokenised document does not fit the subject's tokenizer: an id
    outside its vocabulary, or ids that do not survive decoding and re-encoding (another tokenizer's)."""
    vocabulary = len(tokenizer)
    smallest, largest = min(token_ids, default=0), max(token_ids, default=0)
    if smallest < 0:
        raise CorpusError(f"corpus {source} holds token id {smallest}; token ids are never negative")
    if largest >= vocabulary:
        raise CorpusError(
            f"corpus {source} holds token id {largest} but the subject's tokenizer has {vocabulary} tokens: it was "
            "tokenised for another model; use its text column instead"
        )
    sample = token_ids[:256]
    again = tokenizer(tokenizer.decode(sample), add_special_tokens=False)["input_ids"]
    agreement = difflib.SequenceMatcher(a=sample, b=again, autojunk=False).ratio()
    if agreement < _MIN_ROUND_TRIP:
        raise CorpusError(
            f"corpus {source} was not tokenised with the subject's tokenizer (only {agreement:.0%} of a document's "
            "ids survive decoding and re-encoding); use its text column instead"
        )
