"""The built wheel installs the one ``stbench`` namespace with its data, and imports."""

import subprocess
import sys
import zipfile

import pytest


@pytest.mark.slow
def test_wheel_contains_one_namespace_and_imports(tmp_path):
    from conftest import PROJECT_ROOT

    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(PROJECT_ROOT)], check=True, timeout=300)
    (wheel,) = dist.glob("stbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert "datasets" not in top and "methods" not in top and "benchmark" not in top
    for needed in ("stbench/run/conf/config.yaml", "stbench/datasets/gene_descriptions.tsv.gz",
                   "stbench/methods/ridge.py", "stbench/datasets/demo.py"):
        assert needed in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    code = ("import stbench, stbench.methods.ridge, stbench.datasets.demo, stbench.features.descriptions as g;"
            "assert stbench.__file__.startswith(%r), stbench.__file__;"
            "print(g.descriptions_for(['ERBB2'])['ERBB2'][:5])" % str(target))
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(target), "PATH": ""},
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ERBB2"


@pytest.mark.slow
def test_ui_serves_the_local_store(in_tmp):
    import socket
    import time
    import urllib.request

    from stbench.run.tracking import Tracker

    Tracker(None, "stbench-runs", "stbench-demo")  # creates the SQLite store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "stbench", "ui", "--port", str(port)],
                            cwd=in_tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        body = None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(1)
        assert body is not None, "MLflow UI did not answer on 127.0.0.1"
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=stbench-demo")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert b"stbench-demo" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
