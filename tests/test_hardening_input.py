"""Hardening, second pass: inputs that used to give silent wrong results or a long traceback.

Each case runs the real CLI in-process (`autointerp check` or `run`) and expects one `error:` line, caught
by the preflight before the subject model loads; legitimate inputs (a few JSONL records without text)
give the right behaviour with a visible count.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.subject.model import _load_subject_model


def _model_folder() -> Path:
    """The converted default model's folder (config.json, model.safetensors, tokenizer files)."""
    from autointerp.subject.model import prepare_model_folder

    folder, _ = prepare_model_folder("smollm2-135m")
    return Path(folder)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hardening")
    (root / "nul.txt").write_bytes(b"\0" * 200_000)
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    (root / "controls.txt").write_bytes(bytes(range(1, 32)) * 300)
    (root / "utf16.txt").write_bytes("Plain words in UTF-16.\n".encode("utf-16"))
    (root / "text.npy").write_text("not an array\n")
    (root / "bad.safetensors").write_bytes(b"junk")
    records = [{"text": None if i % 3 else 12} for i in range(12)]
    (root / "no_text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    model = _model_folder()
    (root / "config_only").mkdir()
    shutil.copy(model / "config.json", root / "config_only" / "config.json")
    (root / "cut_weights").mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model / name, root / "cut_weights" / name)
    with (model / "model.safetensors").open("rb") as whole:
        (root / "cut_weights" / "model.safetensors").write_bytes(whole.read(4096))
    (root / "no_tokenizer").mkdir()
    shutil.copy(model / "config.json", root / "no_tokenizer" / "config.json")
    (root / "no_tokenizer" / "model.safetensors").symlink_to(model / "model.safetensors")
    (root / "missing_shard").mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(model / name, root / "missing_shard" / name)
    index = {"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}
    (root / "missing_shard" / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


CASES = [
    ("quantiles-zero", ["collect.quantiles=0"], r"error: config key 'collect\.quantiles': quantiles must be >= 1 .*"
     r"for no quantile windows set collect\.per_quantile = 0 \(got 0\)$"),
    ("steering-nan", ["experiments.steering_strengths=[nan]"],
     r"error: config key 'experiments\.steering_strengths\.0': Input should be a finite number \(got nan\)$"),
    ("score-threshold-inf", ["experiments.score_threshold=inf"], r"error: config key 'experiments\.score_threshold'"),
    ("count-above-width", ["features.count=100000"],
     r"error: features\.count = 100000 but there are only 1536 neurons in each MLP block of smollm2-135m; "
     r"set features\.count <= 1536, or \"all\"$"),
    ("nul-corpus", ["corpus.source='{root}/nul.txt'"], r"error: corpus .*nul\.txt is a file of NUL bytes, not text"),
    ("png-corpus", ["corpus.source='{root}/image.png'"], r"error: corpus .*image\.png is a PNG image, not text"),
    ("control-bytes", ["corpus.source='{root}/controls.txt'"], r"error: corpus .* is a binary file \(.*\), not text"),
    ("utf16-corpus", ["corpus.source='{root}/utf16.txt'"], r"error: corpus .* is UTF-16 text; convert it to UTF-8"),
    ("jsonl-no-string-text", ["corpus.source='{root}/no_text.jsonl'"],
     r"error: corpus .*no_text\.jsonl: no record's 'text' is a string \(8 null, 4 number\); set corpus\.text_field"),
    ("model-config-only", ["subject.model='{root}/config_only'"],
     r"error: subject\.model: model folder .*config_only has config\.json but no weights"),
    ("model-cut-weights", ["subject.model='{root}/cut_weights'"],
     r"error: subject\.model: model weights .*model\.safetensors is cut short"),
    ("model-no-tokenizer", ["subject.model='{root}/no_tokenizer'"],
     r"error: subject\.model: model folder .*no_tokenizer has no tokenizer files"),
    ("model-missing-shard", ["subject.model='{root}/missing_shard'"],
     r"error: subject\.model: weight shard .*model-00001-of-00002\.safetensors named in .* is missing"),
    ("direction-not-npy", ["features.kind='direction'", "features.path='{root}/text.npy'"],
     r"error: direction file .*text\.npy cannot be read as a float \[n, d\] \.npy array \(not an array saved with "
     r"numpy\.save\); set features\.path$"),
    ("direction-bad-safetensors", ["features.kind='direction'", "features.path='{root}/bad.safetensors'"],
     r"error: direction file .*bad\.safetensors cannot be read as safetensors \(.+\); set features\.path$"),
    ("cache-path-folder", ["llm.cache_path='{root}'"],  # failed at the first LLM stage, after collection
     r"error: cannot open the LLM response cache .*: unable to open database file; set llm\.cache_path$"),
    ("local-llm-config-only", ["explainer.model='local:{root}/config_only'"],
     r"error: explainer\.model 'local:.*config_only': model folder .* has config\.json but no weights"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "first_line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["check", "run"])
def test_one_line_before_the_model_loads(
    command: str, overrides: list[str], first_line: str, files: Path, tmp_path: Path
) -> None:
    args = [command, "-s", f"store.path='{tmp_path / 'fresh' / 'run.duckdb'}'"]
    for override in overrides:
        args += ["-s", override.replace("{root}", str(files))]
    loaded_before = _load_subject_model.cache_info().currsize
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert len(result.output.splitlines()) == 1, result.output
    assert re.search(first_line, result.output.splitlines()[0]), result.output
    assert _load_subject_model.cache_info().currsize == loaded_before
    assert not (tmp_path / "fresh").exists()


def test_a_count_the_user_did_not_set_is_kept_for_small_dictionaries(tmp_path: Path) -> None:
    """The default count (16) on a 3-row direction matrix is every direction, as before; only a count the
    user set above the width is refused."""
    import numpy as np

    np.save(tmp_path / "three.npy", np.ones((3, 576), dtype=np.float32))
    base = ["check", "-s", f"store.path='{tmp_path / 'r.duckdb'}'", "-s", "features.kind='direction'"]
    base += ["-s", f"features.path='{tmp_path / 'three.npy'}'"]
    assert CliRunner().invoke(app, base).exit_code == 0
    result = CliRunner().invoke(app, [*base, "-s", "features.count=4"])
    assert result.exit_code == 1
    assert "features.count = 4 but there are only 3 directions in" in result.output


def test_per_quantile_zero_means_no_quantile_windows() -> None:
    from autointerp.config import load_config

    assert load_config(None, ["collect.per_quantile=0"]).collect.per_quantile == 0


def test_records_whose_text_is_not_a_string_are_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """12 of 40 records hold null or a number: the other 28 are read, and one warning counts the 12."""
    from autointerp.corpus.sources import CorpusStats, iter_windows
    from autointerp.subject.locate import folder_tokenizer

    text = "The quick brown fox jumps over the lazy dog. " * 4
    records = [{"text": None if i < 9 else 7 if i < 12 else text} for i in range(40)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    tokenizer = folder_tokenizer(str(_model_folder()))
    assert tokenizer is not None
    stats = CorpusStats()
    with caplog.at_level(logging.WARNING, logger="autointerp.corpus.sources"):
        windows = list(iter_windows(tokenizer, str(path), window_tokens=16, max_windows=10_000, stats=stats))
    assert {w.doc_id for w in windows} == set(range(28)) and stats.documents == 28
    assert stats.records_not_text == {"null": 9, "number": 3}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"corpus {path}: dropped 12 records whose text is not a string (9 null, 3 number) (field 'text')"
    ]


def test_a_jsonl_list_of_token_ids_is_a_pretokenised_record(tmp_path: Path) -> None:
    from autointerp.corpus.sources import CorpusStats, iter_documents

    path = tmp_path / "ids.jsonl"
    path.write_text(json.dumps({"text": [1, 2, 3]}) + "\n" + json.dumps({"text": "words"}) + "\n")
    assert list(iter_documents(str(path), "text", CorpusStats())) == [[1, 2, 3], "words"]


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\0\0", "PNG image"),
        (b"%PDF-1.7\n", "PDF document"),
        (b"PK\x03\x04rest", "ZIP archive"),
        (b"\x1f\x8b\x08\0", "gzip-compressed file"),
        (b"SQLite format 3\0", "SQLite database"),
        (b"\0" * 100, "file of NUL bytes"),
        (b"text\0with a NUL", "binary file"),
        ("Caf\xe9 cr\xe8me\n".encode("latin-1"), None),  # latin-1 text: the UTF-8 check names iconv
        ("ünïcödé text\twith tabs\r\n\x0c".encode(), None),
        (b"", None),
    ],
)
def test_binary_kind(head: bytes, kind: str | None) -> None:
    from autointerp.corpus.sources import binary_kind

    found = binary_kind(head)
    assert (found is None) if kind is None else (found is not None and found.startswith(kind)), found


OPTION_CASES = [
    (["train-simulator", "--windows", "0"], "'--windows': Input should be greater than or equal to 1"),
    (["train-explainer", "--words", "-1"], "'--words': Input should be greater than or equal to 0"),
    (["train-explainer", "--learning-rate", "0"], "error: --learning-rate must be a finite number above 0 (got 0)"),
    (["train-simulator", "--learning-rate", "inf"], "error: --learning-rate must be a finite number above 0 (got inf)"),
    (["train-explainer", "--per-word-member", "-3"], "'--per-word-member': Input should be greater than or equal to 0"),
    (["train-simulator", "--out", "/etc/passwd"], "error: cannot write --out /etc/passwd: /etc/passwd is a file, not"),
    (["train-explainer", "--out", "/proc/x/a"], "error: cannot write --out /proc/x/a: /proc does not take new files"),
    (["train-simulator", "--max-minutes", "-1"], "error: --max-minutes must be above 0 (got -1)"),
    (["bench", "--rounds", "-1"], "'--rounds': Input should be greater than or equal to 0"),
    (["bench", "--window-tokens", "2"], "'--window-tokens': Input should be greater than or equal to 4"),
    (["bench-outputs", "--heldout", "0"], "'--heldout': Input should be greater than or equal to 1"),
    (["train-sae", "--steps", "0"], "'--steps': Input should be greater than or equal to 1"),
    (["train-sae", "--l1", "inf"], "error: --l1 must be a finite number (got inf)"),
    (["train-sae", "-o", "/etc/passwd"], "error: cannot write --out /etc/passwd: /etc/passwd is a file, not a folder"),
    (["bench", "--output", "."], "error: cannot write --output .: . is a folder, not a file"),
    (["bench", "--scorer", "nope:x"], "error: --scorer 'nope:x': unknown LLM backend 'nope'"),
    (["bench-outputs", "--output", "/proc/x/r.md"], "error: cannot write --output /proc/x/r.md: /proc does not take"),
    (["bench-outputs", "--explainer", "bogus"], "error: --explainer: model 'bogus' must look like backend:model"),
    (["review", "--port", "70000"], "'--port': Input should be less than or equal to 65535"),
]


@pytest.mark.parametrize(("args", "message"), OPTION_CASES, ids=[" ".join(c[0]) for c in OPTION_CASES])
def test_a_command_refuses_an_option_it_cannot_use_before_any_work(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The option is named with what it must be, and nothing runs: `train-simulator --windows 0` trained
    and wrote ./simulator, `bench --rounds -1` overwrote the committed planted report."""
    monkeypatch.chdir(tmp_path)
    loaded_before = _load_subject_model.cache_info().currsize
    result = CliRunner().invoke(app, args)  # default outputs (./simulator, results/...) land in tmp_path
    assert result.exit_code != 0, result.output
    assert message in " ".join(result.output.replace("│", " ").split()), result.output
    assert _load_subject_model.cache_info().currsize == loaded_before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a CUDA GPU can use subject.device = cuda")
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_cuda_device_without_a_gpu_is_refused_before_the_run_starts(command: str, tmp_path: Path) -> None:
    """`check` said `ok` for subject.device = cuda on a CPU machine; `run` then failed at the model's load,
    after creating the store."""
    store = tmp_path / "fresh" / "run.duckdb"
    result = CliRunner().invoke(app, [command, "-s", f"store.path='{store}'", "-s", "subject.device='cuda'"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == ["error: subject.device is 'cuda' but no CUDA GPU is visible; use 'cpu'"]
    assert not store.parent.exists()
