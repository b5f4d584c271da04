"""MLflow as the leaderboard: a real ``mlflow server`` and ``stbench ui`` on 127.0.0.1.

* ``stbench leaderboard --from-mlflow URI`` builds the same board as the result files, with
  each row linked to its runs, and writes the board into the experiment's description;
* parent runs carry the row's tags, the metrics and the dataset as an MLflow dataset input; the
  experiment is a model-training experiment with a saved leaderboard view;
* ``stbench ui`` prints the leaderboard address; headless Chromium renders it (the React app)
  and finds every method and its ``pcc_mean``, sorted descending; a screenshot is kept under
  the pytest tmp dir.

The results are the real demo result files of ``tests/data/results`` (see
``tests/test_leaderboard.py``), published as the runner publishes a finished run. One server
per module; each server starts in about 7 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stbench.cli.app import main
from stbench.report.leaderboard import make_leaderboard
from stbench.run.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    VIEW_KEY,
    VIEW_TAG_PREFIX,
    Tracker,
    client_for,
)

RESULTS = Path(__file__).parent / "data" / "results"
METHODS = ("bilinear", "mean_expression", "ridge")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Until ``url`` answers (or fail with the server's output)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=3):
                return
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    out = proc.communicate(timeout=30)[0] or b""
    pytest.fail(f"{url} did not answer: {out.decode(errors='replace')[-2000:]}")


def demo_results() -> list[dict]:
    """The fixture results, each with a run identity (as the runner records it)."""
    out = []
    for p in sorted(RESULTS.glob("*.json")):
        data = json.loads(p.read_text())
        data["identity"] = hashlib.sha256(p.name.encode()).hexdigest()
        out.append(data)
    return out


def publish(tracker: Tracker, result: dict) -> str:
    """Record a finished result as the runner does: parent run, tags, metrics, result.json."""
    parent = tracker.start(f"{result['method']}-{result['dataset']}-{result['split']['name']}",
                           {"stbench.method": result["method"],
                            "stbench.dataset": result["dataset"],
                            "stbench.identity": result["identity"]})
    tracker.record_result(parent, result)
    tracker.log_text(parent, json.dumps(result), "result.json")
    tracker.finish(parent, True)
    return parent


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 holding the six demo results."""
    folder = Path(tempfile.mkdtemp(prefix="stbench-mlflow-server-"))
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port)], cwd=folder, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", proc)
        tracker = Tracker(url, str(folder / "unused"), "stbench-demo")
        for result in demo_results():
            publish(tracker, result)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)


def test_from_mlflow_builds_the_board_of_the_files(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "--dataset", "demo", "--from-mlflow", server, "--out", "site",
                 "--no-plots"]) == 0
    expected, _ = make_leaderboard("demo", [RESULTS], None, recorded=False)
    got, _ = make_leaderboard("demo", from_mlflow=server, out_dir=None)
    assert [(r.method, r.seeds) for r in got.rows] == [(r.method, r.seeds) for r in expected.rows]
    for g, e in zip(got.rows, expected.rows):
        assert g.metrics["pcc_mean"].mean == pytest.approx(e.metrics["pcc_mean"].mean, rel=1e-12)
        assert g.p_gene_holm == e.p_gene_holm
        # every row links each seed to its run on the server
        assert [s for s, _ in g.links] == [0, 1]
        assert all(u.startswith(f"{server}/#/experiments/") for _, u in g.links)
    html = (tmp_path / "site" / "demo.html").read_text()
    assert html.count(f'href="{server}/#/experiments/') == 6
    md = (tmp_path / "site" / "demo.md").read_text()
    assert "| MLflow |" in md and f"]({server}/#/experiments/" in md
    # the experiment's description is the board
    exp = client_for(server).get_experiment_by_name("stbench-demo")
    note = exp.tags[NOTE_TAG]
    assert note.startswith("**stbench leaderboard: demo**")
    for method in METHODS:
        assert method in note


