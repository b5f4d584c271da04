"""``textknn``: transfer by description similarity (zero-shot baseline).

1. A supervised ridge probe on the SEEN genes -- the HEST linear probe of ``ridge``:
   image features centred and scaled with training statistics, PCA to ``n_components``, one
   multi-output ridge regression (``RidgeProbe``; same math as ``stbench.methods.ridge``).
   Scaling is ``global`` by default (one common scale), not per-dimension z-scores as in
   ``ridge``: see ``FeatureScaler`` for why (``scaling="feature"`` restores HEST's).
2. An unseen gene ``u`` is predicted as the softmax-weighted mean of the predictions of its
   ``k`` most similar seen genes, similarity = cosine of the description embeddings
   (``ctx.gene_text.embed``), weights ``softmax(sim / temperature)`` over those ``k``.

Model selection on validation data only: ``alpha`` from ``alpha_grid`` and the temperature from
``temperature_grid`` (when non-empty) are chosen by the validation slides' mean per-gene PCC
of the validation genes, predicted by the same transfer from the fitting genes (the validation
genes are held out of ``train`` by the harness). Ties go to the larger ``alpha`` / temperature.
A gene the probe was fitted on is predicted by the probe itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stbench.method import Bundle, FitContext, Method, MethodConfig, MethodMeta
from stbench.methods._linear import RidgeProbe, mean_gene_pcc_per_slide
from stbench.ranges import bounded, bounded_list


def _unit(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    n = np.linalg.norm(t, axis=1, keepdims=True)
    return t / np.where(n > 0, n, 1.0)


def transfer_weights(sim: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """(n_seen, n_query) weights: softmax(sim / T) over each query's top-``k`` seen genes.

    Args:
        sim: (n_query, n_seen) cosine similarities.
    """
    n_query, n_seen = sim.shape
    k = max(1, min(int(k), n_seen))
    w = np.zeros((n_seen, n_query))
    if n_seen == 0:
        return w
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(sim, order, axis=1) / max(float(temperature), 1e-8)
    top = np.exp(top - top.max(1, keepdims=True))
    top /= top.sum(1, keepdims=True)
    for q in range(n_query):
        w[order[q], q] = top[q]
    return w


class TextKNN(Method):
    """Ridge on seen genes; unseen gene = similarity-weighted mean of its k nearest seen genes."""

    meta = MethodMeta(
        name="textknn",
        kind="zero_shot",
        needs=frozenset({"image", "gene_text"}),
        citation="stbench zero-shot baseline: ridge probe (HEST-1k) + description-similarity kNN transfer",
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
            k: Seen genes each unseen gene borrows from.
            temperature: Softmax temperature on cosine similarities (no validation / no grid).
            temperature_grid: Candidates for the temperature chosen on validation.
            scaling: Image-feature scaling before PCA: ``global``, ``feature`` or ``none``.
        """

        n_components: int = bounded(256, ">= 1")
        alpha: float = bounded(1.0, "> 0")
        alpha_grid: list[float] = bounded_list([0.1, 1.0, 10.0, 100.0, 1000.0], "> 0")
        k: int = bounded(10, ">= 1")
        temperature: float = bounded(0.1, "> 0")
        temperature_grid: list[float] = bounded_list([0.02, 0.05, 0.1, 0.2, 0.5], "> 0")
        scaling: str = "global"

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "alpha": trial.suggest_float("alpha", 1e-2, 1e4, log=True),
            "alpha_grid": [],
            "k": trial.suggest_int("k", 1, 50),
            "temperature": trial.suggest_float("temperature", 0.01, 1.0, log=True),
            "temperature_grid": [],
        }

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        if ctx.gene_text is None:
            raise RuntimeError("textknn needs gene text embeddings (ctx.gene_text)")
        cfg = self.config
        self._gene_text = ctx.gene_text
        self._genes = list(train.genes)
        self._probe = RidgeProbe(cfg.n_components, cfg.scaling).fit(
            train.stack("image"), train.expression())
        self._t_seen = _unit(ctx.gene_text.embed(self._genes))

        alpha, temp = float(cfg.alpha), float(cfg.temperature)
        alphas = [float(a) for a in (cfg.alpha_grid or [])] or [alpha]
        temps = [float(t) for t in (cfg.temperature_grid or [])] or [temp]
        if val is not None and val.slides and val.genes and (len(alphas) > 1 or len(temps) > 1):
            z = self._probe.project(val.stack("image"))
            y, slide = val.expression(), val.slide_index()
            sim = _unit(ctx.gene_text.embed(list(val.genes))) @ self._t_seen.T
            scores: dict[tuple[float, float], float] = {}
            for a in alphas:
                seen_pred = z @ self._probe.coef(a) + self._probe.y_mean
                for t in temps:
                    pred = seen_pred @ transfer_weights(sim, cfg.k, t)
                    scores[(a, t)] = mean_gene_pcc_per_slide(y, pred, slide)
            alpha, temp = max(scores, key=lambda c: (scores[c], c))
            for step, (c, v) in enumerate(scores.items()):
                ctx.log_metric("val_pcc_by_alpha_temperature", v, step)
            self.val_scores_ = scores
        self.alpha_, self.temperature_ = alpha, temp
        self._coef = self._probe.coef(alpha)

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        genes = list(genes)
        if not genes:
            return np.zeros((bundle.n_spots, 0), dtype=np.float32)
        seen_pred = self._probe.project(bundle.stack("image")) @ self._coef + self._probe.y_mean
        sim = _unit(self._gene_text.embed(genes)) @ self._t_seen.T
        out = seen_pred @ transfer_weights(sim, self.config.k, self.temperature_)
        index = {g: i for i, g in enumerate(self._genes)}
        for j, g in enumerate(genes):
            if g in index:
                out[:, j] = seen_pred[:, index[g]]
        return out.astype(np.float32)
