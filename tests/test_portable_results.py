"""Results are portable: no absolute local path in a result JSON, the dataset named by name,
version and content digest, input files by name and sha256; the typed result round-trips."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from stbench.cli.app import main
from stbench.run.portable import local_paths_in, portable_config
from stbench.run.result import RunResult


@pytest.mark.slow
@pytest.mark.integration
def test_run_json_holds_no_absolute_path(tmp_path, in_tmp, capsys):
    unseen = tmp_path / "lists" / "unseen.txt"
    unseen.parent.mkdir()
    argv = ["run", "--method", "bilinear", "--dataset", "demo", "encoder=handcrafted",
            "dataset.n_spots=80", "dataset.n_genes=60",
            f"tracking.dir={tmp_path / 'store'}", f"cache.dir={tmp_path / 'cache'}",
            "genes.representation=tfidf", "--json", str(tmp_path / "out.json"), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    first = json.loads((tmp_path / "out.json").read_text())
    unseen.write_text("\n".join(first["genes"]["unseen"][:10]) + "\n")
    argv[-4:-4] = ["genes.split=file", f"genes.unseen_file={unseen}", "seed=1"]
    assert main(argv) == 0, capsys.readouterr().err
    text = (tmp_path / "out.json").read_text()
    result = json.loads(text)
    assert str(tmp_path) not in text and str(Path.home()) + "/" not in text
    assert local_paths_in(result) == []
    assert result["dataset"] == "demo" and len(result["dataset_digest"]) == 64
    assert result["inputs"]["genes.unseen_file"] == {
        "name": "unseen.txt", "sha256": hashlib.sha256(unseen.read_bytes()).hexdigest()}
    assert result["config"]["genes"]["unseen_file"] == "unseen.txt"
    assert result["config"]["tracking"]["dir"] is None and result["config"]["cache"]["dir"] is None
    assert result["dataset_digest"] == first["dataset_digest"]  # same data, same digest
    recorded = list((tmp_path / "store" / "results" / "demo").glob("*.json"))
    assert len(recorded) == 2  # every finished run reaches the local store


def test_committed_results_are_portable():
    files = sorted((PROJECT_ROOT / "leaderboards").rglob("*.json")) + \
        sorted((PROJECT_ROOT / "tests" / "data").rglob("*.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text())
        assert local_paths_in(data) == [], path
        assert data.get("dataset_digest"), path


def test_portable_config_rules(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"abc")
    config = {"dataset": {"root": "/data/her2st", "name": "her2st"}, "encoder": {"weights": str(weights)},
              "tracking": {"dir": "stbench-runs", "uri": "sqlite:////home/me/mlflow.db"},
              "genes": {"text_encoder": "minilm", "descriptions": None}}
    out, inputs = portable_config(config)
    assert out["dataset"] == {"root": None, "name": "her2st"}
    assert out["encoder"]["weights"] == "w.safetensors"
    assert inputs["encoder.weights"]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert out["tracking"] == {"dir": "stbench-runs", "uri": None}  # relative kept, local URL not
    assert out["genes"] == config["genes"]


def test_typed_result_round_trips_and_keeps_unknown_keys():
    path = next((PROJECT_ROOT / "tests" / "data" / "results").glob("*.json"))
    data = json.loads(path.read_text())
    data["from_a_newer_writer"] = {"x": 1}
    record = RunResult.from_dict(data)
    assert record.method == data["method"] and record.metrics == data["metrics"]
    again = json.loads(record.to_json())
    assert again == data
    with pytest.raises(ValueError, match="lacks keys"):
        RunResult.from_dict({k: v for k, v in data.items() if k != "folds"})
