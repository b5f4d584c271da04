"""Shared test fixtures: offline hub, isolated cache, real data and services, the tiny dataset.

Needs from outside the repository (the real data folder ``$STBENCH_SHARED``, Chromium,
PostgreSQL) skip their tests with a one-line reason when absent, and fail them instead under
``STBENCH_REQUIRE_REAL_DATA=1`` (CI; see ``tests/services.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# One compute thread per process: tests start parallel workers (sweeps, Optuna), and several
# multi-threaded processes on 2 cores spin-wait each other into 10x slowdowns.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    """``$STBENCH_SHARED``, else ``../shared`` beside the repository."""
    return Path(os.environ.get("STBENCH_SHARED") or PROJECT_ROOT.parent / "shared")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that asks for ``shared_dir`` is a ``real_data`` test, marked or not."""
    for item in items:
        if "shared_dir" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("real_data"):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The real data folder; skipped where absent (a fresh clone), failed under the CI switch."""
    from services import unavailable

    path = shared_path()
    if not (path / "data").is_dir():
        unavailable(f"real data folder not found at {path}: set STBENCH_SHARED to the shared "
                    "data folder (its data/ holds her2st, panels, fixtures)")
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
def chromium() -> str:
    """Headless Chromium's path (Debian ``chromium``); request it before any expensive work."""
    from services import chromium_path

    return chromium_path()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 for the whole session (see tests/services.py)."""
    from services import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow store, ``mlflow.db`` (creating its schema costs seconds: copy it)."""
    from mlflow.tracking import MlflowClient

    from stbench.run.tracking import store_uri

    folder = tmp_path_factory.mktemp("mlflow-template")
    MlflowClient(store_uri(folder)).search_experiments()
    return folder / "mlflow.db"


@pytest.fixture(scope="session")
def tiny() -> str:
    """The conformance kit's ``tiny`` dataset, registered; its name."""
    from helpers import register_tiny

    register_tiny()
    return "tiny"


@pytest.fixture
def tiny_cfg(tiny, tmp_path) -> Callable[..., object]:
    """``tiny_cfg(*overrides)``: a composed config of ``dataset=tiny`` under ``tmp_path``."""
    from helpers import tiny_config

    return partial(tiny_config, tmp_path)
