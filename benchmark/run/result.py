"""The result JSON (schema 1; see DESIGN.md) and its atomic writing."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1


def git_sha() -> str | None:
    """The commit of the stbench source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays and paths -> plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def dumps(result: dict) -> str:
    return json.dumps(to_jsonable(result), indent=2, sort_keys=False) + "\n"


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


REQUIRED_KEYS = ("schema", "stbench_version", "git_sha", "method", "method_kind", "dataset",
                 "split", "genes", "seed", "config", "folds", "metrics", "runtime_s")


def validate_result(result: dict) -> None:
    """Check the schema-1 contract; raises ValueError naming the first problem."""
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ValueError(f"result JSON lacks keys {missing}")
    if result["schema"] != SCHEMA_VERSION:
        raise ValueError(f"unknown result schema {result['schema']}")
    if not result["folds"] or not all("metrics" in f for f in result["folds"]):
        raise ValueError("result JSON has no fold metrics")
    for f in result["split"]["folds"]:
        if not {"fold", "train", "val", "test"} <= set(f):
            raise ValueError("split.folds entries need fold, train, val, test")
