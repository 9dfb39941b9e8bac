"""Progress bars on stderr, shared by every CLI so they look and behave alike."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _NullBar:
    def advance(self, n: float = 1) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, task_id):
        self._progress = progress
        self._task_id = task_id

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._task_id, n)

    def update(self, **fields) -> None:
        """Change ``description``, ``total`` or ``completed`` of the bar."""
        self._progress.update(self._task_id, **fields)


@contextlib.contextmanager
def progress_bar(total: float, description: str, quiet: bool = False) -> Iterator[_Bar | _NullBar]:
    """A progress bar over ``total`` units on stderr; a no-op when ``quiet`` or ``total == 0``."""
    if quiet or not total:
        yield _NullBar()
        return
    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))
