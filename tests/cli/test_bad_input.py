"""Bad input: command -> exit code -> first line of output, for the mistakes users make.

Every case runs the real CLI in-process (typer's CliRunner) against real files, real DuckDB files
and real loopback HTTP servers. `run` and `investigate` must fail in their preflight: before the
subject model is loaded and before the flow starts (the run's DuckDB file is never created).
"""

from __future__ import annotations

import http.server
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.config import RunConfig
from autointerp.store.database import Store
from autointerp.subject.model import _load_subject_model

SECRET = "sk-test-never-printed-0123456789"
WIDTH = 576  # SmolLM2-135M's residual stream


class _ModelsHandler(http.server.BaseHTTPRequestHandler):
    """An OpenAI-style `/models` endpoint that accepts only `Bearer good-key` (when a key is sent)."""

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        if auth is not None and auth != "Bearer good-key":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"data": [{"id": "served-model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A loopback server answering GET /v1/models; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ModelsHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Workspace:
    """Files the cases point at, made fresh in a temporary folder."""

    root: Path
    server: str
    env: dict[str, str | None] = field(default_factory=dict)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def db(self) -> str:
        return self.path("fresh/run.duckdb")


def _write_files(root: Path) -> None:
    (root / "prose.txt").write_text(("The quick brown fox jumps over the lazy dog. " * 40 + "\n\n") * 3)
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_text("\n\n   \n\t\n")
    (root / "short.txt").write_text("Too short.\n")
    (root / "latin1.txt").write_bytes(("Caf\xe9 cr\xe8me br\xfbl\xe9e, d\xe9j\xe0 vu.\n" * 30).encode("latin-1"))
    (root / "records.jsonl").write_text('{"body": "no text field here"}\n')
    good = json.dumps({"text": "The quick brown fox jumps over the lazy dog. " * 20}) + "\n"
    (root / "late_bad.jsonl").write_text(good * 50 + "\n" * 5000 + '{"text": broken\n')
    (root / "corpus_dir").mkdir()
    (root / "corpus_dir" / "a.txt").write_text("some text")
    (root / "afile").write_text("a file, not a folder")
    (root / "planted_syntax.py").write_text(
        "from autointerp.subject.planted import PlantedFeature\n\ndef broken(:\n    pass\n"
    )
    (root / "planted_import_raises.py").write_text("import json\n\nVALUE = json.loads('{not json')\n")
    feature_header = "from autointerp.subject.planted import PlantedFeature\n\n"
    (root / "planted_raises.py").write_text(
        feature_header + "def boom(tokens):\n    return [1 / 0 for _ in tokens]\n\n"
        "PLANTED_FEATURES = [PlantedFeature('boom', 'divides by zero', boom)]\n"
    )
    (root / "planted_nan.py").write_text(
        feature_header + "PLANTED_FEATURES = [PlantedFeature('nan', 'not a number', "
        "lambda tokens: [float('nan')] * len(tokens))]\n"
    )
    (root / "planted_short.py").write_text(
        feature_header + "PLANTED_FEATURES = [PlantedFeature('short', 'too few values', lambda tokens: [1.0])]\n"
    )
    (root / "planted_none.py").write_text("FEATURES = []\n")
    directions = np.random.default_rng(0).standard_normal((4, WIDTH)).astype(np.float32)
    directions[2, 7] = np.nan
    np.save(root / "nan_rows.npy", directions)
    np.save(root / "narrow.npy", np.ones((3, 64), dtype=np.float32))
    np.save(root / "flat.npy", np.ones(WIDTH, dtype=np.float32))
    np.save(root / "no_rows.npy", np.zeros((0, WIDTH), dtype=np.float32))
    np.save(root / "complex.npy", np.ones((2, WIDTH), dtype=np.complex64))
    save_file({"directions": torch.ones(2, WIDTH, dtype=torch.complex64)}, str(root / "complex.safetensors"))
    (root / "sae_empty").mkdir()
    for name, cfg in {
        "sae_small": {"hook_name": "blocks.3.hook_resid_post", "d_in": WIDTH, "d_sae": 8},
        "sae_wide": {"hook_name": "blocks.3.hook_resid_post", "d_in": 768, "d_sae": 8},
        "sae_attn": {"hook_name": "blocks.3.hook_attn_out", "d_in": WIDTH, "d_sae": 8},
    }.items():
        (root / name).mkdir()
        (root / name / "cfg.json").write_text(json.dumps(cfg))
        (root / name / "sae_weights.safetensors").write_bytes(b"")  # the preflight reads cfg.json only
    sae_cfg = {"hook_name": "blocks.3.hook_resid_post", "d_in": WIDTH, "d_sae": 8}
    for name, bad in {
        "sae_nan": ("W_enc", math.nan),
        "sae_inf": ("b_enc", math.inf),
        "sae_jumprelu_nan": ("threshold", math.nan),
    }.items():
        (root / name).mkdir()
        jumprelu = bad[0] == "threshold"
        (root / name / "cfg.json").write_text(json.dumps(sae_cfg | ({"architecture": "jumprelu"} if jumprelu else {})))
        tensors = {"W_enc": torch.zeros(WIDTH, 8), "b_enc": torch.zeros(8), "W_dec": torch.zeros(8, WIDTH)}
        tensors["b_dec"] = torch.zeros(WIDTH)
        if jumprelu:
            tensors["threshold"] = torch.zeros(8)
        tensors[bad[0]].view(-1)[3] = bad[1]
        save_file(tensors, str(root / name / "sae_weights.safetensors"))
    (root / "bad.toml").write_text("[features\nlayer = 3\n")
    (root / "good.toml").write_text("[features]\nlayer = 99\n")
    (root / "not_a_db.duckdb").write_text("this is not a database file")
    (root / "table.csv").write_text("feature,explanation\n1,cats\n")
    con = duckdb.connect(str(root / "foreign.duckdb"))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    newer = Store(root / "newer.duckdb")
    newer.migrate()
    with newer.transaction() as con:
        con.execute("INSERT INTO schema_version VALUES (99, now())")
    current = Store(root / "current.duckdb")
    current.migrate()
    current.start_run("run-a", {}, "hash", "0", None)
    current.finish_run("run-a", "completed")
    stored = RunConfig.model_validate({"run_id": "mine", "features": {"layer": 3}})
    current.start_run("mine", stored.model_dump(mode="json"), stored.config_hash(), "0", None)
    feature = {"run_id": "mine", "id": "smollm2-135m/mlp.3/0", "model": "smollm2-135m", "hook": "mlp.3", "idx": 0}
    feature |= {"kind": "neuron", "max_activation": 1.0, "mean_activation": 0.1, "density": 0.1, "tokens": 32}
    current.write_collection("mine", [feature | {"dead": False}], [])  # collected: another layer is refused


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (with {placeholders}), the exit code, the first line's pattern."""

    id: str
    args: list[str]
    code: int
    first_line: str
    env: dict[str, str | None] = field(default_factory=dict)


def _run(*overrides: str) -> list[str]:
    """`autointerp run` on a fresh store, small enough that a passing preflight would be visible."""
    return ["run", "-s", "store.path='{db}'", *[part for o in overrides for part in ("-s", o)]]


def _check(*overrides: str) -> list[str]:
    return ["check", "-s", "store.path='{db}'", *[part for o in overrides for part in ("-s", o)]]


NO_KEYS: dict[str, str | None] = {
    "OPENAI_API_KEY": None,
    "ANTHROPIC_API_KEY": None,
    "OPENAI_BASE_URL": None,
    "ANTHROPIC_BASE_URL": None,
    "AUTOINTERP_COMPATIBLE_API_KEY": None,
}

CASES = [
    # config
    Case("unknown-config-key", _run("subject.modle='x'"), 1, r"error: unknown config key 'subject\.modle'"),
    Case("override-without-value", ["run", "-s", "features.layer"], 1, r"error: override 'features\.layer' must"),
    Case(
        "missing-config-file", ["run", "-c", "{root}/nope.toml"], 1, r"error: config file .*nope\.toml does not exist"
    ),
    Case("invalid-toml", ["run", "-c", "{root}/bad.toml"], 1, r"error: config file .*bad\.toml is not valid TOML"),
    # pydantic read `layer = true` as layer 1 and `[true, false]` as [1, 0]
    Case("boolean-for-a-number", _check("features.layer=true"), 1, r"error: config key 'features\.layer': takes a"),
    Case(
        "skip-every-token",
        _run("features.skip_first_tokens=16", "corpus.window_tokens=16"),
        1,
        r"^error: features\.skip_first_tokens = 16 leaves no token of a 16-token window to read; lower it or raise "
        r"corpus\.window_tokens$",
    ),
    Case("booleans-in-a-list", _run("features.indices=[true, false]"), 1, r"error: config key 'features\.indices'"),
    Case("key-without-union-names", _check("features.layers=['a']"), 1, r"error: config key 'features\.layers\.0':"),
    Case("bracketed-value-kept", _run("features.indices=[1, -2]"), 1, r"error: .*must be >= 0 \(got \[1, -2\]\)"),
    Case(
        "bad-score-method",
        _run("score.methods=['simulate']"),
        1,
        r"error: config key 'score\.methods'.*unknown scoring method 'simulate'; choose from",
    ),
    # subject model, layer, feature index
    Case("wrong-model-name", _run("subject.model='no-such-model-xyz'"), 1, r"error: subject\.model: cannot find"),
    Case("setup-unknown-model", ["setup", "--model", "no-such-model-xyz"], 1, r"error: cannot find model 'no-such"),
    Case("model-file-not-gguf", _run("subject.model='{root}/prose.txt'"), 1, r"error: subject\.model: .*not a \.gguf"),
    Case("missing-gguf", _run("subject.model='{root}/m.gguf'"), 1, r"error: subject\.model: GGUF file .* not exist"),
    Case(
        "layer-out-of-range",
        _run("features.layer=99"),
        1,
        r"error: layer 99 does not exist: smollm2-135m has layers 0\.\.29$",
    ),
    Case(
        "layer-from-config-file",
        ["run", "-c", "{root}/good.toml", "-s", "store.path='{db}'"],
        1,
        r"error: layer 99 does not exist",
    ),
    # an explicit run id reused with another config resumed the stored run under the new settings
    Case(
        "run-id-reused-with-other-settings",
        ["check", "-s", "store.path='{root}/current.duckdb'", "-s", "run_id='mine'", "-s", "features.layer=5"],
        1,
        r"error: run mine was collected under other settings \(features\.layer: 3 -> 5\): set them back to resume",
    ),
    Case("layers-out-of-range", _run("features.layers=[1, 40]"), 1, r"error: layer 40 does not exist"),
    Case(
        "neuron-index", _run("features.indices=[999999]"), 1, r"error: neuron index 999999 does not exist: .*0\.\.1535"
    ),
    # corpus
    Case(
        "missing-corpus", _run("corpus.source='{root}/nope.txt'"), 1, r"error: corpus file .*nope\.txt does not exist"
    ),
    Case("corpus-directory", _run("corpus.source='{root}/corpus_dir'"), 1, r"error: corpus .*corpus_dir is a folder"),
    Case(
        "empty-corpus", _run("corpus.source='{root}/empty.txt'"), 1, r"error: corpus .*empty\.txt produced no windows"
    ),
    Case(
        "blank-corpus", _run("corpus.source='{root}/blank.txt'"), 1, r"error: corpus .*blank\.txt produced no windows"
    ),
    Case("corpus-shorter-than-window", _run("corpus.source='{root}/short.txt'"), 1, r"error: .*shorter than"),
    # check read the first window only; run stopped at the bad record, minutes into collection. A run that
    # stops before the record (5 windows) never reads it, and check does not refuse it either
    Case("jsonl-bad-record-late", _check("corpus.source='{root}/late_bad.jsonl'"), 1, r"late_bad\.jsonl:5051 is not"),
    Case("jsonl-bad-record-unread", _check("corpus.source='{root}/late_bad.jsonl'", "corpus.max_windows=5"), 0, "ok: "),
    Case("non-utf8-corpus", _run("corpus.source='{root}/latin1.txt'"), 1, r"error: corpus .*latin1\.txt is not UTF-8"),
    Case(
        "jsonl-without-field",
        _run("corpus.source='{root}/records.jsonl'"),
        1,
        r"error: .*records\.jsonl:1 has no 'text'",
    ),
    Case("unknown-builtin-corpus", _run("corpus.source='builtin:wiki'"), 1, r"error: unknown builtin corpus"),
    # LLM backends, keys, servers
    Case(
        "unknown-backend",
        _run("explainer.model='fancy:gpt'"),
        1,
        r"error: explainer\.model 'fancy:gpt': unknown LLM backend 'fancy'",
    ),
    Case(
        "spec-without-backend",
        _run("explainer.model='gpt-4o'"),
        1,
        r"error: explainer\.model: model 'gpt-4o' must look like backend:model",
    ),
    Case(
        "missing-openai-key",
        _run("explainer.model='openai:gpt-4o-mini'"),
        1,
        r"error: explainer\.model .*set OPENAI_API_KEY",
        NO_KEYS,
    ),
    Case(
        "missing-anthropic-key",
        _run("score.methods=['detection']", "score.judge.model='anthropic:claude-haiku'"),
        1,
        r"error: score\.judge\.model .*set ANTHROPIC_API_KEY",
        NO_KEYS,
    ),
    Case(
        "compatible-without-server",
        _run("score.simulator.model='openai-compatible:qwen'"),
        1,
        r"error: score\.simulator\.model .*needs a server",
        NO_KEYS,
    ),
    Case(
        "unreachable-server",
        _run("explainer.model='openai-compatible:http://127.0.0.1:{closed}/v1#m'"),
        1,
        r"error: explainer\.model .*cannot reach http://127\.0\.0\.1:\d+/v1/models",
        NO_KEYS,
    ),
    Case(
        "key-refused",
        _run("explainer.model='openai:gpt-4o-mini'"),
        1,
        r"error: explainer\.model .*refused the request \(HTTP 401\); check OPENAI_API_KEY",
        {**NO_KEYS, "OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "{server}"},
    ),
    Case(
        "bad-local-model",
        _run("experiments.proposer.model='local:no-such-model-xyz'"),
        1,
        r"error: experiments\.proposer\.model .*cannot find",
    ),
    Case(
        "proposer-checked-only-with-experiments",
        _check("experiments.proposer.model='fancy:x'", "experiments.lowest_n=0"),
        0,
        r"ok: ",
    ),
    Case("judge-checked-only-when-used", _check("score.judge.model='fancy:x'"), 0, r"ok: "),
    Case(
        "server-lists-other-models",
        _check("explainer.model='openai-compatible:{server}#other-model'"),
        0,
        r"warning: explainer\.model .*does not list model 'other-model' \(it lists served-model\)",
        NO_KEYS,
    ),
    # store
    Case(
        "store-under-a-file",
        _run("store.path='{root}/afile/sub/run.duckdb'"),
        1,
        r"error: cannot create the database .*afile is a file",
    ),
    # /proc takes no new files even from root, whose permission check says yes: `check` must not say ok
    Case(
        "check-store-in-a-folder-without-new-files",
        _check("store.path='/proc/autointerp-test/run.duckdb'"),
        1,
        r"error: cannot create the database /proc/autointerp-test/run\.duckdb: /proc does not take new files",
    ),
    Case(
        "store-is-a-folder",
        _run("store.path='{root}/corpus_dir'"),
        1,
        r"error: .*corpus_dir is a folder, not a DuckDB file",
    ),
    Case(
        "run-newer-schema",
        _run("store.path='{root}/newer.duckdb'"),
        1,
        r"error: .*newer\.duckdb has schema version 99, newer",
    ),
    Case(
        "show-newer-schema", ["show", "--db", "{root}/newer.duckdb"], 1, r"error: .*newer\.duckdb has schema version 99"
    ),
    Case(
        "runs-newer-schema", ["runs", "--db", "{root}/newer.duckdb"], 1, r"error: .*newer\.duckdb has schema version 99"
    ),
    Case(
        "costs-newer-schema",
        ["costs", "--db", "{root}/newer.duckdb"],
        1,
        r"error: .*newer\.duckdb has schema version 99",
    ),
    Case(
        "export-newer-schema",
        ["export", "--db", "{root}/newer.duckdb"],
        1,
        r"error: .*newer\.duckdb has schema version 99",
    ),
    Case(
        "review-newer-schema",
        ["review", "--db", "{root}/newer.duckdb", "--port", "{closed}"],
        1,
        r"error: .*newer\.duckdb has schema version 99",
    ),
    Case(
        "schedule-bad-backend",
        ["schedule", "--cron", "0 2 * * *", "-s", "store.path='{db}'", "-s", "explainer.model='fancy:x'"],
        1,
        r"error: explainer\.model 'fancy:x': unknown LLM backend",
    ),
    Case(
        "investigate-newer-schema",
        ["investigate", "f", "-s", "store.path='{root}/newer.duckdb'"],
        1,
        r"error: .*schema version 99",
    ),
    Case("show-missing-db", ["show", "--db", "{root}/nope.duckdb"], 1, r"error: no database at .*nope\.duckdb"),
    Case(
        "runs-db-under-a-file", ["runs", "--db", "{root}/afile/x.duckdb"], 1, r"error: no database at .*afile/x\.duckdb"
    ),
    Case(
        "show-foreign-duckdb",
        ["show", "--db", "{root}/foreign.duckdb"],
        1,
        r"error: .*foreign\.duckdb is not an autointerp database",
    ),
    Case(
        "show-not-a-database",
        ["show", "--db", "{root}/not_a_db.duckdb"],
        1,
        r"error: .*not_a_db\.duckdb is not a DuckDB database file",
    ),
    # DuckDB's own words for a .csv: "Cannot launch in-memory database in read-only mode!"
    Case("export-from-a-csv", ["export", "--db", "{root}/table.csv"], 1, r"error: .*table\.csv is not a DuckDB"),
    Case(
        "show-unknown-run", ["show", "no-such-run", "--db", "{root}/current.duckdb"], 1, r"error: no run 'no-such-run'"
    ),
    Case(
        "investigate-unknown-feature",
        ["investigate", "x/y/1", "--run", "run-a", "-s", "store.path='{root}/current.duckdb'"],
        1,
        r"error: run run-a has no feature 'x/y/1'",
    ),
    # planted features
    Case(
        "planted-syntax-error",
        _run("features.kind='planted'", "features.path='{root}/planted_syntax.py'"),
        1,
        r"error: planted-feature file .*planted_syntax\.py:3: SyntaxError",
    ),
    Case(
        "planted-import-raises",
        _run("features.kind='planted'", "features.path='{root}/planted_import_raises.py'"),
        1,
        r"error: planted-feature file .* failed to load at .*planted_import_raises\.py:3: JSONDecodeError",
    ),
    Case(
        "planted-function-raises",
        _run("features.kind='planted'", "features.path='{root}/planted_raises.py'"),
        1,
        r"error: planted feature 'boom' raised ZeroDivisionError: division by zero at .*planted_raises\.py:4",
    ),
    Case(
        "planted-returns-nan",
        _run("features.kind='planted'", "features.path='{root}/planted_nan.py'"),
        1,
        r"error: planted feature 'nan' returned nan for token 0",
    ),
    Case(
        "planted-wrong-length",
        _run("features.kind='planted'", "features.path='{root}/planted_short.py'"),
        1,
        r"error: planted feature 'short' returned 1 values for 14 tokens",
    ),
    Case(
        "planted-without-list",
        _run("features.kind='planted'", "features.path='{root}/planted_none.py'"),
        1,
        r"error: .*must define PLANTED_FEATURES",
    ),
    Case(
        "planted-index",
        _run("features.kind='planted'", "features.indices=[500]"),
        1,
        r"error: planted feature index 500 does not exist",
    ),
    Case(
        "bench-planted-syntax-error",
        ["bench", "--planted", "{root}/planted_syntax.py", "--list"],
        1,
        r"error: planted-feature file .*:3: SyntaxError",
    ),
    Case("bench-unknown-feature", ["bench", "--feature", "nope"], 1, r"error: no planted feature named nope"),
    Case(
        "bench-unknown-explainer",
        ["bench", "--explainer", "fancy:x"],
        1,
        r"error: --explainer 'fancy:x': unknown LLM backend 'fancy'",
    ),
    Case(
        "bench-scorer-without-key",
        ["bench", "--scorer", "anthropic:claude-haiku"],
        1,
        r"error: --scorer .*set ANTHROPIC_API_KEY",
        NO_KEYS,
    ),
    Case(
        "bench-corpus-directory",
        ["bench", "--corpus", "{root}/corpus_dir"],
        1,
        r"error: corpus .*corpus_dir is a folder",
    ),
    Case(
        "bench-planted-nan",
        ["bench", "--planted", "{root}/planted_nan.py"],
        1,
        r"error: planted feature 'nan' returned nan",
    ),
    # directions
    Case(
        "direction-nan-row",
        _run("features.kind='direction'", "features.path='{root}/nan_rows.npy'", "features.count='all'"),
        1,
        r"error: direction row 2 of .*nan_rows\.npy holds NaN",
    ),
    Case(
        "direction-wrong-width",
        _run("features.kind='direction'", "features.path='{root}/narrow.npy'"),
        1,
        r"error: directions in .* are 64-wide .* must be \[n, 576\]$",
    ),
    Case(
        "direction-not-a-matrix",
        _run("features.kind='direction'", "features.path='{root}/flat.npy'"),
        1,
        r"error: .*flat\.npy holds a tensor of shape \(576,\); directions must be \[n, d\]$",
    ),
    # an empty matrix passed `check` and `run` "finished" with an empty table
    Case(
        "direction-file-without-rows",
        _check("features.kind='direction'", "features.path='{root}/no_rows.npy'"),
        1,
        r"error: .*no_rows\.npy holds no directions \(shape \(0, 576\)\); it needs at least one row$",
    ),
    Case(
        "direction-file-of-complex-numbers",
        _run("features.kind='direction'", "features.path='{root}/complex.npy'"),
        1,
        r"error: direction file .*complex\.npy cannot be read .*\(its values are complex64, not real numbers\)",
    ),
    # read only by header, NaN weights passed `check`; `run` stopped at collection
    Case(
        "sae-with-nan-weights",
        _check("features.kind='sae'", "features.path='{root}/sae_nan'"),
        1,
        r"error: .*sae_nan/sae_weights\.safetensors: W_enc holds NaN; retrain or re-export the dictionary$",
    ),
    Case(
        "sae-with-a-nan-jumprelu-threshold",
        _check("features.kind='sae'", "features.path='{root}/sae_jumprelu_nan'"),
        1,
        r"error: .*sae_jumprelu_nan/sae_weights\.safetensors: threshold holds NaN",
    ),
    Case(
        "sae-with-infinite-bias",
        _run("features.kind='sae'", "features.path='{root}/sae_inf'"),
        1,
        r"error: .*sae_inf/sae_weights\.safetensors: b_enc holds infinity",
    ),
    Case(
        "direction-safetensors-of-complex-numbers",
        _check("features.kind='direction'", "features.path='{root}/complex.safetensors'"),
        1,
        r"error: direction file .*complex\.safetensors holds torch\.complex64 values, not real numbers",
    ),
    Case(
        "direction-without-path",
        _run("features.kind='direction'"),
        1,
        r"error: features\.kind = 'direction' needs features\.path",
    ),
    Case(
        "direction-bad-hook",
        _run("features.kind='direction'", "features.path='{root}/narrow.npy'", "features.hook='resid.3'"),
        1,
        r"error: hook point 'resid\.3' is not understood",
    ),
    Case(
        "sae-without-files",
        _run("features.kind='sae'", "features.path='{root}/sae_empty'"),
        1,
        r"error: SAE folder .*sae_empty needs cfg\.json and sae_weights",
    ),
    Case(
        "sae-index",
        _run("features.kind='sae'", "features.path='{root}/sae_small'", "features.indices=[20]"),
        1,
        r"error: SAE latent index 20 does not exist: SAE latents are 0\.\.7$",
    ),
    Case(
        "sae-other-width",
        _run("features.kind='sae'", "features.path='{root}/sae_wide'"),
        1,
        r"error: the SAE reads 768-wide activations but smollm2-135m's residual stream is 576 wide",
    ),
    Case(
        "sae-unsupported-hook",
        _run("features.kind='sae'", "features.path='{root}/sae_attn'"),
        1,
        r"error: hook point 'blocks\.3\.hook_attn_out' is not supported",
    ),
    Case(
        "direction-unsupported-hook",
        _run("features.kind='direction'", "features.path='{root}/narrow.npy'", "features.hook='blocks.3.hook_attn'"),
        1,
        r"error: hook point 'blocks\.3\.hook_attn' is not supported",
    ),
    Case(
        "sae-missing-folder",
        _run("features.kind='sae'", "features.path='{root}/no_sae'"),
        1,
        r"error: SAE folder .*no_sae does not exist",
    ),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_input")
    _write_files(root)
    return root


def _fill(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line(
    case: Case, files: Path, server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {"root": str(files), "db": str(tmp_path / "fresh" / "run.duckdb"), "server": server}
    values["closed"] = str(_closed_port())
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, _fill(value, values))
    loaded_before = _load_subject_model.cache_info().currsize
    result = CliRunner().invoke(app, [_fill(arg, values) for arg in case.args])
    output = result.output
    first = output.splitlines()[0] if output else ""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == case.code, output
    assert re.search(case.first_line, first), output
    if case.code:
        assert len(output.splitlines()) == 1, output  # one line, no traceback
    assert SECRET not in output
    # the preflight failed before the long work: no model loaded, the flow never opened the store
    assert _load_subject_model.cache_info().currsize == loaded_before
    assert not (tmp_path / "fresh").exists()


def test_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


def test_error_output_is_not_read_as_markup(files: Path, tmp_path: Path) -> None:
    """Rich would drop `[d_sae, d_in]`-style text; the CLI prints errors without markup."""
    from autointerp.cli.app import error_line
    from autointerp.errors import FeatureError

    assert error_line(FeatureError("W_enc must be [d_sae, d_in]\nsecond line")) == (
        "error: W_enc must be [d_sae, d_in] second line"
    )
    overrides = [f"features.path='{files}/[d_sae, d_in].npy'", "features.kind='direction'"]
    overrides.append(f"store.path='{tmp_path}/x.duckdb'")
    result = CliRunner().invoke(app, ["run", *[part for o in overrides for part in ("-s", o)]])
    assert "[d_sae, d_in].npy does not exist" in result.output


@pytest.mark.slow  # loads the subject model and starts Prefect in a child process
def test_nan_found_during_collection_is_one_line_naming_feature_and_window(tmp_path: Path) -> None:
    """A planted function that passes the preflight's sample window but returns NaN on some text:
    what a user sees in a terminal (Prefect's own output included) is one line, and the run is failed."""
    planted = tmp_path / "nan_later.py"
    planted.write_text(
        "import math\nfrom autointerp.subject.planted import PlantedFeature\n\n"
        "def nan_on_the(tokens):\n    return [math.nan if t.strip() == 'the' else 0.0 for t in tokens]\n\n"
        "PLANTED_FEATURES = [PlantedFeature('nan_on_the', 'NaN on the word the', nan_on_the)]\n"
    )
    db = tmp_path / "r.duckdb"
    overrides = [f"store.path='{db}'", "features.kind='planted'", f"features.path='{planted}'"]
    overrides += ["corpus.max_windows=64", "corpus.window_tokens=16", "score.methods=['simulation']"]
    command = [sys.executable, "-m", "autointerp", "run", *[part for o in overrides for part in ("-s", o)]]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    progress = re.compile(r"^(collect|explain|score|experiment) .* \d+/\d+ ")  # progress bars, not errors
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip() and not progress.match(line)]
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(lines) == 1, lines
    assert re.fullmatch(
        r"error: feature planted/nan_on_the has a non-finite activation \(nan\) at token \d+ of window \d+:\d+ .*",
        lines[0],
    )
    run = Store(db).runs()[0]
    assert run["status"] == "failed" and "NonFiniteActivationError" in run["error"]
    assert Store(db).features(run["id"]) == []  # nothing stored for a feature with NaN values
