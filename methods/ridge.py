"""``ridge``: the linear probe of HEST-Benchmark (a supervised reference).

Spot image features are standardised (training statistics), reduced by PCA to
``n_components`` (256 as in HEST), then one multi-output ridge regression predicts every
panel gene. Alpha rule: when validation slides exist, alpha is chosen from ``alpha_grid`` by
the validation slides' mean per-gene PCC; otherwise ``alpha`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stbench.method import Bundle, FitContext, Method, MethodConfig, MethodMeta
from stbench.methods._linear import pca_components
from stbench.ranges import bounded, bounded_list


def mean_gene_pcc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over genes of Pearson's r over spots (constant columns count as 0)."""
    yc, pc = y - y.mean(0), p - p.mean(0)
    den = np.sqrt((yc**2).sum(0) * (pc**2).sum(0))
    r = np.where(den > 0, (yc * pc).sum(0) / np.where(den > 0, den, 1.0), 0.0)
    return float(r.mean()) if r.size else 0.0


class Ridge(Method):
    """Standardise -> PCA -> ridge, fitted on all panel genes."""

    meta = MethodMeta(
        name="ridge",
        kind="supervised",
        needs=frozenset({"image"}),
        citation="Jaume et al., HEST-1k, NeurIPS 2024 (linear probe)",
        version="1",
        trained_on="all",
    )

    @dataclass
    class Config(MethodConfig):
        """Hyperparameters of the probe."""

        n_components: int = bounded(256, ">= 1")
        alpha: float = bounded(1.0, "> 0")
        alpha_grid: list[float] = bounded_list([0.01, 0.1, 1.0, 10.0, 100.0, 1000.0], "> 0")

    @classmethod
    def search_space(cls, trial) -> dict:
        return {"alpha": trial.suggest_float("alpha", 1e-3, 1e4, log=True),
                "n_components": trial.suggest_categorical("n_components", [32, 64, 128, 256])}

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        x = train.stack("image").astype(np.float64)
        y = train.expression().astype(np.float64)
        self._mu, self._sd = x.mean(0), x.std(0) + 1e-8
        xs = (x - self._mu) / self._sd
        k = max(1, min(self.config.n_components, xs.shape[0] - 1, xs.shape[1]))
        self._components = pca_components(xs, k)
        z = xs @ self._components
        self._z_mean, self._y_mean = z.mean(0), y.mean(0)
        zc, yc = z - self._z_mean, y - self._y_mean
        self._genes = list(train.genes)
        u, s, wt = np.linalg.svd(zc, full_matrices=False)
        uty = u.T @ yc

        def solve(alpha: float) -> np.ndarray:
            return wt.T @ ((s / (s**2 + alpha))[:, None] * uty)

        alpha = float(self.config.alpha)
        if val is not None and val.slides:
            genes = [g for g in val.genes if g in set(self._genes)]
            cols = [self._genes.index(g) for g in genes]
            zv = self._project(val.stack("image")) - self._z_mean
            yv = val.expression()[:, [val.genes.index(g) for g in genes]]
            scores = {a: mean_gene_pcc(yv, zv @ solve(a)[:, cols]) for a in self.config.alpha_grid}
            alpha = max(scores, key=lambda a: (scores[a], a))
            for step, a in enumerate(self.config.alpha_grid):
                ctx.log_metric("val_pcc_by_alpha", scores[a], step)
        self.alpha_ = alpha
        self._coef = solve(alpha)

    def _project(self, x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float64) - self._mu) / self._sd) @ self._components

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        index = {g: i for i, g in enumerate(self._genes)}
        missing = [g for g in genes if g not in index]
        if missing:
            raise ValueError(f"ridge was not trained on genes {missing[:5]}")
        cols = [index[g] for g in genes]
        z = self._project(bundle.stack("image")) - self._z_mean
        return (z @ self._coef[:, cols] + self._y_mean[cols]).astype(np.float32)
