"""The result of a run: a typed record (:class:`RunResult`), its JSON form and atomic writing.

The schema is documented in ``docs/results.md``. Schema 1 readers ignore keys they do not know,
so fields are only ever added within a schema version.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from dataclasses import dataclass, field, fields
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


@dataclass
class RunResult:
    """One run of one method on one dataset over every fold of a split (schema 1).

    Attributes:
        method / method_kind / method_version / trained_on: What ran (``trained_on`` is
            "seen genes" for zero-shot methods, "all panel genes" for supervised ones).
        dataset / dataset_version / dataset_digest: The data, by name, card version and a
            sha256 of the sections read (no local path).
        split: ``{"name", "folds": [{"fold", "train", "val", "test", "genes", ...}]}``.
        genes: Panel kind, gene split, seen and unseen genes, what was evaluated.
        seed: The seed every RNG was seeded from.
        config: The resolved configuration, without local paths.
        inputs: Input files named by settings: ``{key: {"name", "sha256"}}``.
        folds: Per fold: metrics, counts, runtime, tuning, per-gene and per-slide PCC.
        best_params: Per fold, the tuned parameters (None when untuned).
        metrics / metric_levels: Means over folds, and the level each metric is computed at.
        features: The feature kinds the run consumed (image, nuclei, graph, gene_text).
        encoder: Image encoder name and weights digest, when images were encoded.
        representation: The gene representation, when the method read gene text: name,
            version, digest, kind, token states, ``missing`` mode and the panel genes it
            dropped (``n_dropped``, ``dropped``).
        identity: The run identity (configuration, data and code) used for resuming.
        extra: Keys this version does not know (kept when a file is read and written back).
    """

    method: str
    method_kind: str
    dataset: str
    split: dict
    genes: dict
    seed: int
    config: dict
    folds: list
    metrics: dict
    runtime_s: float
    schema: int = SCHEMA_VERSION
    stbench_version: str = ""
    git_sha: str | None = None
    method_version: str = ""
    trained_on: str = ""
    dataset_version: str = ""
    dataset_digest: str | None = None
    inputs: dict = field(default_factory=dict)
    preprocess: dict = field(default_factory=dict)
    best_params: list = field(default_factory=list)
    metric_levels: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    feature_cache: dict = field(default_factory=dict)
    features: list | None = None
    encoder: dict | None = None
    representation: dict | None = None
    identity: str | None = None
    extra: dict = field(default_factory=dict)

    #: Key order of the JSON form (the schema's reading order).
    ORDER = ("schema", "stbench_version", "git_sha", "method", "method_kind", "method_version",
             "trained_on", "dataset", "dataset_version", "dataset_digest", "split", "genes",
             "seed", "config", "inputs", "preprocess", "features", "encoder", "representation", "folds",
             "best_params", "metrics", "metric_levels", "runtime_s", "environment",
             "feature_cache", "identity")

    def to_dict(self) -> dict:
        """The JSON object, keys in schema order, unknown keys last."""
        data = {k: getattr(self, k) for k in self.ORDER
                if getattr(self, k) is not None or k in REQUIRED_KEYS}  # absent stays absent
        data.update(self.extra)
        return data

    def to_json(self) -> str:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "RunResult":
        """Validate (:func:`validate_result`) and type a result object."""
        validate_result(data)
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        return cls.from_dict(json.loads(text))


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
