"""A killed run resumes from its last finished fold and ends with the same numbers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import os, sys, time
    sys.path.insert(0, os.environ["STBENCH_TESTS_DIR"])
    from helpers import register_tiny
    from stbench.plugins import METHODS
    from stbench.methods.ridge import Ridge

    class SlowRidge(Ridge):
        meta = Ridge.meta.__class__(**{**Ridge.meta.__dict__, "name": "slow_ridge"})
        def fit(self, train, val, ctx):
            with open(os.environ["FIT_LOG"], "a") as fh:
                fh.write(",".join(s.name for s in train.slides) + "\\n")
            super().fit(train, val, ctx)
            if os.environ.get("HANG_AFTER_FITS"):
                n = sum(1 for _ in open(os.environ["FIT_LOG"]))
                if n >= int(os.environ["HANG_AFTER_FITS"]):
                    open(os.environ["FIT_LOG"] + ".hang", "w").close()
                    time.sleep(600)

    register_tiny()
    METHODS.register("slow_ridge", SlowRidge)
    from stbench.cli.app import main
    sys.exit(main(sys.argv[1:]))
''')


def _start(tmp_path, env_extra, *args, dataset="tiny"):
    """``stbench run --method slow_ridge`` in a subprocess (also used by test_fault_injection)."""
    script = tmp_path / "runner.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, FIT_LOG=str(tmp_path / "fits.log"),
               STBENCH_TESTS_DIR=str(Path(__file__).parent), **env_extra)
    return subprocess.Popen([sys.executable, str(script), "run", "--method", "slow_ridge",
                             "--dataset", dataset, "--no-progress", "genes.split=none", *args],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(path, proc, timeout=240):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "run did not reach the hang point"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny) -> dict:
    """The uninterrupted run's result, once for the module (in-process: the same code, numbers
    and seeds as the subprocess; ``slow_ridge`` fits as ``ridge`` does)."""
    from helpers import tiny_config
    from stbench.run.runner import run

    tmp = tmp_path_factory.mktemp("resume-reference")
    return run(tiny_config(tmp, "method=ridge", "genes.split=none", "tracking.enabled=false"),
               progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_and_matches_uninterrupted(tmp_path, sig, reference, mlflow_template):
    (tmp_path / "stbench-runs").mkdir()
    shutil.copy(mlflow_template, tmp_path / "stbench-runs" / "mlflow.db")
    proc = _start(tmp_path, {"HANG_AFTER_FITS": "2"}, "--json", "out.json")
    _wait_for(tmp_path / "fits.log.hang", proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not (tmp_path / "out.json").exists()
    fits_before = (tmp_path / "fits.log").read_text().splitlines()
    assert len(fits_before) == 2

    again = _start(tmp_path, {}, "--json", "out.json")
    assert again.wait(timeout=300) == 0, again.communicate()
    fits = (tmp_path / "fits.log").read_text().splitlines()
    # fold 0 was finished before the kill and is not recomputed; folds 1 and 2 are
    assert len(fits) == 2 + 2
    result = json.loads((tmp_path / "out.json").read_text())
    assert [f["resumed"] for f in result["folds"]] == [True, False, False]
    assert result["metrics"] == reference["metrics"]
    assert [f["metrics"] for f in result["folds"]] == [f["metrics"] for f in reference["folds"]]

    from mlflow.tracking import MlflowClient

    from stbench.run.tracking import store_uri

    client = MlflowClient(store_uri(tmp_path / "stbench-runs"))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`stbench.method` = 'slow_ridge'")
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FAILED", "FINISHED"]


def test_completed_identity_is_skipped_and_resume_false_reruns(tiny_cfg):
    from stbench.run.runner import run

    base = ["method=ridge", "genes.split=none", "tracking.enabled=false"]
    first = run(tiny_cfg(*base), progress=False)
    second = run(tiny_cfg(*base), progress=False)
    assert "skipped" in second and second["metrics"] == first["metrics"]
    other = run(tiny_cfg(*base, "method.alpha=5.0"), progress=False)
    assert "skipped" not in other and other["identity"] != first["identity"]
    forced = run(tiny_cfg(*base, "resume=false"), progress=False)
    assert "skipped" not in forced and forced["metrics"] == first["metrics"]
