"""Text sources -> fixed-length token windows, streamed (a large file is never read whole).

A text file is read in pieces of at most `READ_BYTES` bytes, so a file with very long lines (or one
line of many megabytes) is read, decoded and tokenized in bounded pieces: a line longer than
`_MAX_DOCUMENT_CHARS` is cut into several documents (a cut may fall inside a word). A JSONL record
must be parsed whole; a line over `MAX_JSONL_LINE_BYTES` is an error.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from transformers import PreTrainedTokenizerBase

from autointerp.config import CorpusConfig
from autointerp.corpus.datasets import (
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
READ_BYTES = 16_384
"""Most bytes read from a text file at once (a longer line arrives in several pieces)."""
MAX_JSONL_LINE_BYTES = 32 * 1024 * 1024
"""Longest JSONL record read; a longer line is an error rather than a memory spike."""


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
    records_not_text: dict[str, int] = field(default_factory=dict)
    """JSONL records dropped because their text field is not a string (null, a number, ...), by JSON type."""
    notes: list[str] = field(default_factory=list)

    def not_text_kinds(self) -> str:
        """Returns e.g. `10 null, 2 number`: the dropped records by JSON type, most first."""
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.records_not_text.items(), key=lambda kv: -kv[1]))

    def not_text_summary(self) -> str:
        """Returns e.g. `12 records whose text is not a string (10 null, 2 number)`, or '' when none."""
        total = sum(self.records_not_text.values())
        if not total:
            return ""
        return f"{total} record{'s' if total != 1 else ''} whose text is not a string ({self.not_text_kinds()})"


def _builtin_python_docs() -> Iterator[str]:
    """Yields the Python documentation topics shipped with the standard library (English prose)."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def _complete_utf8_length(data: bytes) -> int:
    """Returns the length of `data` without a trailing incomplete UTF-8 sequence (kept for the next piece)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead byte
            continue
        if byte < 0x80:
            need = 1
        elif byte >> 5 == 0b110:
            need = 2
        elif byte >> 4 == 0b1110:
            need = 3
        elif byte >> 3 == 0b11110:
            need = 4
        else:
            return len(data)  # not a lead byte: invalid, decoded with a replacement
        return len(data) if need <= back else len(data) - back
    return len(data)


def read_line_pieces(handle: BinaryIO, stats: CorpusStats, piece_bytes: int = READ_BYTES) -> Iterator[tuple[str, bool]]:
    """Yields (text, ends_line) pieces of at most `piece_bytes` bytes each from a binary file, decoded
    as UTF-8 (invalid bytes replaced and counted once per line); a UTF-8 character is never split."""
    carry = b""
    line_invalid = mid_line = False
    while True:
        raw = handle.readline(piece_bytes)
        if not raw and not carry:
            stats.lines += mid_line  # a last line without a newline
            return
        data = carry + raw
        ends_line = data.endswith(b"\n") or not raw
        cut = len(data) if ends_line else _complete_utf8_length(data)
        piece, carry = data[:cut], data[cut:]
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError:
            text = piece.decode("utf-8", errors="replace")
            if not line_invalid:
                stats.lines_with_invalid_utf8 += 1
            line_invalid = True
        if ends_line:
            stats.lines += 1
        line_invalid = line_invalid and not ends_line
        mid_line = not ends_line
        yield text, ends_line
        if not raw:
            return


def _text_file_documents(path: Path, stats: CorpusStats) -> Iterator[str]:
    """Yields blank-line-separated documents from a text file, read in bounded pieces; a document grows
    to at most about `_MAX_DOCUMENT_CHARS` characters (a long line is split)."""
    pieces: list[str] = []
    size = 0
    line_start = True
    with path.open("rb") as handle:
        for text, ends_line in read_line_pieces(handle, stats):
            blank_line = line_start and ends_line and not text.strip()
            line_start = ends_line
            if not blank_line:
                pieces.append(text)
                size += len(text)
                if size < _MAX_DOCUMENT_CHARS:
                    continue
            if pieces:
                yield "".join(pieces)
                pieces, size = [], 0
    if pieces:
        yield "".join(pieces)


_JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number", list: "list", dict: "object"}


def _jsonl_documents(path: Path, text_field: str, stats: CorpusStats) -> Iterator[Document]:
    """Yields the `text_field` of each JSON line (a list of ints: token ids); a record without it is an
    error, a record whose value is not a string (null, a number) is dropped and counted in `stats`."""
    with path.open("rb") as handle:
        for number in itertools.count(1):
            raw = handle.readline(MAX_JSONL_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_JSONL_LINE_BYTES:
                raise CorpusError(
                    f"{path}:{number} is longer than {MAX_JSONL_LINE_BYTES // 2**20} MiB; split the record, "
                    "or use a .txt file (read in pieces)"
                )
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
            value = record[text_field]
            if isinstance(value, str):
                yield value
            elif isinstance(value, list) and value and all(type(t) is int for t in value):
                yield value  # a pre-tokenised record: token ids, checked against the tokenizer
            else:
                kind = _JSON_TYPES.get(type(value), type(value).__name__)
                stats.records_not_text[kind] = stats.records_not_text.get(kind, 0) + 1


def corpus_path(source: str) -> Path:
    """Returns the file a corpus source names; raises CorpusError when it is missing, a folder or
    not a readable file."""
    path = Path(source).expanduser()
    if path.is_dir():
        raise CorpusError(
            f"corpus {path} is a folder; give one .txt or .jsonl file (join the files first, "
            f"e.g. cat {path}/*.txt > corpus.txt)"
        )
    if not path.exists():
        raise CorpusError(f"corpus file {path} does not exist")
    if not path.is_file():
        raise CorpusError(f"corpus {path} is not a regular file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None
    return path


SNIFF_BYTES = 65_536
"""Bytes read from the start of a text or JSONL corpus to tell a binary file from text."""
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"%PDF-", "PDF document"),
    (b"PK\x03\x04", "ZIP archive (also .docx, .xlsx, .epub)"),
    (b"\x1f\x8b", "gzip-compressed file"),
    (b"BZh", "bzip2-compressed file"),
    (b"\xfd7zXZ\x00", "xz-compressed file"),
    (b"(\xb5/\xfd", "zstd-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"\x7fELF", "executable (ELF)"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"PAR1", "Parquet file (name it .parquet)"),
    (b"ARROW1", "Arrow file (name it .arrow)"),
    (b"\x93NUMPY", "NumPy array"),
    (b"RIFF", "RIFF media file (WAV / AVI / WebP)"),
    (b"OggS", "Ogg media file"),
    (b"ID3", "MP3 audio"),
    (b"\x00\x00\x01\x00", "icon (ICO) image"),
)
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\x1b\x08")
"""Control bytes that plain text may hold (tab, newlines, form feed, escape, backspace)."""


def binary_kind(head: bytes) -> str | None:
    """Returns what the first bytes of a file say it is when it is not text (e.g. `PNG image`, `file of
    NUL bytes`), or None for text. UTF-16 with a byte-order mark is named as such (it needs converting)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] in (b"ftyp",):
        return "MP4 / QuickTime media file"
    if head[257:262] == b"ustar":
        return "tar archive"
    if head[8:12] == b"DUCK":
        return "DuckDB database"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text (convert it: iconv -f utf-16 -t utf-8)"
    if not head:
        return None
    nuls = head.count(0)
    if nuls == len(head):
        return "file of NUL bytes"
    controls = sum(1 for byte in head if byte < 0x20 and byte not in _TEXT_CONTROLS) + head.count(0x7F)
    if nuls or controls * 20 > len(head):  # text holds no NUL; a few stray control bytes are tolerated
        share = (nuls + controls) / len(head)
        return f"binary file ({share:.0%} of its first {len(head):,} bytes are NUL or control bytes)"
    return None


