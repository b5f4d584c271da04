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
from stbench.methods._linear import RidgeProbe, mean_gene_pcc
from stbench.ranges import bounded, bounded_list


class Ridge(Method):
    """Standardise -> PCA -> ridge (:class:`~stbench.methods._linear.RidgeProbe` with HEST's
    per-dimension z-scores), fitted on all panel genes."""

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
        self._probe = RidgeProbe(self.config.n_components, "feature").fit(
            train.stack("image"), train.expression())
        self._genes = list(train.genes)
        alpha = float(self.config.alpha)
        if val is not None and val.slides:
            genes = [g for g in val.genes if g in set(self._genes)]
            cols = [self._genes.index(g) for g in genes]
            z = self._probe.project(val.stack("image"))
            yv = val.expression()[:, [val.genes.index(g) for g in genes]]
            scores = {a: mean_gene_pcc(yv, z @ self._probe.coef(a)[:, cols])
                      for a in self.config.alpha_grid}
            alpha = max(scores, key=lambda a: (scores[a], a))
            for step, a in enumerate(self.config.alpha_grid):
                ctx.log_metric("val_pcc_by_alpha", scores[a], step)
        self.alpha_ = alpha
        self._coef = self._probe.coef(alpha)

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        index = {g: i for i, g in enumerate(self._genes)}
        missing = [g for g in genes if g not in index]
        if missing:
            raise ValueError(f"ridge was not trained on genes {missing[:5]}")
        cols = [index[g] for g in genes]
        z = self._probe.project(bundle.stack("image"))
        return (z @ self._coef[:, cols] + self._probe.y_mean[cols]).astype(np.float32)
