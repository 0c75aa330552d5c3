"""The results directory that shards and the parent share: paths, Parquet parts, shard states.

Layout under `<results_dir>/<store>/<run id>/`, where `<store>` is the DuckDB file's name and a hash
of its resolved path (`store_folder`), so two stores of one config keep apart:
    input/<stage>/<table>.parquet          the run's rows a stage's shards start from (parent writes)
    <stage>/shard-0003/try-1/<table>.parquet  rows a shard added (explanations, scores, llm_calls, ...)
    <stage>/shard-0003/try-1/state.pt         a collection shard's sampler state
    <stage>/shard-0003/try-1/result.json      the shard's tallies and part id; written last (done)
    <stage>/shard-0003/try-1/heartbeat        a counter the running shard rewrites every few seconds

Each attempt of a shard writes a folder of its own, so a lost attempt that still finishes cannot
mix its files with those of the attempt the parent ingests. Attempt numbers are claimed in the
store's shard ledger in one transaction, so two parents of one run never start the same attempt.

Every path goes through fsspec (`url_to_fs`), so a results directory on an object store (`s3://...`,
`gs://...`) works as a local one does; each file is written to a temporary name and moved into place,
so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from fsspec.core import url_to_fs


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


@dataclass(frozen=True)
class ResultsDir:
    """One run's folder in the shared results directory."""

    root: str
    """The run's folder: `<results_dir>/<run id>` (a path or fsspec URL)."""

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return url_to_fs(self.root)[0]

    def path(self, *parts: str) -> str:
        """Returns the filesystem path (no protocol) of a file under the run's folder."""
        return _join(url_to_fs(self.root)[1], *parts)

    def shard_dir(self, stage: str, shard: int, attempt: int) -> str:
        """Returns the folder of one attempt of a shard, relative to the run's folder."""
        return f"{stage}/shard-{shard:04d}/try-{attempt}"

    # bytes ------------------------------------------------------------------------------------

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Writes a file atomically (temporary name, then move)."""
        fs, target = self.fs, self.path(relative)
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        staging = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with fs.open(staging, "wb") as out:
            out.write(data)
        fs.mv(staging, target)

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open(self.path(relative), "rb") as file:
            return file.read()  # type: ignore[no-any-return]

    def exists(self, relative: str) -> bool:
        return bool(self.fs.exists(self.path(relative)))

    def remove(self, relative: str) -> None:
        """Removes a file or folder if it exists."""
        if self.exists(relative):
            self.fs.rm(self.path(relative), recursive=True)

    # typed files ------------------------------------------------------------------------------

    def write_json(self, relative: str, data: Any) -> None:
        self.write_bytes(relative, json.dumps(data, sort_keys=True).encode())

    def read_json(self, relative: str) -> Any:
        return json.loads(self.read_bytes(relative))

    def write_tables(self, folder: str, tables: dict[str, pa.Table]) -> None:
        """Writes each Arrow table as `<folder>/<table>.parquet`."""
        for name, table in tables.items():
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            self.write_bytes(f"{folder}/{name}.parquet", buffer.getvalue())

    def read_tables(self, folder: str) -> dict[str, pa.Table]:
        """Returns table name -> Arrow table of the Parquet files in `folder` (none: empty)."""
        fs, base = self.fs, self.path(folder)
        if not fs.exists(base):
            return {}
        tables = {}
        for path in sorted(fs.glob(f"{base}/*.parquet")):
            name = path.rsplit("/", 1)[1].removesuffix(".parquet")
            with fs.open(path, "rb") as file:
                tables[name] = pq.read_table(io.BytesIO(file.read()))
        return tables

    def write_state(self, relative: str, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.write_bytes(relative, buffer.getvalue())

    def read_state(self, relative: str) -> dict[str, Any]:
        return torch.load(io.BytesIO(self.read_bytes(relative)), weights_only=True)  # type: ignore[no-any-return]


def store_folder(results_root: str, store_path: str | os.PathLike[str]) -> str:
    """Returns the folder of one store's runs under a results directory:
    `<results_root>/<store file name>-<10 hex of a hash of its resolved path>`, so two stores of one
    config (one run id) never write into the same attempt folders, in one results directory or two."""
    path = Path(store_path).expanduser().resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return _join(str(results_root), f"{path.stem}-{digest}")


def results_dir(results_root: str, run_id: str) -> ResultsDir:
    """Returns the run's folder under a results directory (a path or fsspec URL)."""
    return ResultsDir(_join(str(results_root), run_id))
