"""Shared test fixtures: offline hub, isolated cache, the real shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# One compute thread per process: tests start parallel workers (sweeps, Optuna), and several
# multi-threaded processes on 2 cores spin-wait each other into 10x slowdowns.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``$STBENCH_SHARED`` or ``../shared``: real data, always present in CI (never skipped)."""
    path = Path(os.environ.get("STBENCH_SHARED", PROJECT_ROOT.parent / "shared"))
    assert path.is_dir(), f"shared data folder not found at {path}; set STBENCH_SHARED"
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in a temporary working directory (the MLflow store lands there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on 127.0.0.1 for the whole session (see tests/services.py)."""
    from services import postgres_server

    with postgres_server() as url:
        yield url
