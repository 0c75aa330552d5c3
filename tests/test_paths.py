"""Output paths judged before the work that writes them (`autointerp.paths`), on real files and folders."""

from __future__ import annotations

from pathlib import Path

from autointerp.paths import output_problem


def test_an_output_path_is_judged_without_creating_anything(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert output_problem(Path("/dev/null"), folder=False) is None  # an existing file is written in place
    assert output_problem(blocker, folder=False) is None
    assert output_problem(blocker, folder=True) == f"{blocker} is a file, not a folder"
    assert output_problem(blocker / "x.md", folder=False) == f"{blocker} is a file, not a folder"
    assert output_problem(tmp_path, folder=False) == f"{tmp_path} is a folder, not a file"
    assert output_problem(tmp_path, folder=True) is None
    assert output_problem(tmp_path / "new" / "deeper" / "r.md", folder=False) is None
    refused = output_problem(Path("/proc/autointerp-test/r.md"), folder=False)
    assert refused is not None and refused.startswith("/proc does not take new files")
    assert list(tmp_path.iterdir()) == [blocker]  # no folder made, no probe left behind
