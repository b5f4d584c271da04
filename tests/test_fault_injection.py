"""Fault injection: SIGKILL at random points, a read-only cache, a full disk.

* A multi-fold run on the demo dataset (ridge on the handcrafted encoder; 4 loso folds) is
  killed with SIGKILL at a random point drawn from a seed (during start-up, feature
  extraction, a fold, its MLflow logging or its checkpoint); a restart finishes it, its
  metrics equal those of an uninterrupted run, and no MLflow run is left RUNNING. The
  subprocess helpers are tests/test_resume.py's (which kills at one fixed point).
* A read-only feature cache and a full disk give exit code 2, one line naming the folder, and
  no result marked complete. As root (CI), chmod does not stop writes: the folder is then a
  real read-only / 8 KiB tmpfs mount when mounting is allowed, else the writes are made to
  fail with EACCES / ENOSPC in-process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stbench.cli.app import main
from test_resume import _start

#: 4 slides x 60 spots, 40 genes: 4 loso folds in a few seconds.
DEMO = ("dataset.n_spots=60", "dataset.n_genes=40", "encoder=handcrafted", "explain_genes=0")


def _cache_env(tmp_path_factory) -> dict[str, str]:
    return {"STBENCH_CACHE": str(tmp_path_factory.getbasetemp() / "feature-cache")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's result (in-process: same code, numbers and seeds as the CLI)."""
    from stbench.run.config import compose
    from stbench.run.runner import run

    tmp = tmp_path_factory.mktemp("reference")
    cfg = compose(["method=ridge", "dataset=demo", "split=loso", "genes.split=none", *DEMO,
                   f"tracking.dir={tmp}", "tracking.enabled=false",
                   f"cache.dir={_cache_env(tmp_path_factory)['STBENCH_CACHE']}"])
    result = run(cfg, progress=False)
    assert len(result["folds"]) == 4
    return result


def _mlflow_runs(tracking_dir: Path):
    from mlflow.tracking import MlflowClient

    from stbench.run.tracking import store_uri

    client = MlflowClient(store_uri(tracking_dir))
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _kill_at_random_point(tmp: Path, proc: subprocess.Popen, rng: random.Random) -> str:
    """SIGKILL ``proc`` a seeded delay after a seeded event: the run starting to record in
    MLflow (0 fits), or the k-th fold fit (1-3 fits)."""
    fits, db = tmp / "fits.log", tmp / "stbench-runs" / "mlflow.db"
    after_fits = rng.randint(0, 3)
    delay = rng.uniform(0.0, 0.8)
    recorded = db.stat().st_mtime_ns

    def reached() -> bool:
        if after_fits == 0:
            return db.stat().st_mtime_ns != recorded
        return fits.exists() and len(fits.read_text().splitlines()) >= after_fits

    deadline = time.time() + 300
    while proc.poll() is None and not reached() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    where = f"killed {delay:.2f} s after " + (f"fit {after_fits}" if after_fits else
                                               "the first MLflow write")
    if proc.poll() is not None:
        return where + " (the run had already finished)"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return where


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_point_then_restart_matches(tmp_path, tmp_path_factory, reference,
                                                         mlflow_template, seed):
    env = _cache_env(tmp_path_factory)
    (tmp_path / "stbench-runs").mkdir()
    shutil.copy(mlflow_template, tmp_path / "stbench-runs" / "mlflow.db")
    args = ("--json", "out.json", *DEMO)
    proc = _start(tmp_path, env, *args, dataset="demo")
    where = _kill_at_random_point(tmp_path, proc, random.Random(seed))
    out = tmp_path / "out.json"
    if out.exists():  # only ever complete (atomic write after the last fold), and right
        assert json.loads(out.read_text())["metrics"] == reference["metrics"], where
    fits_log = tmp_path / "fits.log"
    first = len(fits_log.read_text().splitlines()) if fits_log.exists() else 0
    skipped = any((tmp_path / "stbench-runs" / "checkpoints").rglob("result.json"))

    again = _start(tmp_path, env, *args, dataset="demo")
    _, err = again.communicate(timeout=400)
    assert again.returncode == 0, f"restart failed ({where}): {err}"
    result = json.loads(out.read_text())
    assert result["metrics"] == reference["metrics"], where
    assert [f["metrics"] for f in result["folds"]] == [f["metrics"] for f in reference["folds"]]
    # the restart refits exactly the folds without a checkpoint; at most one fold was fitted
    # and lost by the kill
    refits = len(fits_log.read_text().splitlines()) - first
    if skipped:
        assert refits == 0 and first == 4, where
    else:
        resumed = sum(f["resumed"] for f in result["folds"])
        assert refits == 4 - resumed and resumed <= first <= resumed + 1, where

    runs = _mlflow_runs(tmp_path / "stbench-runs")
    assert not [r for r in runs if r.info.status == "RUNNING"], where
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert any(r.info.status == "FINISHED" for r in parents), where
    assert all(r.data.tags["stbench.identity"] == result["identity"] for r in parents)


