"""Sweeps: a Hydra multirun of methods x seeds, skipped when complete, then a leaderboard."""

import json
import subprocess
import sys

import pytest
from services import dump_dom


def _stbench(*args, cwd, timeout=1500):
    return subprocess.run([sys.executable, "-m", "stbench", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.integration
def test_sweep_with_tuning_then_leaderboard_in_browser(in_tmp, chromium):
    # a small demo on the handcrafted encoder: the sweep, its skipping and the board are the point
    args = ["sweep", "--methods", "mean_expression,ridge", "--dataset", "demo",
            "--seeds", "0,1", "--jobs", "2", "split=holdout", "split.test=[P2_B]",
            "tuning.n_trials=2", "dataset.n_spots=60", "dataset.n_genes=40",
            "encoder=handcrafted", "explain_genes=0"]
    proc = _stbench(*args, cwd=in_tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((in_tmp / "stbench-runs" / "results" / "demo").glob("*.json"))
    assert len(results) == 4
    tuned = [json.loads(p.read_text()) for p in results if p.name.startswith("ridge")]
    assert all(r["folds"][0]["tuning"]["n_complete"] == 2 for r in tuned)

    again = _stbench(*args, cwd=in_tmp)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((in_tmp / "stbench-runs" / "results" / "demo").glob("*.json"))) == 4

    board = _stbench("leaderboard", "--dataset", "demo", "--results", "stbench-runs/results/demo",
                     "--out", "boards", cwd=in_tmp)
    assert board.returncode == 0, board.stderr[-3000:]
    index = dump_dom((in_tmp / "boards" / "index.html").as_uri())
    assert 'href="demo.html"' in index  # the index lists the boards
    dom = dump_dom((in_tmp / "boards" / "demo.html").as_uri())
    for method in ("mean_expression", "ridge"):
        assert f'data-method="{method}"' in dom
    md = (in_tmp / "boards" / "demo.md").read_text()
    assert "ridge" in md and "pcc_mean" in md


def test_submitit_slurm_launcher_config_is_generated(in_tmp):
    proc = _stbench("sweep", "--methods", "bilinear", "--dataset", "demo", "--seeds", "0",
                    "--launcher", "submitit_slurm", "--show-config",
                    "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=120", cwd=in_tmp,
                    timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SlurmLauncher" in proc.stdout
    assert "partition: gpu" in proc.stdout and "timeout_min: 120" in proc.stdout
