"""Feature computation in the harness: kinds, content-addressed caching, decode once."""

import subprocess
import sys

import numpy as np
import pytest

from stbench.features.cache import ArrayCache
from stbench.run.config import compose
from stbench.run.progress import progress_bars
from stbench.features.pipeline import compute_features
from stbench.testing import tiny_dataset_class
from helpers import register_tiny

register_tiny()


def _compute(tmp_path, *overrides, kinds=frozenset({"image", "nuclei", "graph"})):
    cfg = compose(["dataset=tiny", "encoder=handcrafted", f"cache.dir={tmp_path}/c", *overrides])
    slides = tiny_dataset_class()().load()
    cache = ArrayCache(cfg.cache.dir)
    with progress_bars(False) as task:
        feats = compute_features(cfg, slides, kinds, cache, task)
    return slides, feats, cache


def test_feature_kinds_and_shapes(tmp_path):
    slides, feats, _ = _compute(tmp_path)
    for s in slides:
        f = feats[s.name]
        assert f["image"].shape[0] == s.n_spots
        assert f["nuclei"].shape[:2] == f["nuclei_mask"].shape == (s.n_spots, 32)
        assert f["nuclei_mask"].dtype == bool
        for kind in ("edges_grid", "edges_knn"):
            e = f[kind]
            assert e.shape[0] == 2 and e.dtype == np.int64 and e.max() < s.n_spots
            assert not (e[0] == e[1]).any()


def test_second_run_computes_nothing_and_inputs_change_the_key(tmp_path, monkeypatch):
    _, first, cache1 = _compute(tmp_path)
    assert cache1.misses > 0
    import stbench.data as data

    reads = []
    original = data.ArrayImage.read
    monkeypatch.setattr(data.ArrayImage, "read", lambda self: reads.append(1) or original(self))
    _, second, cache2 = _compute(tmp_path)
    assert cache2.misses == 0 and cache2.hits == cache1.misses
    assert reads == [], "a fully cached run must not decode any image"
    for name in first:
        assert np.array_equal(first[name]["image"], second[name]["image"])
    _, _, cache3 = _compute(tmp_path, "features.patch_um=80")
    assert cache3.misses > 0


@pytest.mark.slow
@pytest.mark.real_data
def test_features_cli_on_a_real_her2st_section(shared_dir, in_tmp):
    # MiniLM over the 785 descriptions was most of the cost: the first 60 literature genes and
    # 32 tokens each (default 128) keep the path (pooled and token states) at a small fraction
    panel = in_tmp / "panel60.txt"
    literature = (shared_dir / "data" / "panels" / "her2st_785.txt").read_text().split()
    panel.write_text("\n".join(literature[:60]) + "\n")
    args = [sys.executable, "-m", "stbench", "features", "--dataset", "her2st",
            f"dataset.root={shared_dir / 'data' / 'her2st'}", "dataset.sections=[C3]",
            f"cache.dir={in_tmp / 'cache'}", "genes.max_tokens=32", "genes.panel=file",
            f"genes.panel_file={panel}", "--no-progress"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=in_tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "image (180, 1280)" in first.stdout
    assert "file panel of 60): pooled (60, 384), token states (60, 32, 384)" in first.stdout, \
        first.stdout
    second = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=in_tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    assert " 0 computed" in second.stdout
