"""``seen_mean``: every unseen gene predicted as the spot's mean predicted seen-gene expression.

A control that reads NO description. A ridge probe (``textknn.RidgeProbe``: scale, PCA,
ridge -- the HEST linear probe, ``global`` scaling by default) is fitted on the seen genes;
at a spot, every requested gene is predicted as the mean over seen genes of the probe's predictions there (by linearity, the same
as a ridge on the spot's mean seen-gene expression). It captures cellularity / total-signal
variation shared by most genes, so its per-gene PCC is far from zero on real tissue: a
zero-shot method that reads text must beat it to show that the text is used.

``alpha`` is chosen from ``alpha_grid`` by the validation slides' mean per-gene PCC of the
validation genes (each predicted by the same spot-mean), ties to the larger ``alpha``. The
columns it returns are identical; their level is the seen genes' mean expression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stbench.method import Bundle, FitContext, Method, MethodConfig, MethodMeta
from stbench.methods._linear import RidgeProbe, mean_gene_pcc_per_slide
from stbench.ranges import bounded, bounded_list


class SeenMean(Method):
    """Spot-wise mean of a ridge probe's seen-gene predictions, for every requested gene."""

    meta = MethodMeta(
        name="seen_mean",
        kind="control",
        needs=frozenset({"image"}),
        citation="Control: spot-wise mean of ridge-predicted seen-gene expression (no text)",
        version="1",
        trained_on="seen",
    )

    @dataclass
    class Config(MethodConfig):
        """Hyperparameters.

        Attributes:
            n_components: PCA components of the image features.
            alpha: Ridge penalty when no validation data is given.
            alpha_grid: Candidates for ``alpha`` chosen on validation.
            scaling: Image-feature scaling before PCA: ``global``, ``feature`` or ``none``.
        """

        n_components: int = bounded(256, ">= 1")
        alpha: float = bounded(1.0, "> 0")
        alpha_grid: list[float] = bounded_list([0.1, 1.0, 10.0, 100.0, 1000.0], "> 0")
        scaling: str = "global"

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"alpha": trial.suggest_float("alpha", 1e-2, 1e4, log=True), "alpha_grid": []}

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        cfg = self.config
        self._probe = RidgeProbe(cfg.n_components, cfg.scaling).fit(
            train.stack("image"), train.expression())
        alpha = float(cfg.alpha)
        grid = [float(a) for a in (cfg.alpha_grid or [])]
        if val is not None and val.slides and val.genes and len(grid) > 1:
            z = self._probe.project(val.stack("image"))
            y, slide = val.expression(), val.slide_index()
            scores = {}
            for a in grid:
                m = (z @ self._probe.coef(a)).mean(1) + self._probe.y_mean.mean()
                scores[a] = mean_gene_pcc_per_slide(y, np.repeat(m[:, None], y.shape[1], 1), slide)
            alpha = max(scores, key=lambda a: (scores[a], a))
            for step, a in enumerate(grid):
                ctx.log_metric("val_pcc_by_alpha", scores[a], step)
            self.val_scores_ = scores
        self.alpha_ = alpha
        self._coef_mean = self._probe.coef(alpha).mean(1)
        self._level = float(self._probe.y_mean.mean()) if self._probe.y_mean.size else 0.0

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        m = self._probe.project(bundle.stack("image")) @ self._coef_mean + self._level
        return np.repeat(m[:, None], len(genes), axis=1).astype(np.float32)
