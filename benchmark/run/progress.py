"""Rich progress bars for every step that can take more than a second.

Wired: feature extraction and folds (the runner), epochs (``FitContext.progress``, through
``methods/_training.py``), tuning trials (:func:`stbench.run.tuning.tune`) and sweep jobs
(:func:`follow_jobs`, in :func:`stbench.run.sweep.run_sweep`). Bars are drawn on stderr only
when it is a terminal; in logs (a file, a pipe, CI) nothing is drawn.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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


def multirun_size(args: Sequence[str]) -> int:
    """How many jobs a Hydra multirun command line launches: the product of the number of
    comma-separated values of each ``key=a,b,c`` sweep argument (``hydra.*`` settings,
    bracketed lists and quoted values count once); 0 when it is not a multirun (``-m``)."""
    rest = list(args[3:] if len(args) > 2 and args[1] == "-m" else args)  # python -m MODULE
    if "-m" not in rest and "--multirun" not in rest:
        return 0
    total = 1
    for arg in rest:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        if key.lstrip("+~").startswith("hydra") or value[:1] in "[{'\"":
            continue
        total *= len([v for v in value.split(",") if v.strip()]) or 1
    return total


@contextmanager
def follow_jobs(summary: Path, total: int, enabled: bool | None = None,
                interval: float = 0.5) -> Iterator[None]:
    """A progress bar of sweep jobs, advanced by the lines each finished job appends to
    ``summary`` (``STBENCH_SWEEP_SUMMARY``); drawn only on a terminal (see
    :func:`progress_bars`)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total <= 0:
        yield
        return
    start = _count_lines(summary)
    stop = threading.Event()
    with progress_bars(True) as task:
        advance = task("sweep jobs", total)

        def watch() -> None:
            done = 0
            while True:
                now = _count_lines(summary) - start
                if now > done:
                    advance(now - done)
                    done = now
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0
