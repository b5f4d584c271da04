"""MLflow tracking: one parent run per (method, dataset, split), one child run per fold.

The default store is embedded: SQLite at ``<tracking.dir>/mlflow.db`` with artifacts in
``<tracking.dir>/artifacts`` (MLflow 3.17+ refuses the old ``./mlruns`` file store).
``tracking.uri=http://host:port`` (or any MLflow URI) points at a shared server instead.

The experiment is set up as a leaderboard: its kind tag (``mlflow.experimentKind``) says
"custom model development", so the MLflow UI opens it on the runs table rather than the GenAI
overview; a saved view (experiment tag ``mlflow.sharedViewState.<VIEW_KEY>``) sorts the runs
by ``pcc_mean``, descending, with the key metrics and tags as columns
(:func:`leaderboard_url`); parent runs carry the row's tags, the metrics and the dataset as an
MLflow dataset input (:meth:`Tracker.record_result`); ``stbench leaderboard`` writes the board
into the experiment's description (:func:`set_description`).
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

#: Experiment tag read by the MLflow 3 UI to choose the experiment's landing page.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: A model-training experiment (the UI's "custom model development"): lands on the runs table.
EXPERIMENT_KIND = "custom_model_development"
#: The experiment description shown by the UI (markdown).
NOTE_TAG = "mlflow.note.content"
#: Key of the saved runs-table view (``?viewStateShareKey=...``).
VIEW_KEY = "stbench-leaderboard"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
#: Metrics shown as columns of the saved view (those a run lacks stay empty).
KEY_METRICS = ("pcc_mean", "pcc_specific_mean", "pcc_pooled_mean", "pcc_median",
               "spearman_mean", "mse", "runtime_s")
KEY_TAGS = ("stbench.method", "stbench.label", "stbench.kind", "stbench.split",
            "stbench.gene_split", "stbench.seed", "stbench.config_hash")
#: Search filter of the saved view: parent runs only (the ones :meth:`Tracker.record_result`
#: tagged), not their folds and tuning trials.
PARENT_FILTER = "tags.`stbench.config_hash` LIKE '%'"
#: The experiment description holds at most this many characters (MLflow allows 20000).
NOTE_LIMIT = 19000


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
            set_up_leaderboard(self.client, self.experiment_id)

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

    def record_result(self, run_id: str, result: dict) -> None:
        """What a finished parent run shows in the leaderboard view: the row's tags
        (:func:`result_tags`), the run's metrics and runtime, and the dataset input."""
        from mlflow.entities import RunTag

        metrics = {k: v for k, v in (result.get("metrics") or {}).items()
                   if isinstance(v, (int, float)) and v is not None}
        metrics["runtime_s"] = float(result.get("runtime_s") or 0.0)
        self.log_metrics(run_id, metrics)
        tags = [RunTag(k, v) for k, v in result_tags(result).items()]
        self.client.log_batch(run_id, tags=tags)
        self.client.log_inputs(run_id, datasets=[dataset_input(result)])


def set_up_leaderboard(client: Any, experiment_id: str) -> None:
    """Mark an experiment as a model-training leaderboard (kind tag, unless someone chose
    another kind) and (re)write its saved runs-table view."""
    exp = client.get_experiment(experiment_id)
    if not exp.tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    view = view_state()
    if exp.tags.get(VIEW_TAG_PREFIX + VIEW_KEY) != view:
        client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + VIEW_KEY, view)


def view_state() -> str:
    """The saved runs-table view: finished runs of whole methods (parent runs, which carry a
    config hash; folds and trials are their children), sorted by ``pcc_mean`` descending, key
    columns shown."""
    columns = (["attributes.`Dataset`"] + [f"metrics.`{m}`" for m in KEY_METRICS]
               + [f"tags.`{t}`" for t in KEY_TAGS])
    return json.dumps({"searchFilter": PARENT_FILTER, "orderByKey": "metrics.`pcc_mean`",
                       "orderByAsc": False, "startTime": "ALL", "lifecycleFilter": "Active",
                       "datasetsFilter": [], "modelVersionFilter": "All Runs",
                       "selectedColumns": columns, "runListHidden": False,
                       "viewMaximized": False})


def leaderboard_url(ui_base: str, experiment_id: str) -> str:
    """The UI address of the experiment's runs in the saved leaderboard view, in the UI's
    model-training mode (MLflow 3.17 chooses an experiment's landing page from that mode)."""
    return (f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning")


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """The UI address of one run."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def result_tags(result: dict) -> dict[str, str]:
    """The tags of a finished parent run: method, kind, split, gene split, seed, config hash
    (the board's row identity, :func:`stbench.report.runs.config_hash`) and dataset digest."""
    from stbench.report.board import default_label
    from stbench.report.runs import config_hash

    genes = result.get("genes") or {}
    tags = {"stbench.method": str(result.get("method")),
            "stbench.label": default_label(result),
            "stbench.kind": str(result.get("method_kind")),
            "stbench.dataset": str(result.get("dataset")),
            "stbench.split": str((result.get("split") or {}).get("name")),
            "stbench.gene_split": str(genes.get("gene_split")),
            "stbench.seed": str(result.get("seed")),
            "stbench.config_hash": config_hash(result),
            "stbench.evaluated_on": str(genes.get("evaluated_on"))}
    if result.get("identity"):
        tags["stbench.identity"] = str(result["identity"])
    if result.get("dataset_digest"):
        tags["stbench.dataset_digest"] = str(result["dataset_digest"])
    return tags


def dataset_input(result: dict) -> Any:
    """The dataset of a result as an MLflow dataset input (name, digest, source), so the
    runs table's Dataset column names it."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    name = str(result.get("dataset"))
    version = str(result.get("dataset_version") or "")
    digest = str(result.get("dataset_digest") or "")
    source = {"stbench_dataset": name, "version": version, "sha256": digest or None}
    profile = {"sections": sorted({s for f in (result.get("split") or {}).get("folds") or []
                                   for k in ("train", "val", "test") for s in f.get(k, [])}),
               "panel_genes": (result.get("genes") or {}).get("n_panel")}
    ds = Dataset(name=name, digest=(digest or version or "unknown")[:36],
                 source_type="stbench", source=json.dumps(source), schema=None,
                 profile=json.dumps(profile))
    return DatasetInput(ds, tags=[InputTag("mlflow.data.context", "benchmark")])


def client_for(uri: str) -> Any:
    """An MLflow client of ``uri`` with MLflow's own logging quietened."""
    import logging

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # a wrong address fails in seconds, not after MLflow's default two minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def finished_parent_runs(client: Any, dataset: str | None = None,
                         experiment_ids: list[str] | None = None) -> list[Any]:
    """FINISHED stbench parent runs (those tagged with an identity), newest first."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    flt = "attributes.status = 'FINISHED' and tags.`stbench.identity` LIKE '%'"
    if dataset:
        flt += f" and tags.`stbench.dataset` = '{dataset}'"
    out, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=flt, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        out.extend(r for r in page if "mlflow.parentRunId" not in r.data.tags)
        token = page.token
        if not token:
            return out


def set_description(client: Any, experiment_id: str, markdown: str) -> None:
    """Write ``markdown`` (cut to :data:`NOTE_LIMIT` characters) as the experiment's
    description."""
    if len(markdown) > NOTE_LIMIT:
        markdown = markdown[: NOTE_LIMIT - 60].rsplit("\n", 1)[0] + (
            "\n\n(cut to fit MLflow's description limit: see the full board)\n")
    client.set_experiment_tag(experiment_id, NOTE_TAG, markdown)


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
