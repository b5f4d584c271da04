"""The CLI through its real entry point (subprocess) and in-process for speed."""

import json
import subprocess
import sys

import pytest

from stbench.cli.app import main


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "stbench", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_list_methods_shows_kind_and_citation(capsys):
    assert main(["list", "methods"]) == 0
    text = capsys.readouterr().out
    assert "ridge" in text and "supervised" in text and "mean_expression" in text and "control" in text


def test_list_glob(capsys):
    assert main(["list", "methods", "mean*"]) == 0
    text = capsys.readouterr().out
    assert "mean_expression" in text and "ridge" not in text


@pytest.mark.parametrize("args, needle", [
    pytest.param(["run", "--method", "ridgee", "--dataset", "demo"], "did you mean ridge",
                 id="subprocess-typo"),
    (["run", "--method", "ridge", "--dataset", "nodata"], "unknown dataset"),
    (["run", "--method", "ridge", "--dataset", "demo", "genes.bogus=1"], "unknown setting 'genes.bogus'"),
    (["run", "--method", "ridge", "--dataset", "demo", "seed=abc"], "seed"),
    (["run", "--method", "bilinear", "--dataset", "demo", "genes.split=none"], "zero-shot"),
    (["run", "--method", "bilinear", "--dataset", "demo", "genes.n_unseen=200"], "seen genes"),
    (["run", "--method", "ridge", "--dataset", "demo", "split=holdout", "split.test=[NOPE]"], "NOPE"),
    (["run", "--method", "bilinear", "--dataset", "demo", "genes.split=file",
      "genes.unseen_file=/nonexistent/unseen.txt"], "not found"),
])
def test_bad_input_exits_2_with_one_line(args, needle, in_tmp, request, capsys):
    """Through the console entry point for the ``subprocess-*`` row (an interpreter start costs
    seconds), in-process through ``main`` for the others."""
    argv = [*args, "--json", "out.json"]
    if request.node.callspec.id.startswith("subprocess"):
        proc = _run(*argv, cwd=in_tmp)
        code, err = proc.returncode, proc.stderr
    else:
        capsys.readouterr()
        code, err = main(argv), capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert not (in_tmp / "out.json").exists()


def test_debug_shows_traceback(in_tmp):
    proc = _run("run", "--method", "ridgee", "--dataset", "demo", "--debug", cwd=in_tmp)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_run_ridge_on_demo_writes_json_and_mlflow(in_tmp):
    # a small demo on the handcrafted encoder: the entry point, the JSON and MLflow are the point
    proc = _run("run", "--method", "ridge", "--dataset", "demo", "--json", "out.json",
                "--no-progress", "dataset.n_spots=60", "dataset.n_genes=40",
                "encoder=handcrafted", "explain_genes=0", cwd=in_tmp)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((in_tmp / "out.json").read_text())
    assert result["method"] == "ridge" and result["dataset"] == "demo"
    assert len(result["folds"]) == 4
    assert (in_tmp / "stbench-runs" / "mlflow.db").exists()
    from mlflow.tracking import MlflowClient

    from stbench.run.tracking import store_uri

    client = MlflowClient(store_uri(in_tmp / "stbench-runs"))
    exp = client.get_experiment_by_name("stbench-demo")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert all(r.info.status == "FINISHED" for r in runs)
    assert parents[0].data.metrics["pcc_mean"] == pytest.approx(result["metrics"]["pcc_mean"])
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"result.json", "config.yaml"} <= artifacts
    child_artifacts = {a.path for a in client.list_artifacts(children[0].info.run_id)}
    assert "per_gene.csv" in child_artifacts
