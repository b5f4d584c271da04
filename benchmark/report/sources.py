"""Where a board's results come from: the local store, the committed results, named files, or
an MLflow tracking server.

By default ``stbench leaderboard --dataset D`` reads

1. the files and folders named with ``--results`` (highest precedence),
2. the local store ``<tracking.dir>/results/D/`` (``stbench-runs`` by default): every finished
   ``stbench run`` and every sweep job leaves its result JSON there,
3. the committed ``leaderboards/results/D/``.

A (method, configuration, seed) found in several sources is taken from the first source that
has it; within the local store, where reruns under a newer code version accumulate, the newest
file wins. The others are counted as superseded and left out. Two files of the same
(method, configuration, seed) among the named files, or within the committed folder, are
still refused (:func:`stbench.report.runs.select_board`).

``--from-mlflow URI`` reads the ``result.json`` artifact of every FINISHED parent run of D on
any MLflow tracking server (a team's shared server), newest first per run identity.

Where the MLflow store of a result is known (the local store's ``mlflow.db``, or the server),
each run is linked to its page in the MLflow UI.
"""

from __future__ import annotations

import tempfile
from typing import Any
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stbench.errors import UserError
from stbench.report.runs import Run, config_hash, load_run, load_runs

__all__ = ["Sources", "dedupe", "describe", "gather", "link_runs", "load_mlflow_runs",
           "publish_board"]

#: The UI ``stbench ui`` serves by default.
DEFAULT_UI = "http://127.0.0.1:5000"


@dataclass
class Sources:
    """The runs of one board and where they came from."""

    runs: list[Run]
    n_skipped: int = 0
    n_superseded: int = 0
    sources: list[str] = field(default_factory=list)
    store_uri: str | None = None
    ui_base: str | None = None


def _identity_key(r: Run) -> tuple[str, str, int]:
    return r.method, config_hash(r.data), r.seed


def dedupe(groups: Sequence[tuple[str, list[Run], bool]]) -> tuple[list[Run], int]:
    """Keep one run per (method, config hash, seed) across source groups.

    Args:
        groups: ``(name, runs, newest_wins)`` in precedence order; ``newest_wins`` keeps the
            most recent file within the group instead of keeping all (and letting the board
            refuse the duplicate).

    Returns:
        ``(runs, number superseded)``.
    """
    taken: set[tuple[str, str, int]] = set()
    out: list[Run] = []
    superseded = 0
    for _name, runs, newest_wins in groups:
        if newest_wins:
            runs = sorted(runs, key=_mtime, reverse=True)
        mine: set[tuple[str, str, int]] = set()
        for r in runs:
            key = _identity_key(r)
            if key in taken or (newest_wins and key in mine):
                superseded += 1
                continue
            mine.add(key)
            out.append(r)
        taken |= mine
    return out, superseded


def _mtime(r: Run) -> float:
    try:
        return r.path.stat().st_mtime
    except OSError:
        return 0.0


def gather(dataset: str, explicit: Sequence[str | Path] = (), store: str | Path | None =
           "stbench-runs", recorded: bool = True, ui_base: str | None = None) -> Sources:
    """The runs of ``dataset`` from the named files, the local store and the committed folder.

    Raises:
        UserError: No source exists (naming each place looked at and how to fill one).
    """
    committed = Path("leaderboards") / "results" / dataset
    local = Path(store) / "results" / dataset if store else None
    groups: list[tuple[str, list[Run], bool]] = []
    skipped, names = 0, []
    if explicit:
        runs, n = load_runs(list(explicit), dataset)
        groups.append(("--results", _tag(runs, "named"), False))
        skipped += n
        names += [str(p) for p in explicit]
    for folder, label, newest in ((local, "local store", True), (committed, "committed", False)):
        if folder is None or not folder.is_dir() or (folder is committed and not recorded):
            continue
        runs, n = load_runs([folder], dataset)
        groups.append((label, _tag(runs, label), newest))
        skipped += n
        names.append(str(folder))
    if not groups:
        where = ", ".join(str(p) for p in (local, committed if recorded else None) if p)
        raise UserError(f"no results to read for dataset {dataset!r}", where=where or None,
                        fix=f"run `stbench run --method M --dataset {dataset}` (or a sweep) "
                            "first, or pass --results DIR / --from-mlflow URI")
    runs, superseded = dedupe(groups)
    store_uri = None
    if local is not None and (Path(store) / "mlflow.db").exists():
        from stbench.run.tracking import store_uri as sqlite_uri

        store_uri = sqlite_uri(store)
    return Sources(runs, skipped, superseded, names, store_uri, ui_base or DEFAULT_UI)


def _tag(runs: list[Run], source: str) -> list[Run]:
    for r in runs:
        r.source = source
    return runs


