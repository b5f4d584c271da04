import json

import numpy as np
import pytest

from stbench.errors import ConfigError
from stbench.run.result import validate_result
from stbench.run.runner import make_bundles, run
from stbench.testing import tiny_dataset_class


def test_ridge_runs_all_folds_and_writes_json(tmp_path, tiny_cfg):
    out = tmp_path / "r.json"
    result = run(tiny_cfg("method=ridge", "genes.split=none"), json_path=str(out), progress=False)
    saved = json.loads(out.read_text())
    validate_result(saved)
    assert saved["method_kind"] == "supervised"
    assert len(saved["folds"]) == 3  # loso over 3 sections
    assert saved["genes"]["evaluated_on"] == "all panel genes"
    assert -1 <= saved["metrics"]["pcc_mean"] <= 1
    assert result["mlflow"]["run_id"]
    assert saved["encoder"]["name"] == "efficientnet_lite0" and len(saved["encoder"]["weights_digest"]) >= 16


def test_zero_shot_never_sees_unseen_expression(tmp_path, monkeypatch, tiny_cfg):
    seen_by_method = []
    import stbench.methods.bilinear as bl

    original_fit = bl.Bilinear.fit

    def spy(self, train, val, ctx):
        seen_by_method.append((set(train.genes), set(val.genes) if val else set()))
        assert all(s.expression.shape[1] == len(train.genes) for s in train.slides)
        return original_fit(self, train, val, ctx)

    monkeypatch.setattr(bl.Bilinear, "fit", spy)
    result = run(tiny_cfg("method=bilinear", "genes.n_unseen=6", "tracking.enabled=false"),
                 progress=False)
    unseen = set(result["genes"]["unseen"])
    assert len(unseen) == 6
    for train_genes, val_genes in seen_by_method:
        assert not train_genes & unseen and not val_genes & unseen
        assert not train_genes & val_genes


def test_test_bundle_hides_expression(tmp_path, tiny_cfg):
    from stbench.protocol.preprocess import normalise
    from stbench.protocol.preprocess import panel_source
    from stbench.run.runner import plan_folds

    ds = tiny_dataset_class()()
    slides = ds.load()
    exprs = {s.name: normalise(s) for s in slides}
    cfg = tiny_cfg("method=bilinear")
    plans = plan_folds(cfg, slides, exprs, panel_source(cfg.genes, ds), "seen")
    by_name = {s.name: s for s in slides}
    feats = {s.name: {"image": np.zeros((s.n_spots, 2))} for s in slides}
    train, val, test, _ = make_bundles(plans[0], by_name, exprs, feats, "seen")
    assert all(s.expression is None for s in test.slides)
    assert not set(train.genes) & set(plans[0].genes.unseen)


def test_zero_shot_with_no_unseen_genes_is_a_config_error(tmp_path, tiny_cfg):
    with pytest.raises(ConfigError, match="zero-shot"):
        run(tiny_cfg("method=bilinear", "genes.split=none"), progress=False)


def test_same_seed_same_metrics(tmp_path, tiny_cfg):
    a = run(tiny_cfg("method=bilinear", "tracking.enabled=false"), progress=False)
    b = run(tiny_cfg("method=bilinear", "tracking.enabled=false", "resume=false"), progress=False)
    assert a["metrics"] == b["metrics"]
    assert b["feature_cache"]["hits"] == 3 and b["feature_cache"]["misses"] == 0


def test_failed_run_is_marked_failed_and_writes_no_json(tmp_path, monkeypatch, tiny_cfg):
    import stbench.methods.ridge as ridge

    def boom(self, bundle, genes):
        raise RuntimeError("boom")

    monkeypatch.setattr(ridge.Ridge, "predict", boom)
    out = tmp_path / "r.json"
    with pytest.raises(RuntimeError):
        run(tiny_cfg("method=ridge"), json_path=str(out), progress=False)
    assert not out.exists()
    from mlflow.tracking import MlflowClient

    from stbench.run.tracking import store_uri

    client = MlflowClient(store_uri(tmp_path / "runs"))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and all(r.info.status == "FAILED" for r in runs)