def test_parent_runs_carry_tags_metrics_and_the_dataset(server):
    client = client_for(server)
    exp = client.get_experiment_by_name("stbench-demo")
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    view = json.loads(exp.tags[VIEW_TAG_PREFIX + VIEW_KEY])
    assert view["orderByKey"] == "metrics.`pcc_mean`" and view["orderByAsc"] is False
    assert "metrics.`pcc_mean`" in view["selectedColumns"]
    runs = client.search_runs([exp.experiment_id], "tags.`stbench.config_hash` LIKE '%'")
    assert len(runs) == 6
    by_file = {(d["method"], d["seed"]): d for d in demo_results()}
    for run in runs:
        tags = run.data.tags
        result = by_file[(tags["stbench.method"], int(tags["stbench.seed"]))]
        assert tags["stbench.kind"] == result["method_kind"]
        assert tags["stbench.split"] == "loso"
        assert tags["stbench.gene_split"] == result["genes"]["gene_split"]
        assert tags["stbench.label"] == result["method"]  # the fixtures run the defaults
        assert len(tags["stbench.config_hash"]) == 8
        assert run.data.metrics["pcc_mean"] == pytest.approx(result["metrics"]["pcc_mean"])
        (ds,) = run.inputs.dataset_inputs
        assert ds.dataset.name == "demo"
        assert ds.dataset.digest == result["dataset_digest"][:36]
        assert json.loads(ds.dataset.source)["stbench_dataset"] == "demo"


def test_unreachable_server_is_one_line_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["leaderboard", "--dataset", "demo", "--from-mlflow", url]) == 2
    err = capsys.readouterr().err
    assert "cannot read the MLflow tracking server" in err and url in err


# ------------------------------------------------------------------------------ stbench ui


def chromium_cmd(profile: str, *args: str) -> list[str]:
    from services import chromium_path

    return [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=2200,1100", "--hide-scrollbars",
            "--virtual-time-budget=20000", "--run-all-compositor-stages-before-draw", *args]


def render(url: str, screenshot: Path) -> str:
    """The DOM of ``url`` once the React app rendered; a PNG screenshot saved too."""
    profile = tempfile.mkdtemp(prefix="stbench-chromium-")
    try:
        dom = subprocess.run(chromium_cmd(profile, "--dump-dom", url), capture_output=True,
                             text=True, timeout=120, check=False)
        shot = subprocess.run(chromium_cmd(profile, f"--screenshot={screenshot}", url),
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert shot.returncode == 0, shot.stderr[-2000:]
    return dom.stdout


@pytest.mark.slow
def test_stbench_ui_shows_the_leaderboard_in_chromium(tmp_path, monkeypatch, chromium):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(None, "stbench-runs", "stbench-demo")
    results = demo_results()
    store = tmp_path / "stbench-runs" / "results" / "demo"
    store.mkdir(parents=True)
    for result in results:  # as the runner leaves them: MLflow runs and the local store
        publish(tracker, result)
        name = f"{result['method']}_s{result['seed']}_{result['identity'][:10]}.json"
        (store / name).write_text(json.dumps(result))
    assert main(["leaderboard", "--dataset", "demo", "--out", "site", "--no-plots"]) == 0
    html = (tmp_path / "site" / "demo.html").read_text()
    assert html.count('href="http://127.0.0.1:5000/#/experiments/') == 6  # rows link their runs
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stbench", "ui", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", proc)
        header = ""
        while "leaderboard stbench-demo:" not in header:
            header += proc.stdout.readline().decode()
        url = re.search(r"leaderboard stbench-demo: (\S+)", header).group(1)
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        assert "workflowType=machine_learning" in url and VIEW_KEY in url
        screenshot = tmp_path / "mlflow-leaderboard.png"
        dom = render(url, screenshot)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "<title>Runs - Experiment" in dom  # the runs table, not the GenAI overview
    for method in METHODS:
        assert f"{method}-demo-loso" in dom
    shown = [float(v) for v in re.findall(
        r'id="cell-metrics\.`pcc_mean`-\d+" class="ag-cell-value">([-0-9.e]+)<', dom)]
    expected = sorted((r["metrics"]["pcc_mean"] for r in results), reverse=True)
    assert shown == pytest.approx(expected, rel=1e-12)  # every parent run, sorted descending
    assert "stbench leaderboard: demo" in dom  # the description holds the board
    assert screenshot.stat().st_size > 20_000
    print(f"screenshot: {screenshot}")