def load_mlflow_runs(uri: str, dataset: str, experiment: str | None = None,
                     cache_dir: str | Path | None = None, ui_base: str | None = None) -> Sources:
    """The ``result.json`` of every FINISHED stbench parent run of ``dataset`` on ``uri``.

    Args:
        uri: Any MLflow tracking URI (``http://host:port``, ``sqlite:///...``).
        dataset: Dataset name (parent runs are tagged ``stbench.dataset``).
        experiment: Only this experiment (name); all experiments by default.
        cache_dir: Where the downloaded results are kept (a temporary folder by default).
        ui_base: The UI address for links; ``uri`` itself when it is http(s).

    Raises:
        UserError: The server cannot be reached, the experiment does not exist, or no
            finished run of ``dataset`` holds a result.
    """
    from stbench.run.tracking import client_for, finished_parent_runs, run_url

    client = client_for(uri)
    try:
        ids = None
        if experiment:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise UserError(f"no experiment {experiment!r} on the tracking server", where=uri,
                                fix="check --experiment (the runs' experiment is "
                                    f"stbench-{dataset} by default)")
            ids = [exp.experiment_id]
        parents = finished_parent_runs(client, dataset, ids)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any client failure: the server is the problem
        raise UserError(f"cannot read the MLflow tracking server ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]})", where=uri,
                        fix="check the URI and that the server runs") from None
    folder = Path(cache_dir or tempfile.mkdtemp(prefix="stbench-mlflow-"))
    folder.mkdir(parents=True, exist_ok=True)
    base = ui_base or (uri if uri.startswith(("http://", "https://")) else None)
    runs, seen = [], set()
    for p in parents:
        identity = p.data.tags.get("stbench.identity")
        if identity in seen:  # an older rerun of the same identity
            continue
        run = _download_result(client, p.info.run_id, folder)
        if run is None or run.data.get("dataset") != dataset:
            continue
        seen.add(identity)
        run.source = "mlflow"
        if base:
            run.mlflow_url = run_url(base, p.info.experiment_id, p.info.run_id)
        runs.append(run)
    if not runs:
        raise UserError(f"no finished run of dataset {dataset!r} with a result on the tracking "
                        "server", where=uri,
                        fix=f"run `stbench run --dataset {dataset} ... tracking.uri={uri}`")
    deduped, superseded = dedupe([("mlflow", runs, False)])
    return Sources(deduped, 0, superseded, [uri], uri, base)


def _download_result(client: Any, run_id: str, folder: Path) -> Run | None:
    """The run's ``result.json`` artifact loaded as a :class:`Run`, or ``None`` when absent."""
    dest = folder / run_id
    dest.mkdir(parents=True, exist_ok=True)
    try:
        path = Path(client.download_artifacts(run_id, "result.json", str(dest)))
    except Exception:  # noqa: BLE001 - a run without the artifact is skipped
        return None
    named = folder / f"{run_id}.json"
    path.replace(named)
    return load_run(named)


def link_runs(src: Sources) -> list[str]:
    """Attach MLflow UI links to the runs found in the local store (matched by run identity);
    returns the ids of the experiments holding the board's linked runs."""
    if src.store_uri and src.ui_base and src.store_uri.startswith("sqlite"):
        from stbench.run.tracking import client_for, finished_parent_runs, run_url

        by_identity: dict[str, list[Run]] = {}
        for r in src.runs:
            if r.identity:
                by_identity.setdefault(r.identity, []).append(r)
        for p in finished_parent_runs(client_for(src.store_uri)):
            for r in by_identity.get(p.data.tags.get("stbench.identity"), []):
                if not r.mlflow_url:
                    r.mlflow_url = run_url(src.ui_base, p.info.experiment_id, p.info.run_id)
    return sorted({u.split("/#/experiments/")[1].split("/")[0] for r in src.runs
                   if (u := r.mlflow_url) and "/#/experiments/" in u})


def publish_board(store_uri: str, experiment_ids: Sequence[str], markdown: str) -> list[str]:
    """Write the board (markdown) as the description of each experiment; returns their ids.

    Failures to write (a read-only server) are not errors: the board files are the product.
    """
    from stbench.run.tracking import client_for, set_description

    done = []
    client = client_for(store_uri)
    for eid in experiment_ids:
        try:
            set_description(client, eid, markdown)
            done.append(eid)
        except Exception:  # noqa: BLE001
            continue
    return done


def describe(src: Sources) -> str:
    """One line: what was read."""
    parts = [f"read {len(src.runs)} results from {', '.join(src.sources)}"]
    if src.n_superseded:
        parts.append(f"{src.n_superseded} superseded by a newer or higher-precedence copy")
    return "; ".join(parts)
