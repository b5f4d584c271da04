"""The sweep on a real engine: a single-node SLURM cluster (Debian ``slurm-wlm`` + ``munge`` on
127.0.0.1) runs 2 methods x 2 seeds on the demo through ``stbench sweep`` and the submitit
launcher; all four results reach the board. Skips where the packages are absent, except under
the CI switch (``STBENCH_REQUIRE_REAL_DATA=1``), where it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from services import unavailable
from slurm_service import cluster_logs, slurm_available, slurm_cluster

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def slurm_env():
    if not slurm_available():
        unavailable("SLURM is not installed (Debian: apt-get install slurm-wlm munge; "
                    ".ci/run does)")
    with slurm_cluster() as env:
        yield env


def _fresh_database(postgres_url: str, name: str) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def test_sweep_on_slurm_reaches_the_board(slurm_env, in_tmp, postgres_url):
    import optuna

    env = dict(slurm_env, HF_HUB_OFFLINE="1")
    storage = _fresh_database(postgres_url, f"stbench_slurm_{os.getpid()}")
    args = [sys.executable, "-m", "stbench", "sweep", "--methods", "textknn,bilinear",
            "--dataset", "demo", "--seeds", "0,1", "--launcher", "submitit_slurm",
            "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=20",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
            "encoder=handcrafted", "genes.representation=tfidf", "split=holdout",
            "dataset.n_spots=80", "dataset.n_genes=60",
            "split.test=[P2_B]", "threads=1", "tuning.n_trials=2", "tuning.seed=0",
            "split_seed=0", f"tuning.storage={storage}"]
    proc = subprocess.run(args, cwd=in_tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + cluster_logs(slurm_env)
    logs = sorted((in_tmp / "stbench-runs" / "sweeps").rglob("*_log.out"))
    assert len(logs) == 4, [str(p) for p in logs]  # four SLURM jobs, one per (method, seed)
    results = sorted((in_tmp / "stbench-runs" / "results" / "demo").glob("*.json"))
    assert len(results) == 4
    assert {(json.loads(p.read_text())["method"], json.loads(p.read_text())["seed"])
            for p in results} == {(m, s) for m in ("textknn", "bilinear") for s in (0, 1)}
    # the two seeds' jobs of a method share one PostgreSQL study per outer fold: 2 trials, not 4
    studies = optuna.get_all_study_summaries(storage)
    assert sorted(s.study_name.split("-")[0] for s in studies) == ["bilinear", "textknn"]
    for summary in studies:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        real = [t for t in study.trials if not t.user_attrs.get("surplus")]
        assert sum(t.state.name == "COMPLETE" for t in real) == 2, summary.study_name
    board = subprocess.run([sys.executable, "-m", "stbench", "leaderboard", "--dataset", "demo",
                            "--results", "stbench-runs/results/demo", "--out", "board"],
                           cwd=in_tmp, env=env, capture_output=True, text=True, timeout=300)
    assert board.returncode == 0, board.stderr
    markdown = next((in_tmp / "board").glob("*.md")).read_text()
    assert "bilinear" in markdown and "textknn" in markdown
    print("\n".join(p.read_text()[-300:] for p in logs[:1]))  # kept in the test log
