"""Tests of the official evaluator against straightforward scipy / sklearn references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from stbench.errors import UserError
from stbench.protocol.metrics import (
    METRIC_LEVELS,
    Evaluation,
    EvaluationInputError,
    bootstrap_ci,
    evaluate,
    holm,
    metric_level,
    paired_wilcoxon,
    pearson_columns,
    spearman_columns,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _make_case(seed: int, n_slides: int = 3, n_genes: int = 12, ties: bool = False):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(8, 30, size=n_slides)
    slide_ids = np.concatenate([[f"s{i}"] * n for i, n in enumerate(sizes)])
    n = slide_ids.size
    y_true = rng.normal(size=(n, n_genes)) + rng.normal(size=n_genes) * 3
    y_pred = 0.5 * y_true + rng.normal(size=(n, n_genes))
    if ties:  # log-normalised counts have many ties (zeros)
        y_true = np.round(np.clip(y_true, 0, None))
        y_pred = np.round(np.clip(y_pred, 0, None), 1)
    perm = rng.permutation(n)  # interleave slides
    genes = [f"g{j}" for j in range(n_genes)]
    mean_train = rng.normal(size=n_genes)
    var_train = rng.uniform(0.1, 2, size=n_genes)
    return y_true[perm], y_pred[perm], slide_ids[perm], genes, mean_train, var_train


def _ref_corr(fn, t: np.ndarray, p: np.ndarray) -> float:
    """Reference correlation with the "undefined counts as 0" rule."""
    if np.ptp(t) == 0 or np.ptp(p) == 0:
        return 0.0
    return float(fn(t, p)[0])


def _reference(y_true, y_pred, slide_ids, mean_train, var_train, top_k=50):
    """Plain-loop reference of every metric using scipy / sklearn."""
    slides = sorted(set(slide_ids))
    n_genes = y_true.shape[1]
    pcc = np.zeros((len(slides), n_genes))
    spr = np.zeros_like(pcc)
    r2 = np.zeros_like(pcc)
    for s_i, s in enumerate(slides):
        m = slide_ids == s
        for g in range(n_genes):
            t, p = y_true[m, g], y_pred[m, g]
            pcc[s_i, g] = _ref_corr(stats.pearsonr, t, p)
            spr[s_i, g] = _ref_corr(stats.spearmanr, t, p)
            r2[s_i, g] = 0.0 if np.ptp(t) == 0 else r2_score(t, p)
    pooled = np.array(
        [_ref_corr(stats.pearsonr, y_true[:, g], y_pred[:, g]) for g in range(n_genes)]
    )
    pcc_gene = pcc.mean(0)
    k = min(top_k, n_genes)
    heg = np.argsort(-mean_train, kind="stable")[:k]
    hvg = np.argsort(-var_train, kind="stable")[:k]
    return {
        "pcc_mean": pcc_gene.mean(),
        "pcc_pooled_mean": pooled.mean(),
        "pcc_q25": np.quantile(pcc_gene, 0.25),
        "pcc_median": np.median(pcc_gene),
        f"pcc_top{top_k}_heg": pcc_gene[heg].mean(),
        f"pcc_top{top_k}_hvg": pcc_gene[hvg].mean(),
        "spearman_mean": spr.mean(0).mean(),
        "mse": mean_squared_error(y_true, y_pred),
        "mae": mean_absolute_error(y_true, y_pred),
        "r2_mean": r2.mean(0).mean(),
    }, pcc_gene, pooled, spr.mean(0), r2.mean(0)


# --------------------------------------------------------------------------------------------
# metric values against references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "n_slides", "n_genes", "top_k", "ties"),
    [(0, 3, 12, 5, False), (1, 1, 7, 50, False), (2, 4, 20, 8, True), (3, 2, 60, 50, False)],
)
def test_metrics_match_scipy_reference(seed, n_slides, n_genes, top_k, ties):
    yt, yp, sl, genes, mt, vt = _make_case(seed, n_slides, n_genes, ties)
    ev = evaluate(yt, yp, sl, genes, gene_mean_train=mt, gene_var_train=vt, top_k=top_k)
    ref, pcc_gene, pooled, spr_gene, r2_gene = _reference(yt, yp, sl, mt, vt, top_k)
    assert set(ev.metrics) == set(ref)
    for name, value in ref.items():
        assert isinstance(ev.metrics[name], float)
        assert ev.metrics[name] == pytest.approx(value, abs=1e-10), name
    np.testing.assert_allclose(ev.per_gene["pcc"], pcc_gene, atol=1e-10)
    np.testing.assert_allclose(ev.per_gene["pcc_pooled"], pooled, atol=1e-10)
    np.testing.assert_allclose(ev.per_gene["spearman"], spr_gene, atol=1e-10)
    np.testing.assert_allclose(ev.per_gene["r2"], r2_gene, atol=1e-10)
    np.testing.assert_allclose(ev.per_gene["mse"], ((yt - yp) ** 2).mean(0), atol=1e-12)
    np.testing.assert_allclose(ev.per_gene["mae"], np.abs(yt - yp).mean(0), atol=1e-12)
    assert ev.counts["n_slides"] == n_slides
    assert ev.counts["n_spots"] == yt.shape[0]
    assert ev.counts["n_genes"] == n_genes
    # per-slide means reproduce the slide-then-gene averages (used for bootstrap CIs)
    assert ev.per_slide["pcc"].mean() == pytest.approx(ev.metrics["pcc_mean"], abs=1e-12)
    assert ev.per_slide["r2"].mean() == pytest.approx(ev.metrics["r2_mean"], abs=1e-12)
    assert ev.per_slide["n_spots"].sum() == yt.shape[0]


def test_hypothesis_random_cases():
    hyp = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    @hyp.settings(max_examples=15, deadline=None, derandomize=True)
    @hyp.given(
        seed=st.integers(0, 10_000),
        n_slides=st.integers(1, 4),
        n_genes=st.integers(1, 9),
        ties=st.booleans(),
    )
    def check(seed, n_slides, n_genes, ties):
        yt, yp, sl, genes, mt, vt = _make_case(seed, n_slides, n_genes, ties)
        ev = evaluate(yt, yp, sl, genes, gene_mean_train=mt, gene_var_train=vt, top_k=3)
        ref = _reference(yt, yp, sl, mt, vt, 3)[0]
        for name, value in ref.items():
            assert ev.metrics[name] == pytest.approx(value, abs=1e-9), name

    check()


def test_column_functions_match_scipy():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(40, 6)) + 1e6  # large offset: centring keeps it stable
    b = a * 0.3 + rng.normal(size=(40, 6))
    b[:, 2] = np.round(b[:, 2])
    r, und = pearson_columns(a, b)
    rho, und_s = spearman_columns(a, b)
    assert not und.any() and not und_s.any()
    for j in range(6):
        assert r[j] == pytest.approx(stats.pearsonr(a[:, j], b[:, j])[0], abs=1e-8)
        assert rho[j] == pytest.approx(stats.spearmanr(a[:, j], b[:, j])[0], abs=1e-12)
    # constant column -> NaN + flagged
    b[:, 4] = 7.0
    r, und = pearson_columns(a, b)
    rho, und_s = spearman_columns(a, b)
    assert und[4] and und_s[4] and np.isnan(r[4]) and np.isnan(rho[4])
    assert und.sum() == 1 and und_s.sum() == 1
    with pytest.raises(ValueError, match="shape"):
        pearson_columns(a, b[:, :3])


# --------------------------------------------------------------------------------------------
# undefined values
# --------------------------------------------------------------------------------------------


def test_constant_predictions_count_as_zero_and_are_counted():
    yt, yp, sl, genes, mt, vt = _make_case(11, n_slides=3, n_genes=5)
    slides = sorted(set(sl))
    yp = yp.copy()
    yp[sl == slides[0], 1] = 2.5  # constant pred of gene 1 in slide 0
    yp[:, 3] = -1.0  # gene 3 constant everywhere (also pooled)
    yt = yt.copy()
    yt[sl == slides[2], 0] = 4.0  # constant truth of gene 0 in slide 2
    ev = evaluate(yt, yp, sl, genes, gene_mean_train=mt, gene_var_train=vt)
    assert ev.counts["n_constant_pred_gene_slides"] == 1 + 3
    assert ev.counts["n_constant_true_gene_slides"] == 1
    assert ev.counts["n_constant_pred_genes_pooled"] == 1
    for v in ev.metrics.values():
        assert np.isfinite(v)
    assert not ev.per_gene.isna().any().any()
    pg = ev.per_gene.set_index("gene")
    assert pg.loc["g3", "pcc"] == 0.0 and pg.loc["g3", "pcc_pooled"] == 0.0
    assert pg.loc["g3", "spearman"] == 0.0
    assert pg.loc["g3", "n_undefined_slides"] == 3
    assert pg.loc["g1", "n_undefined_slides"] == 1
    assert pg.loc["g0", "n_undefined_slides"] == 1
    # gene 1: slide 0 contributes 0, the mean is over all 3 slides (not dropped)
    m = [sl == s for s in slides]
    expected = (0 + stats.pearsonr(yt[m[1], 1], yp[m[1], 1])[0]
                + stats.pearsonr(yt[m[2], 1], yp[m[2], 1])[0]) / 3
    assert pg.loc["g1", "pcc"] == pytest.approx(expected, abs=1e-12)
    # R2: constant prediction is still defined; constant truth counts as 0
    r2_expected = np.mean([r2_score(yt[mk, 3], yp[mk, 3]) for mk in m])
    assert pg.loc["g3", "r2"] == pytest.approx(r2_expected, abs=1e-12)
    r2_g0 = (r2_score(yt[m[0], 0], yp[m[0], 0]) + r2_score(yt[m[1], 0], yp[m[1], 0])) / 3
    assert pg.loc["g0", "r2"] == pytest.approx(r2_g0, abs=1e-12)
    # and the overall reference (which uses the same 0-rule) still agrees
    ref = _reference(yt, yp, sl, mt, vt)[0]
    for name, value in ref.items():
        assert ev.metrics[name] == pytest.approx(value, abs=1e-10), name


def test_near_constant_uses_relative_tolerance():
    rng = np.random.default_rng(0)
    yt = rng.normal(size=(20, 2)) + 100.0
    yp = np.full((20, 2), 1e8)
    yp[:, 1] += rng.normal(size=20)  # clearly varying
    yp[:, 0] += np.r_[np.zeros(10), np.full(10, 1e-9)]  # noise far below 1e-12 * 1e8
    ev = evaluate(yt, yp, ["a"] * 20, ["x", "y"], gene_mean_train=[0, 1], gene_var_train=[1, 0])
    assert ev.counts["n_constant_pred_gene_slides"] == 1
    assert ev.per_gene["pcc"].iloc[0] == 0.0
    assert ev.per_gene["pcc"].iloc[1] != 0.0


# --------------------------------------------------------------------------------------------
# invariances and validation
# --------------------------------------------------------------------------------------------


def test_invariant_to_spot_order():
    yt, yp, sl, genes, mt, vt = _make_case(7, n_slides=4, n_genes=10, ties=True)
    ev1 = evaluate(yt, yp, sl, genes, gene_mean_train=mt, gene_var_train=vt, top_k=4)
    perm = np.random.default_rng(1).permutation(len(sl))
    ev2 = evaluate(yt[perm], yp[perm], sl[perm], genes, gene_mean_train=mt, gene_var_train=vt,
                   top_k=4)
    for name in ev1.metrics:
        assert ev1.metrics[name] == pytest.approx(ev2.metrics[name], abs=1e-12), name
    pd.testing.assert_frame_equal(ev1.per_gene, ev2.per_gene, atol=1e-12)
    assert ev1.counts == ev2.counts


def test_slide_labels_of_any_hashable_type():
    yt, yp, sl, genes, mt, vt = _make_case(8, n_slides=3, n_genes=4)
    ints = pd.factorize(sl, sort=True)[0] + 10
    ev1 = evaluate(yt, yp, sl, genes, gene_mean_train=mt, gene_var_train=vt)
    ev2 = evaluate(yt, yp, list(ints), genes, gene_mean_train=mt, gene_var_train=vt)
    assert ev1.metrics == pytest.approx(ev2.metrics)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["y_true", "y_pred"])
def test_non_finite_values_refused(bad, which):
    yt, yp, sl, genes, mt, vt = _make_case(0, n_genes=4)
    arrays = {"y_true": yt.copy(), "y_pred": yp.copy()}
    arrays[which][3, 2] = bad
    with pytest.raises(ValueError, match=f"{which} contains 1 non-finite"):
        evaluate(arrays["y_true"], arrays["y_pred"], sl, genes,
                 gene_mean_train=mt, gene_var_train=vt)


def test_shape_and_label_validation():
    yt, yp, sl, genes, mt, vt = _make_case(0, n_genes=4)
    kw = {"gene_mean_train": mt, "gene_var_train": vt}
    with pytest.raises(ValueError, match="2-D"):
        evaluate(yt[:, 0], yp[:, 0], sl, genes[:1], **kw)
    with pytest.raises(ValueError, match="shape"):
        evaluate(yt, yp[:, :3], sl, genes, **kw)
    with pytest.raises(ValueError, match="slide_ids"):
        evaluate(yt, yp, sl[:-1], genes, **kw)
    with pytest.raises(ValueError, match="len\\(genes\\)"):
        evaluate(yt, yp, sl, genes[:3], **kw)
    with pytest.raises(ValueError, match="duplicate"):
        evaluate(yt, yp, sl, ["a", "a", "b", "c"], **kw)
    with pytest.raises(ValueError, match="gene_mean_train is required"):
        evaluate(yt, yp, sl, genes, gene_var_train=vt)
    with pytest.raises(ValueError, match="gene_var_train is required"):
        evaluate(yt, yp, sl, genes, gene_mean_train=mt)
    with pytest.raises(ValueError, match="gene_mean_train must have shape"):
        evaluate(yt, yp, sl, genes, gene_mean_train=mt[:2], gene_var_train=vt)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(yt, yp, sl, genes, gene_mean_train=np.r_[mt[:3], np.nan], gene_var_train=vt)
    with pytest.raises(ValueError, match="missing label"):
        evaluate(yt, yp, np.r_[sl[:-1], None], genes, **kw)
    with pytest.raises(ValueError, match="top_k"):
        evaluate(yt, yp, sl, genes, top_k=0, **kw)
    # the CLI maps it to a user error (exit code 2)
    with pytest.raises(UserError):
        evaluate(yt, yp[:, :3], sl, genes, **kw)
    assert issubclass(EvaluationInputError, ValueError)


# --------------------------------------------------------------------------------------------
# top-k selection uses TRAINING statistics
# --------------------------------------------------------------------------------------------


def test_top_k_uses_train_statistics_not_test():
    rng = np.random.default_rng(3)
    n, n_genes = 60, 6
    sl = np.repeat(["a", "b"], n // 2)
    # test-set expression level/variance rises with gene index ...
    scale = np.arange(1, n_genes + 1, dtype=float)
    yt = rng.normal(size=(n, n_genes)) * scale + 10 * scale
    # ... and predictions are good for genes 0-1, useless for the others
    yp = rng.normal(size=(n, n_genes))
    yp[:, :2] = yt[:, :2] + 0.1 * rng.normal(size=(n, 2))
    # training statistics rank genes the other way round (gene 0 highest)
    mt = scale[::-1].copy()
    vt = scale[::-1] ** 2
    ev = evaluate(yt, yp, sl, [f"g{i}" for i in range(n_genes)],
                  gene_mean_train=mt, gene_var_train=vt, top_k=2)
    pcc = ev.per_gene["pcc"].to_numpy()
    assert ev.metrics["pcc_top2_heg"] == pytest.approx(pcc[[0, 1]].mean())
    assert ev.metrics["pcc_top2_hvg"] == pytest.approx(pcc[[0, 1]].mean())
    assert ev.metrics["pcc_top2_heg"] > 0.9
    # a test-statistics ranking would have picked genes 4, 5 (near-zero PCC)
    assert abs(pcc[[4, 5]].mean()) < 0.5
    # heg and hvg use their own statistic
    ev2 = evaluate(yt, yp, sl, [f"g{i}" for i in range(n_genes)],
                   gene_mean_train=mt, gene_var_train=scale, top_k=2)
    assert ev2.metrics["pcc_top2_hvg"] == pytest.approx(pcc[[4, 5]].mean())
    assert ev2.metrics["pcc_top2_heg"] == pytest.approx(pcc[[0, 1]].mean())
    assert ev2.counts["n_top_genes"] == 2


def test_top_k_larger_than_gene_count_uses_all_genes():
    yt, yp, sl, genes, mt, vt = _make_case(4, n_genes=7)
    ev = evaluate(yt, yp, sl, genes, gene_mean_train=mt, gene_var_train=vt)
    assert ev.metrics["pcc_top50_heg"] == pytest.approx(ev.metrics["pcc_mean"], abs=1e-12)
    assert ev.metrics["pcc_top50_hvg"] == pytest.approx(ev.metrics["pcc_mean"], abs=1e-12)
    assert ev.counts["n_top_genes"] == 7


# --------------------------------------------------------------------------------------------
# documentation contract
# --------------------------------------------------------------------------------------------


def test_metric_levels_cover_default_metric_names():
    yt, yp, sl, genes, mt, vt = _make_case(0)
    ev = evaluate(yt, yp, sl, genes, gene_mean_train=mt, gene_var_train=vt)
    assert isinstance(ev, Evaluation)
    assert set(ev.metrics) == set(METRIC_LEVELS) - {"pcc_specific_mean"}
    with_generic = evaluate(yt, yp, sl, genes, gene_mean_train=mt, gene_var_train=vt,
                            generic=np.random.default_rng(0).normal(size=(len(yt), 2)))
    assert set(with_generic.metrics) == set(METRIC_LEVELS)
    assert all(isinstance(v, str) and v.endswith(".") for v in METRIC_LEVELS.values())
    assert list(ev.per_gene.columns) == [
        "gene", "pcc", "pcc_pooled", "spearman", "r2", "mse", "mae", "mean_train",
        "var_train", "n_undefined_slides",
    ]
    assert {"n_genes", "n_spots", "n_slides", "n_constant_pred_gene_slides",
            "n_constant_true_gene_slides", "n_constant_pred_genes_pooled"} <= set(ev.counts)
    assert "the 10 evaluated genes" in metric_level("pcc_top10_heg")
    with pytest.raises(KeyError):
        metric_level("nope")


# --------------------------------------------------------------------------------------------
# paired statistics
# --------------------------------------------------------------------------------------------


def test_holm_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    assert holm([]).size == 0
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


def test_paired_wilcoxon():
    rng = np.random.default_rng(0)
    a = rng.normal(size=30)
    b = a + 0.5 + 0.1 * rng.normal(size=30)
    stat, p = paired_wilcoxon(a, b)
    ref = stats.wilcoxon(a, b, zero_method="wilcox")
    assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert p < 1e-4
    assert paired_wilcoxon(a, a) == (0.0, 1.0)
    with pytest.raises(ValueError):
        paired_wilcoxon(a, b[:-1])


def test_bootstrap_ci():
    v = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.35, 0.25])
    lo, hi = bootstrap_ci(v, n_boot=500, seed=3)
    assert lo <= v.mean() <= hi
    assert lo < hi
    assert (lo, hi) == bootstrap_ci(v, n_boot=500, seed=3)
    assert (lo, hi) != bootstrap_ci(v, n_boot=500, seed=4)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    with pytest.raises(ValueError):
        bootstrap_ci([])


# --------------------------------------------------------------------------------------------
# vectorisation sanity
# --------------------------------------------------------------------------------------------


def test_large_input_completes():
    rng = np.random.default_rng(0)
    n, g = 20_000, 500
    yt = rng.normal(size=(n, g)).astype(np.float32)
    yp = (yt + rng.normal(size=(n, g)).astype(np.float32))
    sl = np.repeat(np.arange(4), n // 4)
    ev = evaluate(yt, yp, sl, [f"g{i}" for i in range(g)],
                  gene_mean_train=rng.normal(size=g), gene_var_train=rng.uniform(size=g))
    assert ev.counts["n_spots"] == n and ev.per_gene.shape[0] == g
    assert 0.6 < ev.metrics["pcc_mean"] < 0.8


def test_row_blocked_moments_match_scipy_across_blocks(monkeypatch) -> None:
    """Pearson from row blocks (several blocks here) keeps scipy's values, the constant-column
    rule with large means, and float64 sums for float32 input."""
    from scipy import stats

    import stbench.protocol.metrics as metrics

    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 6 * 128)  # 128-row blocks
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1100, 6)) + 1e6  # large means: centring matters
    b = a * rng.normal(size=6) + rng.normal(size=(1100, 6))
    a[:, 2] = 5.0  # constant truth column
    b[:, 4] = -1.0  # constant prediction column
    r, undefined = metrics.pearson_columns(a, b)
    assert undefined.tolist() == [False, False, True, False, True, False]
    assert np.isnan(r[undefined]).all()
    for j in np.flatnonzero(~undefined):
        assert r[j] == pytest.approx(stats.pearsonr(a[:, j], b[:, j])[0], abs=1e-10)
    r32, _ = metrics.pearson_columns(a.astype(np.float32) - 1e6, b.astype(np.float32))
    assert r32.dtype == np.float64
    ev = metrics.evaluate(a, b, ["s"] * 1100, [f"g{j}" for j in range(6)],
                          gene_mean_train=np.ones(6), gene_var_train=np.ones(6))
    np.testing.assert_allclose(ev.per_gene["mse"].to_numpy(), ((a - b) ** 2).mean(0), rtol=1e-9)
    np.testing.assert_allclose(ev.per_gene["mae"].to_numpy(), np.abs(a - b).mean(0), rtol=1e-9)
