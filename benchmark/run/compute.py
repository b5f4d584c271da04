"""The process's compute settings, in one place: torch CPU threads, RNG seeds, the device.

A run pins torch's thread count (its ``threads`` setting) and seeds every RNG from ``seed``
before any work; encoders and methods read these settings and never undo them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from stbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def machine_threads() -> int:
    """CPUs this process may use (``STBENCH_NUM_THREADS`` overrides)."""
    env = os.environ.get("STBENCH_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_PINNED_THREADS: int | None = None


def pin_threads(n: int | None) -> None:
    """Fix torch's intra-op threads at ``n`` (the run's ``threads`` setting); None unpins.

    While pinned, :func:`configure_threads` (called when an encoder is built) leaves the
    count alone: building an encoder must not undo ``threads=1``, which on a small shared
    CPU makes training many times slower.
    """
    global _PINNED_THREADS
    _PINNED_THREADS = int(n) if n else None
    if _PINNED_THREADS:
        import torch

        torch.set_num_threads(_PINNED_THREADS)


def configure_threads() -> None:
    """``torch.set_num_threads`` to the machine's usable CPUs (once it differs), unless a run
    pinned the count (:func:`pin_threads`)."""
    import torch

    n = _PINNED_THREADS or machine_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily cap torch's intra-op threads at ``n`` (``None`` or < 1: leave as is)."""
    import torch

    if not n or n < 1:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(min(old, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def seed_everything(seed: int) -> "torch.Generator":
    """Seed Python, numpy's legacy global RNG and torch; return a CPU generator seeded with ``seed``."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def resolve_device(device: str, strict: bool = True) -> "torch.device":
    """``auto`` -> CUDA when present, else CPU.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        strict: An unavailable CUDA is a ConfigError when True, the CPU when False.
    """
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        if not strict:
            return torch.device("cpu")
        raise ConfigError(f"device {device!r} requested but CUDA is not available",
                          fix="use device=auto or device=cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}", fix="use auto, cpu or cuda") from exc
