"""Progress bars for long steps (rich), quiet when output is not a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress_bar(description: str, total: int | None, unit: str = "") -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; shows a bar on a terminal, nothing elsewhere (no refresh thread either: at
    thousands of LLM calls a second its redraws cost more CPU than the calls)."""
    progress = Progress(
        TextColumn(f"[bold]{description}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        transient=False,
        refresh_per_second=4,
        disable=not Console().is_terminal,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
