"""Text sources -> fixed-length token windows, streamed (a large file is never read whole)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from autointerp.corpus_datasets import (
    CHECKED_TOKEN_IDS,
    Document,
    check_token_ids,
    dataset_documents,
    is_dataset_source,
)
from autointerp.errors import CorpusError

log = logging.getLogger(__name__)

BUILTIN_PYTHON_DOCS = "builtin:python-docs"
_MAX_DOCUMENT_CHARS = 20_000  # a file with no blank lines is cut into documents of this size


@dataclass(frozen=True)
class Window:
    """A run of `window_tokens` consecutive tokens from one document."""

    doc_id: int
    offset: int
    token_ids: list[int]


@dataclass
class CorpusStats:
    """Counts of what the corpus reader saw, skipped and repaired."""

    documents: int = 0
    empty_documents: int = 0
    short_documents: int = 0
    lines_with_invalid_utf8: int = 0
    lines: int = 0
    windows: int = 0
    notes: list[str] = field(default_factory=list)


def _builtin_python_docs() -> Iterator[str]:
    """Yields the Python documentation topics shipped with the standard library (English prose)."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def _text_file_documents(path: Path, stats: CorpusStats) -> Iterator[str]:
    """Yields blank-line-separated documents from a text file, decoding bytes line by line."""
    lines: list[str] = []
    size = 0
    with path.open("rb") as handle:
        for raw in handle:
            stats.lines += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                stats.lines_with_invalid_utf8 += 1
                line = raw.decode("utf-8", errors="replace")
            if line.strip():
                lines.append(line)
                size += len(line)
                if size < _MAX_DOCUMENT_CHARS:
                    continue
            if lines:
                yield "".join(lines)
                lines, size = [], 0
    if lines:
        yield "".join(lines)


def _jsonl_documents(path: Path, text_field: str, stats: CorpusStats) -> Iterator[str]:
    """Yields the `text_field` of each JSON line; a record without it is an error."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            stats.lines += 1
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8", errors="strict"))
            except UnicodeDecodeError:
                stats.lines_with_invalid_utf8 += 1
                record = json.loads(raw.decode("utf-8", errors="replace"))
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{number} is not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or text_field not in record:
                raise CorpusError(f"{path}:{number} has no '{text_field}' field; set corpus.text_field")
            yield str(record[text_field])


def iter_documents(source: str, text_field: str, stats: CorpusStats) -> Iterator[Document]:
    """Yields the documents of a corpus source (builtin name, .txt or .jsonl path, or a dataset:
    `hf:NAME[:CONFIG][@SPLIT]`, a save_to_disk folder, .parquet / .csv / .arrow; see corpus_datasets):
    text, or the token ids of a pre-tokenised dataset."""
    if source == BUILTIN_PYTHON_DOCS:
        yield from _builtin_python_docs()
        return
    if is_dataset_source(source):
        yield from dataset_documents(source, text_field)
        return
    if source.startswith("builtin:"):
        raise CorpusError(f"unknown builtin corpus {source!r}; the builtin corpus is {BUILTIN_PYTHON_DOCS!r}")
    path = Path(source).expanduser()
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist")
    if path.suffix == ".jsonl":
        yield from _jsonl_documents(path, text_field, stats)
    else:
        yield from _text_file_documents(path, stats)


def _check_mostly_utf8(source: str, stats: CorpusStats, minimum_lines: int) -> None:
    """Raises CorpusError once more than half of the lines read so far had invalid UTF-8."""
    if stats.lines >= minimum_lines and stats.lines_with_invalid_utf8 * 2 > stats.lines:
        raise CorpusError(
            f"corpus {source} is not UTF-8 text ({stats.lines_with_invalid_utf8} of {stats.lines} lines "
            "have invalid bytes); convert it, e.g. iconv -f latin1 -t utf-8"
        )


def iter_windows(
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    *,
    window_tokens: int,
    max_windows: int,
    text_field: str = "text",
    stats: CorpusStats | None = None,
) -> Iterator[Window]:
    """Yields up to `max_windows` windows; raises CorpusError if the corpus yields none."""
    stats = stats if stats is not None else CorpusStats()
    checked_ids = 0  # pre-tokenised corpora: ids checked against the tokenizer so far
    for doc_id, text in enumerate(iter_documents(source, text_field, stats)):
        stats.documents += 1
        _check_mostly_utf8(source, stats, minimum_lines=20)
        if not (text.strip() if isinstance(text, str) else text):
            stats.empty_documents += 1
            continue
        if isinstance(text, list):  # a pre-tokenised corpus: its ids are used as they are
            if checked_ids < CHECKED_TOKEN_IDS:
                check_token_ids(tokenizer, text, source)
                checked_ids += len(text)
            token_ids = text
        else:
            token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(token_ids) < window_tokens:
            stats.short_documents += 1
            continue
        for offset in range(0, len(token_ids) - window_tokens + 1, window_tokens):
            yield Window(doc_id=doc_id, offset=offset, token_ids=token_ids[offset : offset + window_tokens])
            stats.windows += 1
            if stats.windows >= max_windows:
                return
    _check_mostly_utf8(source, stats, minimum_lines=1)
    if stats.windows == 0:
        raise CorpusError(
            f"corpus {source} produced no windows of {window_tokens} tokens: it is empty or every "
            "document is shorter than corpus.window_tokens"
        )
    if stats.lines_with_invalid_utf8:
        log.warning("%d lines of %s had invalid UTF-8 bytes (replaced)", stats.lines_with_invalid_utf8, source)
