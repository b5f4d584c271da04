"""Every finished run reaches the board by default: ``stbench leaderboard --dataset D`` reads
the local store (``stbench-runs/results/D/``) and the committed ``leaderboards/results/D/``
with no flag; a row/seed found in several places is taken once (named files, then the local
store, newest first, then the committed folder); ``index.html`` lists the boards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stbench.cli.app import main

RESULTS = Path(__file__).parent / "data" / "results"


def _copy(names: list[str], dest: Path, suffix: str = "") -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        target = dest / n.replace(".json", f"{suffix}.json")
        shutil.copy(RESULTS / n, target)
        out.append(target)
    return out


def test_no_flag_reads_the_local_store_and_the_committed_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _copy(["bilinear_s0.json", "bilinear_s1.json"], Path("stbench-runs/results/demo"), "_abc")
    _copy(["ridge_s0.json", "ridge_s1.json", "mean_expression_s0.json",
           "mean_expression_s1.json"], Path("leaderboards/results/demo"))
    assert main(["leaderboard", "--dataset", "demo", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "3 rows from 6 result files" in out
    assert "stbench-runs/results/demo" in out and "leaderboards/results/demo" in out
    assert Path("leaderboards/demo.md").exists()


def test_a_run_in_several_places_is_taken_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    store = Path("stbench-runs/results/demo")
    old, = _copy(["bilinear_s0.json"], store, "_old")
    new, = _copy(["bilinear_s0.json"], store, "_new")
    data = json.loads(new.read_text())
    data["folds"][0]["metrics"]["pcc_mean"] = 0.99  # the newer rerun
    new.write_text(json.dumps(data))
    os.utime(old, (1_000_000, 1_000_000))
    _copy(["bilinear_s0.json", "ridge_s0.json"], Path("leaderboards/results/demo"))
    assert main(["leaderboard", "--dataset", "demo", "--no-plots", "--out", "o"]) == 0
    out = capsys.readouterr().out
    assert "2 rows from 2 result files" in out and "(2 superseded by newer copies)" in out
    from stbench.report.leaderboard import make_leaderboard

    b, _ = make_leaderboard("demo", out_dir=None, store="stbench-runs")
    (bil,) = [r for r in b.rows if r.method == "bilinear"]
    assert bil.runs[0].path.name == new.name
    # named files take precedence over the store
    b, _ = make_leaderboard("demo", [RESULTS / "bilinear_s0.json"], out_dir=None,
                            store="stbench-runs")
    (bil,) = [r for r in b.rows if r.method == "bilinear"]
    assert bil.runs[0].path == RESULTS / "bilinear_s0.json"


def test_nothing_to_read_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "--dataset", "demo"]) == 2
    err = capsys.readouterr().err
    assert "stbench-runs/results/demo" in err and "leaderboards/results/demo" in err
    assert "stbench run --method M --dataset demo" in err


def test_index_lists_the_boards(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _copy([p.name for p in RESULTS.glob("*.json")], Path("r"))
    assert main(["leaderboard", "--dataset", "demo", "-r", "r", "--no-plots", "--no-store"]) == 0
    sub = Path("leaderboards/demo-lopo")
    assert main(["leaderboard", "--dataset", "demo", "-r", "r", "--no-plots", "--no-store",
                 "--out", str(sub)]) == 0
    assert main(["leaderboard", "--dataset", "demo", "-r", "r", "--no-plots", "--no-store"]) == 0
    index = Path("leaderboards/index.html").read_text()
    assert 'href="demo.html"' in index and 'href="demo-lopo/demo.html"' in index
    assert 'id="leaderboard"' not in index  # a list of boards, not a copy of one


@pytest.mark.slow
@pytest.mark.integration
def test_sweep_then_leaderboard_with_no_flag(tmp_path):
    """A sweep's jobs land in the local store; the board finds them with no flag, and their
    results record per-spot maps, drawn on the page."""
    def stbench(*args):
        return subprocess.run([sys.executable, "-m", "stbench", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)

    env_ok = stbench("sweep", "--methods", "bilinear,mean_expression", "--dataset", "demo",
                     "--seeds", "0", "--launcher", "basic", "split=holdout", "split.test=[P2_B]",
                     "encoder=handcrafted", "genes.representation=tfidf", "dataset.n_spots=80",
                     "dataset.n_genes=60")
    assert env_ok.returncode == 0, env_ok.stderr[-3000:]
    assert "━" not in env_ok.stderr  # no bars in a log
    board = stbench("leaderboard", "--dataset", "demo", "--out", "site")
    assert board.returncode == 0, board.stderr[-3000:]
    assert "2 rows from 2 result files" in board.stdout
    html = (tmp_path / "site" / "demo.html").read_text()
    assert 'id="plot-maps"' in html and 'id="plot-bars"' in html
    assert "http://127.0.0.1:5000/#/experiments/" in html  # rows link their MLflow runs
