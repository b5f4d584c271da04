"""Rich progress bars for every step that can take more than a second."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@contextmanager
def progress_bars(enabled: bool | None = None) -> Iterator[Callable[[str, int], Callable[..., None]]]:
    """Yield ``task(description, total) -> advance(n=1)``, drawing bars on stderr.

    Args:
        enabled: Force bars on/off; by default on when stderr is a terminal.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda description, total: (lambda n=1: None)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bars:

        def task(description: str, total: int) -> Callable[..., None]:
            task_id = bars.add_task(description, total=total)

            def advance(n: int = 1) -> None:
                bars.advance(task_id, n)

            return advance

        yield task