# --------------------------------------------------------------------------------------------
# Read-only cache, full disk
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """Mount a tmpfs at ``path`` (root only); yields whether it is mounted."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One tracking folder for the in-process runs below (creating an MLflow store is slow);
    each test records into its own experiment."""
    return tmp_path_factory.mktemp("fault-store")


def _run_demo(tmp: Path, capsys, tracking: Path, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["run", "--method", "ridge", "--dataset", "demo", "--no-progress",
                 "--json", str(tmp / "out.json"), f"tracking.dir={tracking}",
                 f"tracking.experiment={tmp.name}", *DEMO, *extra])
    return code, capsys.readouterr().err


def _assert_clean_failure(code: int, err: str, tmp: Path, store: Path, needle: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert not (tmp / "out.json").exists()
    assert not list(store.rglob("results/**/*.json")) and not list(store.rglob("result.json"))
    runs = [r for r in _mlflow_runs(store)
            if r.info.experiment_id == _experiment_id(store, tmp.name)]
    assert runs and all(r.info.status == "FAILED" for r in runs)


def _experiment_id(store: Path, name: str) -> str:
    from mlflow.tracking import MlflowClient

    from stbench.run.tracking import store_uri

    return MlflowClient(store_uri(store)).get_experiment_by_name(name).experiment_id


def _fail_cache_writes(monkeypatch, code: int) -> None:
    """Make the feature cache's file creation fail as the kernel would (in-process fallback)."""
    from types import SimpleNamespace

    import stbench.features.cache

    def mkstemp(*args, **kwargs):
        raise OSError(code, os.strerror(code), kwargs.get("dir"))

    monkeypatch.setattr(stbench.features.cache, "tempfile", SimpleNamespace(mkstemp=mkstemp))


@pytest.mark.parametrize("via", ["cache.dir", "STBENCH_CACHE"])
def test_read_only_cache_is_a_clean_error(tmp_path, capsys, monkeypatch, store, via):
    cache = tmp_path / "ro-cache"
    with _tmpfs(cache, "ro,size=1m") as mounted:
        if not mounted and os.geteuid() != 0:
            cache.chmod(0o500)
        elif not mounted:  # root without mount rights: chmod would not stop root
            _fail_cache_writes(monkeypatch, errno.EACCES)
        if via == "STBENCH_CACHE":
            monkeypatch.setenv("STBENCH_CACHE", str(cache))
        try:
            code, err = _run_demo(tmp_path, capsys, store,
                                  *([f"cache.dir={cache}"] if via == "cache.dir" else []))
        finally:
            if not mounted:
                cache.chmod(0o700)
    _assert_clean_failure(code, err, tmp_path, store, str(cache))
    assert "feature cache" in err


def test_full_disk_under_the_cache_is_a_clean_error(tmp_path, capsys, monkeypatch, store):
    cache = tmp_path / "tiny-cache"
    with _tmpfs(cache, "size=8k") as mounted:
        if not mounted:
            _fail_cache_writes(monkeypatch, errno.ENOSPC)
        code, err = _run_demo(tmp_path, capsys, store, f"cache.dir={cache}")
        if mounted:
            assert not list(cache.rglob("*.tmp")), "a failed write leaves no temporary file"
    _assert_clean_failure(code, err, tmp_path, store, str(cache))
    assert "No space left on device" in err


def test_full_disk_under_the_tracking_store_is_a_clean_error(tmp_path, capsys):
    runs = tmp_path / "runs"
    with _tmpfs(runs, "size=64k") as mounted:
        if not mounted:
            pytest.skip("needs root and tmpfs mounts (the cache tests cover the fallback)")
        code, err = _run_demo(tmp_path, capsys, runs)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "disk is full" in lines[0] or "no space left" in lines[0], err
    assert not (tmp_path / "out.json").exists()
