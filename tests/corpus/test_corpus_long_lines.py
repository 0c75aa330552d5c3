"""Long lines are read, decoded and split in bounded pieces (a 50 MB one-line file is never read whole)."""

import io
from pathlib import Path

import pytest

from autointerp.corpus import sources
from autointerp.corpus.sources import READ_BYTES, CorpusStats, check_corpus, iter_documents, read_line_pieces
from autointerp.errors import CorpusError


class _CountingReader(io.BytesIO):
    """A binary file that records the largest single read."""

    largest = 0

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        data = super().readline(size)
        self.largest = max(self.largest, len(data))
        return data


def test_a_multi_megabyte_line_is_read_in_bounded_pieces() -> None:
    text = ("déjà vu 日本語 " * 300_000) + "\nsecond line\n"  # ~5.7 MB of UTF-8, one long line
    handle = _CountingReader(text.encode())
    stats = CorpusStats()
    pieces = list(read_line_pieces(handle, stats))
    assert handle.largest <= READ_BYTES
    assert all(len(piece.encode()) <= READ_BYTES + 3 for piece, _ in pieces)  # + a carried partial character
    assert "".join(piece for piece, _ in pieces) == text  # no character split or lost
    assert [ends for _, ends in pieces].count(True) == 2
    assert stats.lines == 2 and stats.lines_with_invalid_utf8 == 0


def test_invalid_bytes_are_counted_once_per_line() -> None:
    data = b"ok line\n" + b"caf\xe9 " * 20_000 + b"\n"
    stats = CorpusStats()
    pieces = list(read_line_pieces(io.BytesIO(data), stats, piece_bytes=1024))
    assert stats.lines == 2 and stats.lines_with_invalid_utf8 == 1
    assert "\ufffd" in pieces[-1][0]


def test_one_line_file_becomes_bounded_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "one_line.txt"
    path.write_text("word " * 1_000_000)  # 5 MB, no newline at all
    stats = CorpusStats()
    sizes = [len(document) for document in iter_documents(str(path), "text", stats)]
    assert sum(sizes) == 5_000_000
    assert max(sizes) < sources._MAX_DOCUMENT_CHARS + READ_BYTES
    assert stats.lines == 1


def test_documents_stop_at_blank_lines_as_before(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt"
    path.write_text("first doc\nstill first\n\n\nsecond doc\n")
    assert list(iter_documents(str(path), "text", CorpusStats())) == ["first doc\nstill first\n", "second doc\n"]


def test_an_overlong_jsonl_record_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_JSONL_LINE_BYTES", 1000)
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "short"}\n{"text": "' + "x" * 2000 + '"}\n')
    with pytest.raises(CorpusError, match=r"big\.jsonl:2 is longer than"):
        list(iter_documents(str(path), "text", CorpusStats()))


def test_check_corpus_without_a_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(CorpusError, match="is empty"):
        check_corpus(str(tmp_path / "blank.txt"))
    with pytest.raises(CorpusError, match="is a folder"):
        check_corpus(str(tmp_path))
    (tmp_path / "ok.txt").write_text("some text\n")
    assert check_corpus(str(tmp_path / "ok.txt")).lines == 1
