"""Run identity and fold checkpoints: a killed run resumes from its last finished fold.

The identity hashes everything that determines a run's numbers: method name and version,
the resolved configuration (less where records go: ``tracking``, ``cache``, ``tuning.storage``),
dataset name and version, and the code version (stbench version and git commit). Finished folds
are written atomically under ``<tracking.dir>/checkpoints/<identity>/``; a finished run also
leaves its result there, so a sweep skips it, and never reuses it under another identity.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig

import stbench
from stbench.run.config import to_container
from stbench.run.result import dumps, git_sha, write_atomic

FOLD_FORMAT = 1


def identity_config(cfg: DictConfig) -> dict:
    """The part of the configuration that can change results."""
    resolved = to_container(cfg)
    resolved.pop("tracking", None)
    resolved.pop("cache", None)
    resolved.pop("resume", None)
    resolved.pop("threads", None)
    resolved.pop("explain_genes", None)
    if isinstance(resolved.get("tuning"), dict):
        resolved["tuning"] = {k: v for k, v in resolved["tuning"].items() if k != "storage"}
    return resolved


def run_identity(cfg: DictConfig, method_version: str, dataset_version: str) -> str:
    """A sha256 identifying the run's configuration, data version and code version."""
    payload = {"method": cfg.method.name, "method_version": method_version,
               "dataset": cfg.dataset.name, "dataset_version": dataset_version,
               "config": identity_config(cfg),
               "code": {"stbench": stbench.__version__, "git": git_sha()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class RunCheckpoint:
    """Finished folds and the final result of one run identity."""

    def __init__(self, root: str | Path, identity: str) -> None:
        self.identity = identity
        self.dir = Path(root) / "checkpoints" / identity[:24]

    def _fold_path(self, index: int) -> Path:
        return self.dir / f"fold-{index:03d}.json"

    def _read(self, path: Path) -> dict | None:
        """A JSON record of this identity, or None (missing, torn or another identity's)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return data if data.get("identity") == self.identity else None

    def load_fold(self, index: int) -> dict | None:
        """A finished fold, or None."""
        data = self._read(self._fold_path(index))
        return data["fold"] if data is not None and data.get("format") == FOLD_FORMAT else None

    def save_fold(self, index: int, fold: dict) -> None:
        write_atomic(self._fold_path(index),
                     dumps({"format": FOLD_FORMAT, "identity": self.identity, "fold": fold}))

    def load_result(self) -> dict | None:
        """The result of a finished run with this identity, or None."""
        return self._read(self.dir / "result.json")

    def save_result(self, result: dict) -> None:
        write_atomic(self.dir / "result.json", dumps(result))