def check_text_file(path: Path) -> None:
    """Raises CorpusError when the start of a .txt / .jsonl corpus is a binary file (an image, an
    archive, NUL bytes) rather than text; returns None otherwise."""
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None
    kind = binary_kind(head)
    if kind is not None and kind.startswith("UTF-16"):
        raise CorpusError(f"corpus {path} is UTF-16 text; convert it to UTF-8, e.g. iconv -f utf-16 -t utf-8")
    if kind is not None:
        raise CorpusError(f"corpus {path} is a {kind}, not text; give a .txt or .jsonl file of text")


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
    path = corpus_path(source)
    check_text_file(path)
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


def corpus_windows(
    tokenizer: PreTrainedTokenizerBase, corpus: CorpusConfig, stats: CorpusStats | None = None
) -> Iterator[Window]:
    """Returns `iter_windows` over a run's `[corpus]` section (source, window length, count, text field)."""
    return iter_windows(
        tokenizer,
        corpus.source,
        window_tokens=corpus.window_tokens,
        max_windows=corpus.max_windows,
        text_field=corpus.text_field,
        stats=stats,
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
                _report_dropped(source, stats, text_field)
                return
    _check_mostly_utf8(source, stats, minimum_lines=1)
    if stats.windows == 0:
        if stats.records_not_text and not stats.documents:
            raise CorpusError(
                f"corpus {source}: no record's '{text_field}' is a string ({stats.not_text_kinds()}); "
                "set corpus.text_field to the field that holds the text"
            )
        dropped = f" ({stats.not_text_summary()} dropped)" if stats.records_not_text else ""
        raise CorpusError(
            f"corpus {source} produced no windows of {window_tokens} tokens: it is empty or every "
            f"document is shorter than corpus.window_tokens{dropped}"
        )
    _report_dropped(source, stats, text_field)


def _report_dropped(source: str, stats: CorpusStats, text_field: str) -> None:
    """Logs (a warning) what the reader dropped or repaired so far: records whose text is not a string,
    lines with invalid UTF-8."""
    if stats.records_not_text:
        log.warning("corpus %s: dropped %s (field '%s')", source, stats.not_text_summary(), text_field)
    if stats.lines_with_invalid_utf8:
        log.warning("%d lines of %s had invalid UTF-8 bytes (replaced)", stats.lines_with_invalid_utf8, source)


CHECK_TOKENS = 1_000_000
"""`check` reads a corpus as far as a run will (its `max_windows` windows), up to this many tokens: a bad
record there stopped a run minutes into collection."""


def check_corpus(
    source: str,
    *,
    text_field: str = "text",
    tokenizer: PreTrainedTokenizerBase | None = None,
    window_tokens: int = 1,
    max_windows: int = 1,
    max_lines: int = 2_000,
) -> CorpusStats:
    """Reads the start of a corpus (up to `max_lines` lines; with a tokenizer, the `max_windows` windows a
    run reads, at most CHECK_TOKENS tokens of them) and returns what it saw; raises CorpusError when the
    source is missing, a folder, empty, mostly not UTF-8, has a JSONL record without `text_field` or that is
    not JSON where a run would read it, or yields no window."""
    stats = CorpusStats()
    if source == BUILTIN_PYTHON_DOCS:
        return stats
    if tokenizer is not None:
        read = max(1, min(max_windows, CHECK_TOKENS // max(window_tokens, 1)))  # what the run reads, at most
        windows = iter_windows(
            tokenizer, source, window_tokens=window_tokens, max_windows=read, text_field=text_field, stats=stats
        )
        for _ in windows:  # iter_windows raises CorpusError for no window, or a bad record on the way
            pass
        _check_mostly_utf8(source, stats, minimum_lines=1)
        return stats
    text_seen = False
    for text in iter_documents(source, text_field, stats):
        text_seen = text_seen or bool(text.strip() if isinstance(text, str) else text)
        if stats.lines >= max_lines:
            break
    _check_mostly_utf8(source, stats, minimum_lines=1)
    if not text_seen and stats.records_not_text:
        raise CorpusError(
            f"corpus {source}: no record's '{text_field}' is a string ({stats.not_text_kinds()}); "
            "set corpus.text_field to the field that holds the text"
        )
    if not text_seen and stats.lines < max_lines:
        raise CorpusError(f"corpus {source} is empty (no text in it)")
    return stats
