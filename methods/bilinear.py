"""``bilinear``: closed-form bilinear ridge from spot images and gene texts (zero-shot baseline).

Model. Let ``X`` (spots x c) be the training spots' image features, standardised with the
training statistics (``standardise``), reduced by PCA to ``c = n_components`` and centred; ``T``
(genes x e) the seen genes' text embeddings (``ctx.gene_text.embed``) with one constant column
appended (``text_bias``: lets every gene share an image response); ``Y`` (spots x genes) the
seen genes' log-normalised expression, CENTRED PER GENE over the training spots. Then

    W = argmin ||Y - X W T^T||_F^2 + lam_eff ||W||_F^2

is solved in closed form through the eigendecompositions ``X^T X = V_x diag(s_x) V_x^T`` and
``T^T T = V_t diag(s_t) V_t^T`` (both from thin SVDs, never a Kronecker product):

    W = V_x [ (V_x^T X^T Y T V_t) / (s_x s_t^T + lam_eff) ] V_t^T    (elementwise division)

which is exact: directions outside the row spaces of ``X`` and ``T`` get zero weight, as in the
full ridge solution. A gene ``g`` with text embedding ``t_g`` -- seen or never seen -- is
predicted as ``x W t_g + m_g``.

Per-gene offsets ``m_g``: a seen gene uses its training mean; any other gene uses a ridge
regression from text to the seen genes' means (``mean_lam``, relative as below). Offsets do
not change per-gene PCC but keep ``mse``/``mae`` sensible.

Regulariser. ``lam`` is RELATIVE (one scalar; no separate image/text penalties):
``lam_eff = lam * mean(s_x) * mean(s_t)``, the product of the mean non-zero eigenvalues of
``X^T X`` and ``T^T T``, so a value means the same for any number of spots, genes or feature
scale. Model selection: when a validation bundle with genes is given (the harness passes
validation slides carrying validation genes, which are held out from ``train``), ``lam`` is
chosen from ``lam_grid`` by the validation mean per-gene PCC (per gene and validation slide,
averaged over slides then genes), ties to the larger ``lam``; otherwise ``lam`` is used.
Only training and validation data are used; ``predict`` never reads expression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stbench.method import Bundle, FitContext, GeneText, Method, MethodConfig, MethodMeta
from stbench.methods._linear import mean_gene_pcc, pca_components
from stbench.ranges import bounded, bounded_list


def bilinear_ridge(x: np.ndarray, y: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """``argmin_W ||y - x W t^T||^2 + lam ||W||^2`` (absolute ``lam``); W is (d_x, d_t).

    Uses the thin SVDs of ``x`` and ``t`` (the eigendecompositions of ``x^T x`` and ``t^T t``).
    """
    core, vx, vt, sx2, st2 = _factorise(x, y, t)
    return vx @ (core / (sx2[:, None] * st2[None, :] + lam)) @ vt.T


def _factorise(
    x: np.ndarray, y: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(V_x^T X^T Y T V_t, V_x, V_t, s_x, s_t)`` restricted to the non-zero eigenvalues."""
    ux, sx, vxt = np.linalg.svd(x, full_matrices=False)
    ut, st, vtt = np.linalg.svd(t, full_matrices=False)
    kx = sx > sx.max(initial=0.0) * 1e-10
    kt = st > st.max(initial=0.0) * 1e-10
    ux, sx, vx = ux[:, kx], sx[kx], vxt[kx].T
    ut, st, vt = ut[:, kt], st[kt], vtt[kt].T
    # V_x^T X^T = diag(s_x) U_x^T and T V_t = U_t diag(s_t).
    core = (sx[:, None] * (ux.T @ y @ ut)) * st[None, :]
    return core, vx, vt, sx**2, st**2


