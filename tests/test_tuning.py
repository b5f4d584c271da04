import json
import multiprocessing as mp

import optuna
import pytest

from helpers import tiny_config as _cfg  # a plain function: the spawned workers call it
from stbench.run.runner import run


@pytest.mark.slow
def test_tuning_records_best_params_and_nested_trials(tmp_path):
    result = run(_cfg(tmp_path, "method=ridge", "genes.split=none", "tuning.n_trials=3"),
                 progress=False)
    assert len(result["best_params"]) == 3
    for fold in result["folds"]:
        assert fold["tuning"]["n_complete"] == 3
        assert set(fold["tuning"]["best_params"]) == {"alpha", "n_components"}
    from mlflow.tracking import MlflowClient

    from stbench.run.tracking import store_uri

    client = MlflowClient(store_uri(tmp_path / "runs"))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trials = [r for r in runs if "stbench.trial" in r.data.tags]
    assert len(trials) == 9
    fold_ids = {r.info.run_id for r in runs if "stbench.fold" in r.data.tags}
    assert all(r.data.tags["mlflow.parentRunId"] in fold_ids for r in trials)


def test_tuning_resumes_a_study(tmp_path):
    cfg = _cfg(tmp_path, "method=ridge", "genes.split=none", "split=holdout", "split.test=[T3]",
               "tuning.n_trials=2", "tracking.enabled=false")
    run(cfg, progress=False)
    cfg4 = _cfg(tmp_path, "method=ridge", "genes.split=none", "split=holdout", "split.test=[T3]",
                "tuning.n_trials=4", "tracking.enabled=false")
    result = run(cfg4, progress=False)
    # same study name (n_trials is not part of its identity): 2 old + 2 new trials
    assert result["folds"][0]["tuning"]["n_complete"] == 4
    storage = f"sqlite:///{tmp_path}/runs/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.n_trials == 4


def _worker(args):
    tmp_path, n = args
    cfg = _cfg(tmp_path, "method=ridge", "genes.split=none", "split=holdout", "split.test=[T3]",
               f"tuning.n_trials={n}", "tracking.enabled=false")
    return run(cfg, progress=False)["folds"][0]["tuning"]["n_complete"]


@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates(tmp_path):
    # warm the feature cache so both workers start tuning at once
    _worker((tmp_path, 1))
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        counts = pool.map(_worker, [(tmp_path, 8), (tmp_path, 8)])
    storage = f"sqlite:///{tmp_path}/runs/optuna.db"
    study_names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert len(study_names) == 1, "both workers must share one study"
    study = optuna.load_study(study_name=study_names[0], storage=storage)
    real = [t for t in study.trials if not t.user_attrs.get("surplus")]
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in real) == 8
    numbers = [t.number for t in real]
    assert len(numbers) == len(set(numbers))
    assert max(counts) == 8


@pytest.mark.slow
def test_postgres_storage_is_shared_by_two_workers(tmp_path, postgres_url):
    """The same study in a real PostgreSQL database, driven by two processes at once."""
    import sqlalchemy

    db = f"stbench_{abs(hash(str(tmp_path))) % 10**8}"
    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    url = postgres_url.rsplit("/", 1)[0] + "/" + db
    _worker_pg((tmp_path, 1, url))
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_worker_pg, [(tmp_path, 6, url), (tmp_path, 6, url)])
    (summary,) = optuna.get_all_study_summaries(url)
    study = optuna.load_study(study_name=summary.study_name, storage=url)
    real = [t for t in study.trials if not t.user_attrs.get("surplus")]
    assert sum(t.state.name == "COMPLETE" for t in real) == 6
    engine.dispose()


def _worker_pg(args):
    tmp_path, n, url = args
    cfg = _cfg(tmp_path, "method=ridge", "genes.split=none", "split=holdout", "split.test=[T3]",
               f"tuning.n_trials={n}", f"tuning.storage={url}", "tracking.enabled=false",
               "resume=false")
    return run(cfg, progress=False)["folds"][0]["tuning"]["n_complete"]
