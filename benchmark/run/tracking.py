"""MLflow tracking: one parent run per (method, dataset, split), one child run per fold.

The default store is embedded: SQLite at ``<tracking.dir>/mlflow.db`` with artifacts in
``<tracking.dir>/artifacts`` (MLflow 3.17+ refuses the old ``./mlruns`` file store).
``tracking.uri=http://host:port`` (or any MLflow URI) points at a shared server instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stbench.errors import ConfigError

_PARAM_LIMIT = 6000


def store_uri(directory: str | Path) -> str:
    """The SQLite tracking URI of the embedded store in ``directory``."""
    return f"sqlite:///{Path(directory).resolve() / 'mlflow.db'}"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` with values as strings."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


@contextmanager
def _store_lock(directory: Path | None) -> Iterator[None]:
    """An exclusive file lock on the local store while it is initialised."""
    if directory is None:
        yield
        return
    import fcntl

    with open(directory / ".init.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Tracker:
    """Writes runs to MLflow through its client (explicit run ids, explicit statuses)."""

    def __init__(self, uri: str | None, directory: str, experiment: str) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import logging

        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

        self.local_dir = Path(directory).resolve()
        if uri:
            self.uri = uri
        else:
            try:
                self.local_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the tracking folder ({exc.strerror})",
                                  where=str(self.local_dir), fix="set tracking.dir=PATH") from exc
            self.uri = store_uri(self.local_dir)
        with _store_lock(None if uri else self.local_dir):
            # one process at a time creates the SQLite schema and the experiment
            self.client = MlflowClient(tracking_uri=self.uri)
            self.client.search_experiments(max_results=1)
            found = self.client.get_experiment_by_name(experiment)
            if found is not None:
                self.experiment_id = found.experiment_id
            else:
                location = None if uri else (self.local_dir / "artifacts").as_uri()
                self.experiment_id = self.client.create_experiment(experiment,
                                                                   artifact_location=location)

    def start(self, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        """Start a run (nested under ``parent`` when given) and return its id.

        Every run is tagged with the host and process that run it (``stbench.host``,
        ``stbench.pid``), so that :meth:`fail_stale` can tell a killed attempt from a live one.
        """
        tags = {**_owner_tags(), **tags}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:_PARAM_LIMIT]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def log_metric(self, run_id: str, name: str, value: float, step: int) -> None:
        self.client.log_metric(run_id, name, float(value), step=step)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(text, encoding="utf-8")
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(run_id, str(path), None if parent == "." else parent)

    def log_file(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def fail_stale(self, identity: str) -> int:
        """Mark RUNNING runs of an earlier, killed attempt with this identity as FAILED.

        Runs of a process still alive on this host (another worker sharing the study, or
        this process) are left alone; runs started elsewhere cannot be checked and are
        failed, as are runs without the owner tags.
        """
        running = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`stbench.identity` = '{identity}' and attributes.status = 'RUNNING'")
        stale = [run for run in running if not _owner_alive(run.data.tags)]
        for run in stale:
            children = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}' "
                              "and attributes.status = 'RUNNING'")
            for child in children:
                self.client.set_terminated(child.info.run_id, "FAILED")
            self.client.set_terminated(run.info.run_id, "FAILED")
        return len(stale)

    def finish(self, run_id: str, ok: bool) -> None:
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


def _owner_tags() -> dict[str, str]:
    import socket

    return {"stbench.host": socket.gethostname(), "stbench.pid": str(os.getpid())}


def _owner_alive(tags: dict[str, str]) -> bool:
    """Whether the process named by a run's owner tags still runs on this host."""
    import socket

    if tags.get("stbench.host") != socket.gethostname():
        return False
    try:
        pid = int(tags.get("stbench.pid", ""))
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    try:  # a killed process not yet reaped by its parent is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class NullTracker:
    """Used with ``tracking.enabled=false``: records nothing."""

    uri = None

    def start(self, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        return ""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
