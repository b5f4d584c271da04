"""The performance scripts of ``stbench.perf`` run in their tiny modes and write sane JSON.

No timing assertions: the figures themselves are machine- and load-dependent
(``docs/performance.md`` has them, with the commands).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x >= 0


def test_bench_evaluator_tiny(tmp_path, capsys) -> None:
    from stbench.perf import bench_evaluator

    out = tmp_path / "ev.json"
    assert bench_evaluator.main(["--spots", "300", "--genes", "12", "--slides", "3",
                                 "--repeats", "1", "--json", str(out)]) == 0
    assert "pearson_columns" in capsys.readouterr().out
    r = json.loads(out.read_text())
    for key in ("vectorised_wall_s", "vectorised_cpu_s", "loop_wall_s",
                "loop_cpu_s", "evaluate_wall_s", "speedup_vectorised_wall",
                "speedup_vectorised_cpu", "peak_rss_mb", "loadavg"):
        assert key in r, key
    assert all(_finite_positive(r[k]) for k in ("vectorised_wall_s", "loop_wall_s", "peak_rss_mb"))
    # the vectorised PCC and evaluate's pooled PCC equal scipy's loop
    assert r["max_abs_diff_vectorised_vs_loop"] < 1e-10
    assert r["max_abs_diff_evaluate_pooled_vs_loop"] < 1e-10
    assert r["spots"] == 300 and r["genes"] == 12
    assert isinstance(r["pass_speedup"], bool) and isinstance(r["pass_seconds"], bool)


def test_bench_linear_fits_tiny(tmp_path) -> None:
    from stbench.perf import bench_linear_fits

    out = tmp_path / "lf.json"
    assert bench_linear_fits.main(["--spots", "120", "--genes", "10", "--slides", "3",
                                   "--d-img", "24", "--d-text", "8", "--val-spots", "40",
                                   "--val-genes", "4", "--repeats", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for name in ("bilinear", "ridge"):
        for stage in ("fit", "fit+val", "predict"):
            assert _finite_positive(r[f"{name}_{stage}_wall_s"]), (name, stage)
            assert _finite_positive(r[f"{name}_{stage}_cpu_s"]), (name, stage)
        assert r[f"{name}_predict_shape"] == [120, 10]
        assert -1.0 <= r[f"{name}_train_pcc_mean"] <= 1.0
    assert r["bilinear_train_pcc_mean"] > 0.2 and r["ridge_train_pcc_mean"] > 0.2
    assert r["pca_subspace_min_cos_svd_vs_gram"] > 0.99
    assert _finite_positive(r["stage_pca_svd_wall_s"]) and _finite_positive(r["peak_rss_mb"])


def test_bench_training_quick(tmp_path) -> None:
    pytest.importorskip("torch")
    from stbench.perf import bench_training

    out = tmp_path / "tr.json"
    assert bench_training.main(["--quick", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["quick"] is True and r["epochs"] == 2
    groups = {(x["method"], x["group"]) for x in r["runs"]}
    for m in ("alignst", "sgn"):
        assert {(m, "her2st"), (m, "spots"), (m, "genes")} <= groups
    for x in r["runs"]:
        assert len(x["epoch_wall_s"]) == 2 and len(x["epoch_cpu_s"]) == 2
        assert all(_finite_positive(v) for v in x["epoch_wall_s"] + x["epoch_cpu_s"])
        assert _finite_positive(x["setup_wall_s"]) and x["peak_rss_mb"] > 0
        assert x["steps_per_epoch"] >= 1
    for m in ("alignst", "sgn"):
        for key in ("spots_cpu", "spots_wall", "genes_cpu", "genes_wall"):
            assert math.isfinite(r["exponents"][m][key])
    # alignst's scaling runs have no step padding: one slide, ceil(16 / 64) = 1 step
    assert all(x["steps_per_epoch"] == 1 for x in r["runs"]
               if x["method"] == "alignst" and x["group"] != "her2st")


def test_training_slope() -> None:
    from stbench.perf.bench_training import slope

    fit, last = slope([250, 500, 1000, 2000], [1.0, 2.0, 4.0, 8.0])
    assert fit == pytest.approx(1.0) and last == pytest.approx(1.0)
    fit, _ = slope([1, 2, 4], [1.0, 4.0, 16.0])
    assert fit == pytest.approx(2.0)


def test_training_child_spec_in_process() -> None:
    """One child configuration, as the parent would spawn it (here in-process)."""
    pytest.importorskip("torch")
    from stbench.perf.bench_training import run_child

    r = run_child({"method": "alignst", "slides": 2, "spots": 12, "genes": 5, "epochs": 1,
                   "tokens": 4, "config": {"dim": 16, "heads": 2}})
    assert len(r["epoch_wall_s"]) == 1 and r["steps_per_epoch"] == 4  # min_steps_per_epoch
    assert r["n_parameters"] > 0 and r["peak_rss_mb"] >= r["rss_before_fit_mb"] > 0


def test_bench_runs_dry_run(tmp_path, capsys) -> None:
    from stbench.perf import bench_runs

    out = tmp_path / "runs.json"
    cache = tmp_path / "cache"
    assert bench_runs.main(["--dry-run", "--cache-dir", str(cache), "--workdir",
                            str(tmp_path / "work"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["dry_run"] is True and [x["mode"] for x in r["runs"]] == ["cold", "warm"]
    cold, warm = (x["command"] for x in r["runs"])
    for cmd in (cold, warm):
        assert cmd[cmd.index("--method") + 1] == "alignst"
        assert cmd[cmd.index("--dataset") + 1] == "her2st"
        for arg in ("split=holdout", "split.test=[C5]", "threads=1", f"cache.dir={cache}",
                    "resume=false"):
            assert arg in cmd, arg
    # the same cache, but separate tracking folders: the warm run is never "already complete"
    track = [next(a for a in c if a.startswith("tracking.dir=")) for c in (cold, warm)]
    assert track[0] != track[1]
    assert "STBENCH_CACHE" in capsys.readouterr().err
    assert not cache.exists()  # a dry run creates nothing


def test_bench_runs_refuses_a_filled_cache_for_cold(tmp_path) -> None:
    from stbench.perf import bench_runs

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "x.npy").write_bytes(b"0")
    with pytest.raises(SystemExit, match="empty"):
        bench_runs.main(["--mode", "cold", "--cache-dir", str(cache), "--workdir", str(tmp_path)])
    with pytest.raises(SystemExit, match="filled"):
        bench_runs.main(["--mode", "warm", "--cache-dir", str(tmp_path / "none"),
                         "--workdir", str(tmp_path)])
