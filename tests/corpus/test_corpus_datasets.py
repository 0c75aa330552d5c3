"""Corpora through `datasets` and DuckDB: saved datasets, Arrow, Parquet, CSV, `hf:` names, pre-tokenised
columns; every file is written by the test and nothing is downloaded."""

import csv
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from autointerp.corpus.datasets import parse_hf_source
from autointerp.corpus.sources import iter_windows
from autointerp.errors import CorpusError
from autointerp.subject import SubjectModel

DOCS = [
    "Parquet files hold columns of text, one document per row, read in batches.",
    "A saved dataset is a folder of Arrow files that is memory-mapped, never read whole.",
    "Short.",
    "Pre-tokenised corpora carry token ids that must come from the same tokenizer.",
]


def _windows(subject: SubjectModel, source: str, text_field: str = "text") -> list[list[int]]:
    windows = iter_windows(subject.tokenizer, source, window_tokens=6, max_windows=100, text_field=text_field)
    return [w.token_ids for w in windows]


@pytest.fixture
def reference(subject: SubjectModel, tmp_path: Path) -> list[list[int]]:
    """The windows of DOCS read from a JSONL file (the reader that existed before datasets)."""
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in DOCS))
    return _windows(subject, str(path))


def test_saved_dataset_arrow_parquet_and_csv_match_jsonl(
    subject: SubjectModel, tmp_path: Path, reference: list[list[int]]
) -> None:
    saved = tmp_path / "saved"
    Dataset.from_dict({"id": list(range(len(DOCS))), "text": DOCS}).save_to_disk(str(saved))
    arrow = next(saved.glob("*.arrow"))
    pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), tmp_path / "docs.parquet")
    with (tmp_path / "docs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "text"])
        writer.writerows([[f"doc {i}", d] for i, d in enumerate(DOCS)])
    assert reference
    for source in (saved, arrow, tmp_path / "docs.parquet", tmp_path / "docs.csv"):
        assert _windows(subject, str(source)) == reference, source


def test_hf_name_streams_a_dataset_and_an_uncached_name_says_how_to_get_it(
    subject: SubjectModel, tmp_path: Path, reference: list[list[int]]
) -> None:
    repo = tmp_path / "my-dataset"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.table({"text": DOCS}), repo / "data" / "train-00000-of-00001.parquet")
    assert _windows(subject, f"hf:{repo}") == reference
    assert _windows(subject, f"hf:{repo}@train") == reference
    assert parse_hf_source("hf:wikitext:wikitext-2-raw-v1@validation") == (
        "wikitext",
        "wikitext-2-raw-v1",
        "validation",
    )
    with pytest.raises(
        CorpusError, match=r"'no-such-org/no-such-data' is not in the local datasets cache .*offline"
    ) as e:
        _windows(subject, "hf:no-such-org/no-such-data")
    assert "\n" not in str(e.value) and "save_to_disk" in str(e.value)


def test_missing_text_field_lists_the_columns(subject: SubjectModel, tmp_path: Path) -> None:
    Dataset.from_dict({"body": DOCS, "id": [1, 2, 3, 4]}).save_to_disk(str(tmp_path / "saved"))
    pq.write_table(pa.table({"body": DOCS}), tmp_path / "docs.parquet")
    for source in (tmp_path / "saved", tmp_path / "docs.parquet"):
        with pytest.raises(CorpusError, match=r"has no column 'text'; its columns are body.*: set corpus\.text_field"):
            _windows(subject, str(source))
    assert _windows(subject, str(tmp_path / "docs.parquet"), text_field="body")


def test_pretokenised_corpus_is_used_as_is_and_checked(
    subject: SubjectModel, tmp_path: Path, reference: list[list[int]]
) -> None:
    ids = [subject.tokenizer(d, add_special_tokens=False)["input_ids"] for d in DOCS]
    Dataset.from_dict({"input_ids": ids}).save_to_disk(str(tmp_path / "tokens"))
    assert _windows(subject, str(tmp_path / "tokens"), text_field="input_ids") == reference
    vocabulary = len(subject.tokenizer)
    shifted = [[(t + 7919) % vocabulary for t in doc] for doc in ids]  # another tokenizer's ids
    Dataset.from_dict({"input_ids": shifted}).save_to_disk(str(tmp_path / "other"))
    with pytest.raises(CorpusError, match="not tokenised with the subject's tokenizer"):
        _windows(subject, str(tmp_path / "other"), text_field="input_ids")
    Dataset.from_dict({"input_ids": [[vocabulary + 5, 1, 2, 3, 4, 5, 6]]}).save_to_disk(str(tmp_path / "big"))
    with pytest.raises(CorpusError, match=rf"token id {vocabulary + 5} but the subject's tokenizer has {vocabulary}"):
        _windows(subject, str(tmp_path / "big"), text_field="input_ids")
    Dataset.from_dict({"input_ids": [[1, 2, -3, 4, 5, 6, 7]]}).save_to_disk(str(tmp_path / "negative"))
    with pytest.raises(CorpusError, match=r"holds token id -3; token ids are never negative"):  # it named id 7
        _windows(subject, str(tmp_path / "negative"), text_field="input_ids")


def test_failed_hub_requests_do_not_print_their_own_warnings() -> None:
    """Asked for a dataset it cannot reach, huggingface_hub logged a WARNING line per failed request before the
    one-line error; the attempt keeps its logger at ERROR and restores it afterwards."""
    from autointerp.corpus.datasets import _quiet_hub_requests

    hub_http = logging.getLogger("huggingface_hub.utils._http")
    before = hub_http.level
    with _quiet_hub_requests():
        assert not hub_http.isEnabledFor(logging.WARNING)
    assert hub_http.level == before
