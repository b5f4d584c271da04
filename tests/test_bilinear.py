"""The ``bilinear`` zero-shot baseline: closed form, interface, zero-shot on a toy problem."""

from __future__ import annotations

import numpy as np
import pytest

from stbench.method import Bundle, FitContext, GeneText, SlideView
from stbench.methods.bilinear import Bilinear, bilinear_ridge


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """These problems are small: one BLAS thread avoids spin-wait slowdowns on shared CPUs."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def kron_ridge(x: np.ndarray, y: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """Brute force: vec(X W T^T) = (T kron X) vec(W) with column-major vec."""
    k = np.kron(t, x)
    vec_w = np.linalg.solve(k.T @ k + lam * np.eye(k.shape[1]), k.T @ y.reshape(-1, order="F"))
    return vec_w.reshape(x.shape[1], t.shape[1], order="F")


@pytest.mark.parametrize(
    ("n", "d", "g", "e", "lam"),
    [(12, 4, 5, 3, 0.7), (9, 6, 4, 7, 0.05), (5, 8, 6, 2, 3.0)],  # incl. rank-deficient X, T
)
def test_closed_form_equals_kronecker_solve(n, d, g, e, lam) -> None:
    rng = np.random.default_rng(n * 100 + e)
    x, t, y = rng.normal(size=(n, d)), rng.normal(size=(g, e)), rng.normal(size=(n, g))
    np.testing.assert_allclose(bilinear_ridge(x, y, t, lam), kron_ridge(x, y, t, lam),
                               rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# A toy zero-shot problem: expression = image features x B x text, texts shared by gene groups.
# ----------------------------------------------------------------------------------------------


def toy_problem(seed: int = 0, n_slides: int = 3, n_spots: int = 60, n_genes: int = 24,
                d: int = 10, e: int = 6):
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n_genes)]
    t = np.abs(rng.normal(size=(n_genes, e))) ** 2
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    b = rng.normal(size=(d, e))
    views, exprs = [], []
    for s in range(n_slides):
        x = rng.normal(size=(n_spots, d))
        y = 2.0 + x @ b @ t.T + 0.3 * rng.normal(size=(n_spots, n_genes))
        grid = np.stack([np.arange(n_spots) % 10, np.arange(n_spots) // 10], 1)
        views.append(SlideView(f"S{s}", f"P{s}", {"image": x.astype(np.float32)},
                               grid * 100.0, grid, None, 1.0))
        exprs.append(y)
    embed = {g: t[i] for i, g in enumerate(genes)}
    gene_text = GeneText({g: f"text {g}" for g in genes},
                         embed=lambda names: np.stack([embed[n] for n in names]))
    return genes, views, exprs, gene_text


def with_expression(views, exprs, cols):
    out = []
    for v, y in zip(views, exprs):
        out.append(SlideView(v.name, v.patient, v.features, v.spatial, v.grid,
                             y[:, cols], v.microns_per_pixel))
    return out


def pcc_mean(y: np.ndarray, p: np.ndarray) -> float:
    yc, pc = y - y.mean(0), p - p.mean(0)
    return float(((yc * pc).sum(0) / np.sqrt((yc**2).sum(0) * (pc**2).sum(0))).mean())


def test_method_equals_kronecker_solve_on_standardised_features() -> None:
    """With all PCA components kept (a rotation), predictions are the exact bilinear ridge."""
    genes, views, exprs, gene_text = toy_problem(n_spots=15, n_genes=6, d=4, e=3)
    seen = list(range(6))
    train = Bundle(with_expression(views[:2], exprs[:2], seen), genes)
    m = Bilinear(Bilinear.Config(lam=0.3, lam_grid=[], n_components=256))
    m.fit(train, None, FitContext(gene_text=gene_text))
    x = train.stack("image").astype(np.float64)
    xs = (x - x.mean(0)) / (x.std(0) + 1e-8)
    y = train.expression()
    t_raw = gene_text.embed(genes)
    t = np.concatenate([t_raw, np.full((len(genes), 1), np.linalg.norm(t_raw, axis=1).mean())], 1)
    ex = np.linalg.eigvalsh(xs.T @ xs)
    et = np.linalg.eigvalsh(t.T @ t)
    lam_eff = 0.3 * ex[ex > 1e-9 * ex.max()].mean() * et[et > 1e-9 * et.max()].mean()
    w = kron_ridge(xs, y - y.mean(0), t, lam_eff)
    test = Bundle([views[2]], [])
    xt = test.stack("image").astype(np.float64)
    expected = ((xt - x.mean(0)) / (x.std(0) + 1e-8)) @ w @ t.T + y.mean(0)
    np.testing.assert_allclose(m.predict(test, genes), expected, rtol=1e-4, atol=1e-4)


def test_predict_shape_unseen_genes_and_no_expression() -> None:
    genes, views, exprs, gene_text = toy_problem()
    seen, unseen = list(range(0, 18)), list(range(18, 24))
    train = Bundle(with_expression(views[:2], exprs[:2], seen), [genes[i] for i in seen])
    test = Bundle([views[2]], [])  # expression is None: predict must not need it
    assert test.slides[0].expression is None
    m = Bilinear()
    m.fit(train, None, FitContext(gene_text=gene_text))
    asked = [genes[i] for i in unseen] + [genes[0]]
    pred = m.predict(test, asked)
    assert pred.shape == (test.n_spots, len(asked))
    assert np.isfinite(pred).all()
    assert m.predict(test, []).shape == (test.n_spots, 0)
    # Zero-shot on the toy problem: unseen genes are predicted from their text alone.
    assert pcc_mean(exprs[2][:, unseen], pred[:, : len(unseen)]) > 0.8
    # Offsets: a seen gene gets its training mean, an unseen one a text-predicted mean.
    assert abs(pred[:, -1].mean() - train.expression()[:, 0].mean()) < 0.5
    assert np.all(np.abs(pred[:, :-1].mean(0) - 2.0) < 1.0)


def test_validation_selects_lambda_on_validation_genes_only() -> None:
    genes, views, exprs, gene_text = toy_problem(seed=1, n_slides=4)
    fit_cols, val_cols = list(range(0, 14)), list(range(14, 18))
    train = Bundle(with_expression(views[:2], exprs[:2], fit_cols), [genes[i] for i in fit_cols])
    val = Bundle(with_expression(views[2:3], exprs[2:3], val_cols), [genes[i] for i in val_cols])
    logged = []
    ctx = FitContext(gene_text=gene_text, val_genes=list(val.genes),
                     log_metric=lambda name, value, step: logged.append((name, value, step)))
    grid = [1e-3, 1e-1, 1e1, 1e3]
    m = Bilinear(Bilinear.Config(lam_grid=grid))
    m.fit(train, val, ctx)
    assert m.lam_ in grid
    assert set(m.val_scores_) == set(grid)
    assert m.val_scores_[m.lam_] == max(m.val_scores_.values())
    assert [s for _, _, s in logged] == list(range(len(grid)))
    # Without a grid (or without validation data) the configured lam is used.
    m2 = Bilinear(Bilinear.Config(lam=5.0, lam_grid=[]))
    m2.fit(train, val, ctx)
    assert m2.lam_ == 5.0


def test_meta_registry_and_search_space() -> None:
    import optuna

    from stbench.plugins import METHODS

    assert METHODS.get("bilinear") is Bilinear
    assert Bilinear.meta.kind == "zero_shot" and Bilinear.meta.trained_on == "seen"
    assert Bilinear.meta.needs == frozenset({"image", "gene_text"})
    space = Bilinear.search_space(optuna.trial.FixedTrial({"lam": 0.5, "n_components": 32}))
    assert space["lam"] == 0.5 and space["n_components"] == 32
    cfg = Bilinear.Config(**space)
    assert cfg.lam == 0.5


def test_fit_requires_gene_text() -> None:
    genes, views, exprs, _ = toy_problem()
    train = Bundle(with_expression(views[:2], exprs[:2], list(range(24))), genes)
    with pytest.raises(RuntimeError, match="gene text"):
        Bilinear().fit(train, None, FitContext())


@pytest.mark.parametrize("shape", [(300, 40), (30, 40)])
def test_pca_components_span_the_svd_subspace(shape) -> None:
    from stbench.methods._linear import pca_components

    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) @ np.diag(np.linspace(3, 0.1, shape[1]))
    x -= x.mean(0)
    k = 10
    got = pca_components(x, k)
    ref = np.linalg.svd(x, full_matrices=False)[2][:k].T
    assert got.shape == (shape[1], k)
    np.testing.assert_allclose(got.T @ got, np.eye(k), atol=1e-10)
    # same subspace, same order: |cos| of matching directions is 1
    np.testing.assert_allclose(np.abs(np.sum(got * ref, axis=0)), 1.0, atol=1e-8)
