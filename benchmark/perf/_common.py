"""Helpers shared by the ``stbench.perf`` scripts: timing, peak memory, two-column tables."""

from __future__ import annotations

import resource
import time
from typing import Any, Callable


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall seconds, process CPU seconds)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def two_column_table(rows: list[tuple[str, str]]) -> str:
    """``| key | value |`` lines, keys padded to one width."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)