class Bilinear(Method):
    """Closed-form bilinear ridge: image features x gene text embeddings -> expression."""

    meta = MethodMeta(
        name="bilinear",
        kind="zero_shot",
        needs=frozenset({"image", "gene_text"}),
        citation=(
            "Bilinear (dyadic) ridge regression, e.g. Pahikkala et al., Two-step "
            "kernel ridge regression, Mach Learn 2014; stbench zero-shot baseline"
        ),
        version="1",
        trained_on="seen",
    )

    @dataclass
    class Config(MethodConfig):
        """Hyperparameters (see the module docstring for the model and ``lam``'s scale).

        Attributes:
            lam: Relative ridge penalty, used when no validation data is given.
            lam_grid: Candidates for ``lam`` chosen by validation PCC.
            n_components: PCA components kept of the image features.
            standardise: Standardise image features (training mean/std) before PCA.
            text_bias: Append a constant column to the text embeddings.
            mean_lam: Relative ridge penalty of the text -> per-gene-mean model.
        """

        lam: float = bounded(0.1, "> 0")
        lam_grid: list[float] = bounded_list([0.001, 0.01, 0.1, 1.0, 10.0, 100.0], "> 0")
        n_components: int = bounded(256, ">= 1")
        standardise: bool = True
        text_bias: bool = True
        mean_lam: float = bounded(1.0, "> 0")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "lam": trial.suggest_float("lam", 1e-4, 1e3, log=True),
            "lam_grid": [],
            "n_components": trial.suggest_categorical("n_components", [16, 32, 64, 128, 256]),
        }

    # ---------------------------------------------------------------------------------------

    def _text(self, genes: list[str]) -> np.ndarray:
        t = np.asarray(self._gene_text.embed(list(genes)), dtype=np.float64)
        if self.config.text_bias:
            t = np.concatenate([t, np.full((t.shape[0], 1), self._bias)], axis=1)
        return t

    def _project(self, x: np.ndarray) -> np.ndarray:
        z = ((np.asarray(x, dtype=np.float64) - self._mu) / self._sd) @ self._components
        return z - self._z_mean

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        if ctx.gene_text is None:
            raise RuntimeError("bilinear needs gene text embeddings (ctx.gene_text)")
        cfg = self.config
        self._gene_text: GeneText = ctx.gene_text
        x = train.stack("image").astype(np.float64)
        y = train.expression().astype(np.float64)
        self._genes = list(train.genes)

        self._mu = x.mean(0)
        self._sd = x.std(0) + 1e-8 if cfg.standardise else np.ones(x.shape[1])
        xs = (x - self._mu) / self._sd
        k = max(1, min(int(cfg.n_components), xs.shape[0] - 1, xs.shape[1]))
        self._components = pca_components(xs, k)
        self._z_mean = np.zeros(k)
        z = self._project(x)
        self._z_mean = z.mean(0)
        z = z - self._z_mean

        self._y_mean = y.mean(0)
        raw_t = np.asarray(ctx.gene_text.embed(self._genes), dtype=np.float64)
        norms = np.linalg.norm(raw_t, axis=1)
        self._bias = float(norms.mean()) if norms.size and norms.mean() > 0 else 1.0
        t = self._text(self._genes)

        core, vx, vt_, sx2, st2 = _factorise(z, y - self._y_mean, t)
        scale = float(sx2.mean() * st2.mean()) if sx2.size and st2.size else 1.0
        self._vx, self._vt = vx, vt_

        def core_for(lam: float) -> np.ndarray:
            return core / (sx2[:, None] * st2[None, :] + lam * scale)

        self._fit_mean_model(raw_t)

        lam = float(cfg.lam)
        grid = [float(g) for g in (cfg.lam_grid or [])]
        if val is not None and val.slides and val.genes and grid:
            genes = list(val.genes)
            zv = self._project(val.stack("image")) @ vx
            tv = self._text(genes) @ vt_
            yv = val.expression().astype(np.float64)
            slide = val.slide_index()
            scores = {}
            for lam_c in grid:
                pred = zv @ core_for(lam_c) @ tv.T
                per_slide = [mean_gene_pcc(yv[slide == i], pred[slide == i])
                             for i in range(len(val.slides))]
                scores[lam_c] = float(np.mean(per_slide))
            lam = max(scores, key=lambda c: (scores[c], c))
            for step, lam_c in enumerate(grid):
                ctx.log_metric("val_pcc_by_lam", scores[lam_c], step)
            self.val_scores_ = scores
        self.lam_ = lam
        self._core = core_for(lam)

    def _fit_mean_model(self, raw_t: np.ndarray) -> None:
        """Ridge from text embeddings to the seen genes' means (for genes without one)."""
        self._t_mean = raw_t.mean(0)
        tc = raw_t - self._t_mean
        m0 = float(self._y_mean.mean()) if self._y_mean.size else 0.0
        u, s, vtt = np.linalg.svd(tc, full_matrices=False)
        keep = s > s.max(initial=0.0) * 1e-10
        u, s, vtt = u[:, keep], s[keep], vtt[keep]
        lam = float(self.config.mean_lam) * (float((s**2).mean()) if s.size else 1.0)
        self._mean_coef = vtt.T @ ((s / (s**2 + lam)) * (u.T @ (self._y_mean - m0)))
        self._mean_intercept = m0

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        genes = list(genes)
        if not genes:
            return np.zeros((bundle.n_spots, 0), dtype=np.float32)
        z = self._project(bundle.stack("image")) @ self._vx
        t = self._text(genes)
        spatial = z @ self._core @ (t @ self._vt).T
        raw_t = t[:, :-1] if self.config.text_bias else t
        offsets = (raw_t - self._t_mean) @ self._mean_coef + self._mean_intercept
        index = {g: i for i, g in enumerate(self._genes)}
        for j, g in enumerate(genes):
            if g in index:
                offsets[j] = self._y_mean[index[g]]
        return (spatial + offsets[None, :]).astype(np.float32)
