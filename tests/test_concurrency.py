"""Four processes at once on ONE MLflow SQLite store and ONE Optuna study.

tests/test_tuning.py has two workers sharing a study with tracking off; here four spawned
processes run the same tuned configuration with tracking ON, into the same ``tracking.dir``
(MLflow's SQLite store, created concurrently) and the same Optuna storage. Afterwards nothing
is lost or duplicated: one parent run per process with exactly one fold run, one MLflow trial
run per finished trial of the study, every run FINISHED, and the study holds exactly
``n_trials`` finished trials (surplus asks are marked and never run).
"""

from __future__ import annotations

import multiprocessing as mp
import os

import optuna
import pytest

from stbench.run.runner import run
from helpers import tiny_config as _cfg  # a plain function: the spawned workers call it

N_WORKERS = 4
N_TRIALS = 8
#: One outer fold (one study), fresh runs in every process (resume=false), cheap features.
OVERRIDES = ("method=ridge", "genes.split=none", "split=holdout", "split.test=[T3]",
             "encoder=handcrafted", "explain_genes=0", "resume=false")


def _worker(tmp_path):
    result = run(_cfg(tmp_path, *OVERRIDES, f"tuning.n_trials={N_TRIALS}"), progress=False)
    return {"pid": os.getpid(), "identity": result["identity"],
            "run_id": result["mlflow"]["run_id"], "tuning": result["folds"][0]["tuning"]}


@pytest.mark.slow
def test_four_processes_share_one_mlflow_store_and_one_study(tmp_path):
    # warm the feature cache (tracking off) so the four start tuning together
    run(_cfg(tmp_path, *OVERRIDES, "tracking.enabled=false"), progress=False)
    ctx = mp.get_context("spawn")
    with ctx.Pool(N_WORKERS) as pool:
        outs = pool.map(_worker, [tmp_path] * N_WORKERS, chunksize=1)
    assert len({o["pid"] for o in outs}) == N_WORKERS, "four distinct processes"
    assert len({o["identity"] for o in outs}) == 1

    storage = f"sqlite:///{tmp_path}/runs/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    assert {o["tuning"]["study"] for o in outs} == {summary.study_name}
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    real = [t for t in study.trials if not t.user_attrs.get("surplus")]
    surplus = [t for t in study.trials if t.user_attrs.get("surplus")]
    assert sorted(t.state.name for t in real) == ["COMPLETE"] * N_TRIALS
    assert all(t.state.name == "FAIL" for t in surplus)
    assert len({t.number for t in study.trials}) == len(study.trials)

    from mlflow.tracking import MlflowClient

    from stbench.run.tracking import store_uri

    client = MlflowClient(store_uri(tmp_path / "runs"))
    (exp,) = [e for e in client.search_experiments() if e.name == "stbench-tiny"]
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert sorted({r.info.status for r in runs}) == ["FINISHED"]
    by_id = {r.info.run_id: r for r in runs}
    assert len(by_id) == len(runs)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    folds = [r for r in runs if "stbench.fold" in r.data.tags]
    trials = [r for r in runs if "stbench.trial" in r.data.tags]
    assert len(parents) + len(folds) + len(trials) == len(runs)
    assert sorted(r.info.run_id for r in parents) == sorted(o["run_id"] for o in outs)
    # exactly one fold run under each parent
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in folds) == \
        sorted(o["run_id"] for o in outs)
    # one MLflow run per finished trial: none lost, none recorded twice
    fold_ids = {r.info.run_id for r in folds}
    assert all(r.data.tags["mlflow.parentRunId"] in fold_ids for r in trials)
    assert sorted(int(r.data.tags["stbench.trial"]) for r in trials) == \
        sorted(t.number for t in real)
    for r in trials:
        (t,) = [t for t in real if t.number == int(r.data.tags["stbench.trial"])]
        assert r.data.metrics["val_pcc_mean"] == pytest.approx(t.value)
    # every process ran the best configuration the study had when it finished
    for o in outs:
        assert 1 <= o["tuning"]["n_complete"] <= N_TRIALS


def test_fail_stale_spares_runs_of_live_processes(tmp_path):
    """A worker starting a run must not mark its live peers' runs FAILED, only dead ones'."""
    import socket
    import subprocess
    import sys

    from stbench.run.tracking import Tracker

    tracker = Tracker(None, str(tmp_path / "runs"), "stale")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        host = socket.gethostname()
        owners = {"mine": {}, "peer": {"stbench.host": host, "stbench.pid": str(peer.pid)},
                  "killed": {"stbench.host": host, "stbench.pid": str(dead.pid)},
                  "elsewhere": {"stbench.host": host + "-other", "stbench.pid": "1"}}
        ids = {name: tracker.start(name, {"stbench.identity": "X", **tags})
               for name, tags in owners.items()}
        other = tracker.start("other identity", {"stbench.identity": "Y",
                                                 "stbench.pid": str(dead.pid)})
        child = tracker.start("fold", {"stbench.identity": "X"}, parent=ids["killed"])
        assert tracker.fail_stale("X") == 2
        status = {name: tracker.client.get_run(i).info.status for name, i in ids.items()}
        assert status == {"mine": "RUNNING", "peer": "RUNNING", "killed": "FAILED",
                          "elsewhere": "FAILED"}
        assert tracker.client.get_run(child).info.status == "FAILED"
        assert tracker.client.get_run(other).info.status == "RUNNING"
    finally:
        peer.kill()
        peer.wait()
