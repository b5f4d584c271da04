"""tools/replay_stopping.py: the project's stopping rule replayed on curves from a real MLflow store."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from project_tools import load_tool


def _tool():
    return load_tool("replay_stopping")


def test_replay_follows_run_epochs_patience_ratio_and_min_epochs():
    tool = _tool()
    # best at epoch 3, then flat: patience 2 stops after epoch 5 (3 + 2), selecting epoch 3
    curve = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.36, 0.37, 0.38, 0.39, 0.5])
    assert tool.replay(curve, tool.Rule(2)) == (6, 3)
    # ratio 1.0: wait ceil(1.0 * (3 + 1)) = 4 epochs -> stops after epoch 7
    assert tool.replay(curve, tool.Rule(2, 1.0)) == (8, 3)
    # min_epochs keeps it going to the late best at epoch 9
    assert tool.replay(curve, tool.Rule(2, 0.0, 10)) == (10, 9)
    s = tool.summarise([curve], tool.Rule(2))
    assert s["same_selection"] == 0 and s["val_lost"] == pytest.approx(0.1)
    assert tool.Rule.parse("5,0.5,5") == tool.Rule(5, 0.5, 5)


def test_curves_come_from_a_real_mlflow_store_filtered_by_method_and_dataset(tmp_path):
    from mlflow.tracking import MlflowClient

    tool = _tool()
    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    for method, dataset, values in (("alignst", "demo", [0.1, 0.3, 0.2]),
                                    ("alignst", "her2st", [0.05, 0.04]),
                                    ("sgn", "demo", [0.2])):
        parent = client.create_run(exp, tags={"stbench.method": method,
                                              "stbench.dataset": dataset}).info.run_id
        child = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
        for step, v in enumerate(values):
            client.log_metric(child, "val_pcc", v, step=step)
    curves = tool.load_curves(db, "alignst", "demo")
    assert [c.tolist() for c in curves] == [[0.1, 0.3, 0.2]]
    assert sorted(len(c) for c in tool.load_curves(db, "alignst")) == [2, 3]
    assert tool.main([str(db), "--method", "alignst", "--rule", "1"]) == 0


def test_a_missing_store_exits_2_with_one_line(tmp_path, capsys):
    tool = _tool()
    with pytest.raises(SystemExit) as info:
        tool.main([str(tmp_path / "nope.db"), "--method", "alignst", "--rule", "5"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.db" in err[0]
