"""A content-addressed on-disk cache of arrays.

Keys hash everything that determines the value (image digest, spot coordinates, patch size,
encoder name and weight digest, code version), so a change in any input recomputes and
nothing stale is returned. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stbench.errors import ConfigError


def default_cache_dir() -> Path:
    """``$STBENCH_CACHE`` or ``~/.cache/stbench``."""
    env = os.environ.get("STBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stbench"


def cache_key(**parts: object) -> str:
    """A sha256 over the JSON of ``parts`` (arrays hashed by dtype, shape and bytes)."""
    h = hashlib.sha256()
    for name in sorted(parts):
        value = parts[name]
        h.update(name.encode())
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()


class ArrayCache:
    """Arrays stored as ``<dir>/<kind>/<key[:2]>/<key>.npy``."""

    def __init__(self, directory: str | Path | None = None, enabled: bool = True) -> None:
        self.dir = Path(directory) if directory else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, key: str) -> Path:
        return self.dir / kind / key[:2] / f"{key}.npy"

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached array for ``key`` or compute, store and return it."""
        if not self.enabled:
            self.misses += 1
            return compute()
        path = self.path(kind, key)
        if path.exists():
            try:
                value = np.load(path, allow_pickle=False)
                self.hits += 1
                return value
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a corrupt entry is recomputed
        self.misses += 1
        value = compute()
        self._write(path, value)
        return value

    def _write(self, path: Path, value: np.ndarray) -> None:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()  # np.save on a full disk reports a short write, not ENOSPC
            np.save(buffer, np.asarray(value), allow_pickle=False)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(buffer.getbuffer())
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise ConfigError(
                f"cannot write to the feature cache ({exc.strerror or exc})",
                where=str(self.dir),
                fix="free disk space, fix permissions, or set cache.dir=PATH (or cache.enabled=false)",
            ) from exc

    def summary(self) -> list[tuple[str, int, int]]:
        """(kind, entries, bytes) for every kind in the cache."""
        rows = []
        if self.dir.is_dir():
            for kind in sorted(p for p in self.dir.iterdir() if p.is_dir()):
                files = list(kind.rglob("*.npy"))
                rows.append((kind.name, len(files), sum(f.stat().st_size for f in files)))
        return rows

    def clear(self, kind: str | None = None) -> int:
        """Delete every entry (or those of ``kind``); returns how many were removed."""
        import shutil

        removed = 0
        if not self.dir.is_dir():
            return 0
        for folder in sorted(p for p in self.dir.iterdir() if p.is_dir()):
            if kind is None or folder.name == kind:
                removed += sum(1 for _ in folder.rglob("*.npy"))
                shutil.rmtree(folder)
        return removed
