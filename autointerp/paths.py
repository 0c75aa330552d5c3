"""Whether an output path can be written, asked before the work that writes it (a benchmark, a training)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from autointerp.errors import ConfigError


def _new_files_refused(folder: Path) -> str | None:
    """Returns why no file can be created in the existing `folder` (read-only, or a pseudo-filesystem such as
    /proc, where a permission check alone says yes to root), or None when one can; leaves nothing behind."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".autointerp-probe-"):
            return None
    except OSError as exc:
        return f"{folder} does not take new files ({exc.strerror or exc})"


def output_problem(path: Path, *, folder: bool) -> str | None:
    """Returns why `path` cannot be written as a file (`folder` False) or filled as a folder (True): it is the
    other kind, a part above it is a file, or the nearest existing folder takes no new files. None when it
    can; creates nothing."""
    if path.exists():
        if folder and not path.is_dir():
            return f"{path} is a file, not a folder"
        if not folder and path.is_dir():
            return f"{path} is a folder, not a file"
        if not folder:  # written in place (/dev/null, a report): its folder need not take new files
            return None if os.access(path, os.W_OK) else f"{path} is not writable"
        return _new_files_refused(path)
    existing = next((p for p in path.parents if p.exists()), Path("."))
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    return _new_files_refused(existing)


def check_output_path(path: Path, option: str, *, folder: bool) -> None:
    """Raises ConfigError naming `option` when `path` cannot be written (`output_problem`), so a command
    refuses it before its work rather than losing that work at the end. Returns None."""
    problem = output_problem(path, folder=folder)
    if problem:
        raise ConfigError(f"cannot write {option} {path}: {problem}")
