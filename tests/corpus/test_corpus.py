import json
from pathlib import Path

import pytest

from autointerp.corpus.sources import CorpusStats, iter_windows
from autointerp.errors import CorpusError
from autointerp.subject import SubjectModel


def test_builtin_corpus_yields_full_windows(subject: SubjectModel) -> None:
    windows = list(iter_windows(subject.tokenizer, "builtin:python-docs", window_tokens=16, max_windows=20))
    assert len(windows) == 20
    assert all(len(w.token_ids) == 16 for w in windows)
    assert "statement" in subject.tokenizer.decode([t for w in windows for t in w.token_ids])


def test_empty_corpus_file_is_a_clear_error(subject: SubjectModel, tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(CorpusError, match="produced no windows"):
        list(iter_windows(subject.tokenizer, str(path), window_tokens=8, max_windows=10))


def test_missing_and_unknown_sources(subject: SubjectModel, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        list(iter_windows(subject.tokenizer, str(tmp_path / "nope.txt"), window_tokens=8, max_windows=1))
    with pytest.raises(CorpusError, match="unknown builtin corpus"):
        list(iter_windows(subject.tokenizer, "builtin:wiki", window_tokens=8, max_windows=1))


def test_non_utf8_file_is_a_clear_error(subject: SubjectModel, tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e et voil\u00e0\n".encode("latin-1") * 30)
    with pytest.raises(CorpusError, match="not UTF-8"):
        list(iter_windows(subject.tokenizer, str(path), window_tokens=8, max_windows=100))


def test_stray_bad_bytes_and_short_documents_are_counted(subject: SubjectModel, tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    good = "The quick brown fox jumps over the lazy dog again and again and again.\n"
    path.write_bytes(good.encode() * 5 + b"bad \xff byte\n" + b"\nshort\n\n" + good.encode() * 5)
    stats = CorpusStats()
    windows = list(iter_windows(subject.tokenizer, str(path), window_tokens=8, max_windows=100, stats=stats))
    assert windows
    assert stats.lines_with_invalid_utf8 == 1
    assert stats.short_documents == 1


def test_jsonl_corpus_and_missing_field(subject: SubjectModel, tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"body": "A sentence with enough tokens for one window."}) for _ in range(3)))
    windows = list(iter_windows(subject.tokenizer, str(path), window_tokens=4, max_windows=100, text_field="body"))
    assert {w.doc_id for w in windows} == {0, 1, 2}
    with pytest.raises(CorpusError, match="no 'text' field"):
        list(iter_windows(subject.tokenizer, str(path), window_tokens=4, max_windows=100))
