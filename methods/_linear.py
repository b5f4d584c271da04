"""Numpy helpers shared by the methods: PCA, the ridge probe, feature scaling, validation PCC.

Numpy only (no torch): the closed-form methods (``ridge``, ``bilinear``, ``textknn``,
``seen_mean``) import nothing heavier. Validation scores use the evaluator's
:func:`~stbench.protocol.metrics.pearson_columns`, the one numpy Pearson of the project.
"""

from __future__ import annotations

import numpy as np

from stbench.protocol.metrics import pearson_columns

SCALINGS = ("global", "feature", "none")


def pca_components(xs: np.ndarray, k: int) -> np.ndarray:
    """The top-``k`` principal directions of the centred matrix ``xs`` (n, d), as (d, k).

    With more rows than columns the eigenvectors of the Gram matrix ``xs.T @ xs`` are used
    (about 5x less CPU than a thin SVD at 10,000 x 1,280, same subspace); otherwise the SVD.
    Columns are ordered by decreasing variance; their signs are arbitrary, which the methods
    using them do not depend on (isotropic ridge penalties on the projected features).
    """
    n, d = xs.shape
    k = int(min(k, d))
    if n > d:
        _, vectors = np.linalg.eigh(xs.T @ xs)
        return np.ascontiguousarray(vectors[:, ::-1][:, :k])
    _, _, vt = np.linalg.svd(xs, full_matrices=False)
    return vt[:k].T


class FeatureScaler:
    """Training-set scaling of per-spot features.

    * ``global`` (default of the methods here): centre every dimension, divide all of them by
      ONE scale, the root mean per-dimension variance. Relative scales are kept, so a
      dimension that is nearly constant on the training slides cannot explode on a test slide.
    * ``feature``: per-dimension z-scores (HEST's linear-probe convention). With deep-encoder
      features some dimensions have standard deviations near 0 on the training slides and a
      test slide's values land hundreds of SDs away (demo, efficientnet_lite0: up to 1449 SD,
      307 of 1280 dimensions beyond 10 SD), which wrecked predictions on whole test slides.
    * ``none``: raw features.
    """

    def __init__(self, mode: str = "global") -> None:
        if mode not in SCALINGS:
            raise ValueError(f"unknown scaling {mode!r}: use one of {', '.join(SCALINGS)}")
        self.mode = mode

    def fit(self, x: np.ndarray) -> FeatureScaler:
        x = np.asarray(x, dtype=np.float64)
        d = x.shape[1]
        if self.mode == "none":
            self.mu, self.sd = np.zeros(d), np.ones(d)
        elif self.mode == "feature":
            self.mu, self.sd = x.mean(0), x.std(0) + 1e-8
        else:
            self.mu = x.mean(0)
            scale = float(np.sqrt(x.var(0).mean())) if x.size else 1.0
            self.sd = np.full(d, scale if scale > 0 else 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mu) / self.sd


class RidgeProbe:
    """Scale -> PCA -> multi-output ridge, with the solution for any ``alpha``.

    ``fit`` does the SVDs once; ``coef(alpha)`` is then a cheap product. ``scaling`` is a
    :class:`FeatureScaler` mode (``feature`` = HEST's z-scores).
    """

    def __init__(self, n_components: int = 256, scaling: str = "global") -> None:
        self.n_components = int(n_components)
        self.scaler = FeatureScaler(scaling)

    def fit(self, x: np.ndarray, y: np.ndarray) -> RidgeProbe:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        xs = self.scaler.fit(x).transform(x)
        k = max(1, min(self.n_components, xs.shape[0] - 1, xs.shape[1]))
        self.components = pca_components(xs, k)
        z = xs @ self.components
        self.z_mean, self.y_mean = z.mean(0), y.mean(0)
        u, s, wt = np.linalg.svd(z - self.z_mean, full_matrices=False)
        self._s, self._w, self._uty = s, wt.T, u.T @ (y - self.y_mean)
        return self

    def coef(self, alpha: float) -> np.ndarray:
        """Ridge coefficients (n_components, n_targets) for ``alpha`` (absolute)."""
        s = self._s
        return self._w @ ((s / (s**2 + float(alpha)))[:, None] * self._uty)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Centred PCA scores of new spots."""
        return self.scaler.transform(x) @ self.components - self.z_mean

    def predict(self, x: np.ndarray, alpha: float) -> np.ndarray:
        return self.project(x) @ self.coef(alpha) + self.y_mean


def mean_gene_pcc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over genes of Pearson's r over spots (the evaluator's ``pearson_columns``; a column
    constant in either argument counts as 0)."""
    y = np.asarray(y, np.float64)
    if y.ndim != 2 or y.shape[1] == 0 or y.shape[0] == 0:
        return 0.0
    r, _ = pearson_columns(y, np.asarray(p, np.float64))
    return float(np.nan_to_num(r, nan=0.0).mean())


def mean_gene_pcc_per_slide(y: np.ndarray, p: np.ndarray, slide: np.ndarray) -> float:
    """The harness's ``pcc_mean`` convention: per gene and slide, mean over slides then genes."""
    ids = np.unique(slide)
    if ids.size == 0:
        return 0.0
    return float(np.mean([mean_gene_pcc(y[slide == i], p[slide == i]) for i in ids]))
