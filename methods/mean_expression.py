"""``mean_expression``: the per-gene training mean, constant across spots (a control).

Its PCC is 0 by definition (a constant prediction); it is the floor for ``mse`` / ``mae``.
It is trained on all panel genes (``trained_on="all"``): it is a control, not a zero-shot
method, and it is labelled so in every result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stbench.method import Bundle, FitContext, Method, MethodConfig, MethodMeta


class MeanExpression(Method):
    """Predicts each gene's mean log-normalised expression over the training spots."""

    meta = MethodMeta(
        name="mean_expression",
        kind="control",
        needs=frozenset(),
        citation="Control: per-gene training mean",
        version="1",
        trained_on="all",
    )

    @dataclass
    class Config(MethodConfig):
        """No hyperparameters."""

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        y = train.expression()
        self._means = dict(zip(train.genes, y.mean(axis=0).astype(np.float64)))
        self._fallback = float(y.mean()) if y.size else 0.0

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        row = np.array([self._means.get(g, self._fallback) for g in genes], dtype=np.float32)
        return np.tile(row, (bundle.n_spots, 1))
