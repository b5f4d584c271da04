"""The official evaluator: every reported metric is computed here, and only here.

Input contract of :func:`evaluate` (one call per cross-validation fold):

* ``y_true``, ``y_pred``: float arrays of shape ``(n_spots, n_genes)`` holding the
  log-normalised expression of the *evaluated* genes for *all test spots of one fold*
  (every test slide of the fold, stacked in any order). Computation is in float64.
* ``slide_ids``: ``(n_spots,)`` labels saying which test slide each spot belongs to.
* ``genes``: the ``n_genes`` unique gene names, in column order.
* ``gene_mean_train``, ``gene_var_train``: ``(n_genes,)`` per-gene mean and variance computed
  by the harness on the fold's TRAINING slides. They only choose which genes enter the
  ``pcc_top50_heg`` / ``pcc_top50_hvg`` subsets, so that the subset never depends on the test
  data. They are mandatory: omitting either raises :class:`EvaluationInputError`.

NaN policy: non-finite values (NaN, +/-inf) in ``y_true``, ``y_pred`` or the training
statistics are *refused* with :class:`EvaluationInputError` (a ``ValueError``); they are never
silently dropped or imputed.

Levels at which the metrics are computed (``METRIC_LEVELS`` holds the same text):

* ``pcc_mean``: Pearson r per (gene, test slide) over that slide's spots; averaged over the
  fold's test slides (each slide weighs the same), then over the evaluated genes (Hist2ST
  convention).
* ``pcc_specific_mean``: the partial Pearson r per (gene, test slide) given the slide's generic
  pattern (:func:`generic_pattern`: intercept, per-spot log total counts, first principal
  component of the slide's measured panel), averaged like ``pcc_mean``. PCC ignores each
  gene's scale and offset, so one shared spatial pattern (cellularity, depth) predicted for
  every gene already scores well on ``pcc_mean``; it scores 0 here. The evaluator may use the
  test slide's measurements for this; methods never see them. Only reported when the harness
  passes ``generic``.
* ``pcc_pooled_mean``: Pearson r per gene over all test spots of the fold pooled together;
  averaged over the evaluated genes (HEST / SGN convention).
* ``pcc_q25`` / ``pcc_median``: 25th percentile / median (numpy linear interpolation) over
  the evaluated genes of the per-gene slide-averaged Pearson r ("PCC@F" / "PCC@S").
* ``pcc_top50_heg`` / ``pcc_top50_hvg``: mean of the per-gene slide-averaged Pearson r over
  the ``top_k`` (default 50) evaluated genes with the highest training-set mean / variance
  (all genes if there are fewer than ``top_k``; ties broken by column order). For another
  ``top_k`` the metric is named ``pcc_top{k}_heg`` / ``pcc_top{k}_hvg``.
* ``spearman_mean``: as ``pcc_mean`` with Spearman rho (average ranks within the slide).
* ``mse`` / ``mae``: mean squared / absolute error over all (test spot, evaluated gene) pairs
  of the fold.
* ``r2_mean``: coefficient of determination ``1 - SS_res / SS_tot`` per (gene, test slide),
  ``SS_tot`` taken around the slide's own mean of the truth; averaged over slides, then genes.

Undefined values: Pearson r and Spearman rho are undefined for a (gene, slide) where the
prediction or the truth is constant over the slide's spots, and R2 is undefined where the
truth is constant (a constant prediction has a well-defined, usually non-positive, R2). An
undefined value counts as **0** in every average (it is never NaN and never dropped), and
``Evaluation.counts`` reports how often this happened. "Constant" means
``std <= 1e-12 * (1 + |mean|)`` (population std, float64, computed after centring); a slide
with a single spot is therefore always constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from stbench.errors import DataError

__all__ = [
    "CONSTANT_RTOL",
    "METRIC_LEVELS",
    "Evaluation",
    "EvaluationInputError",
    "bootstrap_ci",
    "evaluate",
    "generic_pattern",
    "holm",
    "metric_level",
    "paired_wilcoxon",
    "pearson_columns",
    "spearman_columns",
]

#: Relative tolerance for "constant": ``std <= CONSTANT_RTOL * (1 + |mean|)``.
CONSTANT_RTOL = 1e-12

METRIC_LEVELS: dict[str, str] = {
    "pcc_mean": (
        "Pearson r per gene within each test slide (over that slide's spots), averaged over the "
        "fold's test slides with equal weight, then averaged over the evaluated genes; "
        "undefined (constant) values count as 0."
    ),
    "pcc_specific_mean": (
        "Partial Pearson r per gene within each test slide, controlling for the slide's "
        "generic pattern (intercept, per-spot log total counts and the first principal "
        "component of the slide's measured panel): prediction and truth are both residualised "
        "on it by least squares before correlating; averaged over the fold's test slides, then "
        "over the evaluated genes; undefined (constant residual) values count as 0. A "
        "prediction that is the generic pattern itself scores 0."
    ),
    "pcc_pooled_mean": (
        "Pearson r per gene over all test spots of the fold pooled across slides, averaged "
        "over the evaluated genes; undefined (constant) values count as 0."
    ),
    "pcc_q25": (
        "25th percentile (linear interpolation) over the evaluated genes of the per-gene "
        "Pearson r averaged over the fold's test slides."
    ),
    "pcc_median": (
        "Median over the evaluated genes of the per-gene Pearson r averaged over the fold's "
        "test slides."
    ),
    "pcc_top50_heg": (
        "Mean over the 50 evaluated genes with the highest TRAINING-slide mean expression "
        "(all genes if fewer) of the per-gene Pearson r averaged over the fold's test slides."
    ),
    "pcc_top50_hvg": (
        "Mean over the 50 evaluated genes with the highest TRAINING-slide expression variance "
        "(all genes if fewer) of the per-gene Pearson r averaged over the fold's test slides."
    ),
    "spearman_mean": (
        "Spearman rho (average ranks) per gene within each test slide, averaged over the "
        "fold's test slides with equal weight, then over the evaluated genes; undefined "
        "(constant) values count as 0."
    ),
    "mse": (
        "Mean squared error over all (test spot, evaluated gene) pairs of the fold, on "
        "log-normalised expression."
    ),
    "mae": (
        "Mean absolute error over all (test spot, evaluated gene) pairs of the fold, on "
        "log-normalised expression."
    ),
    "r2_mean": (
        "Coefficient of determination 1 - SS_res/SS_tot per gene within each test slide "
        "(SS_tot around the slide's mean truth), averaged over the fold's test slides, then "
        "over the evaluated genes; constant truth counts as 0."
    ),
}

_PER_GENE_COLUMNS = [
    "gene",
    "pcc",
    "pcc_specific",
    "pcc_pooled",
    "spearman",
    "r2",
    "mse",
    "mae",
    "mean_train",
    "var_train",
    "n_undefined_slides",
]


class EvaluationInputError(DataError, ValueError):
    """Inputs violating the evaluator's contract (shape, NaN/inf, labels, missing stats).

    A ``ValueError`` for library callers and a :class:`~stbench.errors.DataError` (exit code 2)
    for the CLI.
    """


@dataclass
class Evaluation:
    """The result of :func:`evaluate` for one fold.

    Attributes:
        metrics: Metric name -> value (plain floats; names and levels in ``METRIC_LEVELS``).
        per_gene: One row per evaluated gene, columns ``gene, pcc, pcc_pooled, spearman, r2,
            mse, mae, mean_train, var_train, n_undefined_slides`` (``pcc``, ``spearman`` and
            ``r2`` are slide-averaged; ``mse``/``mae`` are over all test spots;
            ``n_undefined_slides`` counts slides where the gene's Pearson r was undefined).
        counts: Sizes and undefined-value counts: ``n_genes``, ``n_spots``, ``n_slides``,
            ``n_constant_pred_gene_slides``, ``n_constant_true_gene_slides``,
            ``n_constant_pred_genes_pooled``, ``n_constant_true_genes_pooled``,
            ``n_top_genes`` (genes actually used by the top-k metrics).
        per_slide: One row per test slide, columns ``slide, n_spots, pcc, spearman, r2, mse,
            mae`` (gene-averaged within the slide). The mean of the ``pcc`` / ``spearman`` /
            ``r2`` columns equals ``pcc_mean`` / ``spearman_mean`` / ``r2_mean``; use it for
            slide-level bootstrap CIs (:func:`bootstrap_ci`).
    """

    metrics: dict[str, float]
    per_gene: pd.DataFrame
    counts: dict[str, int]
    per_slide: pd.DataFrame = field(default_factory=pd.DataFrame)


def metric_level(name: str) -> str:
    """The level description of a metric, including ``pcc_top{k}_heg``/``_hvg`` for any k.

    Args:
        name: A metric name as it appears in ``Evaluation.metrics``.

    Returns:
        One sentence stating at which level the metric is computed.

    Raises:
        KeyError: ``name`` is not a metric of this evaluator.
    """
    if name in METRIC_LEVELS:
        return METRIC_LEVELS[name]
    for kind in ("heg", "hvg"):
        prefix, suffix = "pcc_top", f"_{kind}"
        middle = name[len(prefix) : -len(suffix)]
        if name.startswith(prefix) and name.endswith(suffix) and middle.isdigit():
            return METRIC_LEVELS[f"pcc_top50_{kind}"].replace("the 50 ", f"the {int(middle)} ")
    raise KeyError(f"unknown metric {name!r}; known: {sorted(METRIC_LEVELS)}")


# --------------------------------------------------------------------------------------------
# Column-wise correlations
# --------------------------------------------------------------------------------------------


_BLOCK_ELEMENTS = 1 << 18  # rows per block x columns: a cache-sized float64 temporary


@dataclass
class _Moments:
    """Column sums of two equally shaped arrays, from :func:`_moments`."""

    n: int
    mean_a: np.ndarray
    mean_b: np.ndarray
    ss_a: np.ndarray  # sum of (a - mean_a)^2
    ss_b: np.ndarray
    sp_ab: np.ndarray  # sum of (a - mean_a)(b - mean_b)
    sse: np.ndarray  # sum of (a - b)^2
    sae: np.ndarray  # sum of |a - b|

    @property
    def const_a(self) -> np.ndarray:
        return _is_constant(self.ss_a, self.mean_a, self.n)

    @property
    def const_b(self) -> np.ndarray:
        return _is_constant(self.ss_b, self.mean_b, self.n)

    def pearson(self) -> tuple[np.ndarray, np.ndarray]:
        """``(r, undefined)``: Pearson r per column, NaN where either side is constant."""
        undefined = self.const_a | self.const_b
        with np.errstate(divide="ignore", invalid="ignore"):
            r = self.sp_ab / (np.sqrt(self.ss_a) * np.sqrt(self.ss_b))
        r = np.clip(r, -1.0, 1.0)
        r[undefined | ~np.isfinite(r)] = np.nan
        return r, undefined


def _is_constant(ss: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """The constant-column rule: ``std <= 1e-12 * (1 + |mean|)``."""
    return np.sqrt(ss / max(n, 1)) <= CONSTANT_RTOL * (1.0 + np.abs(mean))


def _moments(a: np.ndarray, b: np.ndarray, errors: bool = False) -> _Moments:
    """Column moments in two passes over row blocks (float64 accumulation).

    Centring happens block by block, so no input-sized temporary is made: at 100,000 x 1,000
    this is memory-bound work done once instead of four full-size copies (about 15x less
    CPU time than centring whole arrays). ``errors`` adds the squared / absolute error sums.
    """
    n, m = a.shape
    mean_a = a.mean(axis=0, dtype=np.float64)
    mean_b = b.mean(axis=0, dtype=np.float64)
    ss_a, ss_b, sp_ab = np.zeros(m), np.zeros(m), np.zeros(m)
    sse, sae = np.zeros(m), np.zeros(m)
    step = max(1, _BLOCK_ELEMENTS // max(m, 1))
    for start in range(0, n, step):
        ca = a[start:start + step].astype(np.float64, copy=False) - mean_a
        cb = b[start:start + step].astype(np.float64, copy=False) - mean_b
        ss_a += np.einsum("ij,ij->j", ca, ca)
        ss_b += np.einsum("ij,ij->j", cb, cb)
        sp_ab += np.einsum("ij,ij->j", ca, cb)
        if errors:
            ca -= cb  # (a - mean_a) - (b - mean_b) = err - mean error
            ca += mean_a - mean_b
            sse += np.einsum("ij,ij->j", ca, ca)
            sae += np.abs(ca).sum(axis=0)
    return _Moments(n, mean_a, mean_b, ss_a, ss_b, sp_ab, sse, sae)


def _as_2d_float(x: Any, name: str) -> np.ndarray:
    """``x`` as a 2-D float array (float32 input stays float32: sums are taken in float64)."""
    try:
        arr = np.asarray(x)
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise EvaluationInputError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    return arr


def pearson_columns(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation between matching columns of ``a`` and ``b`` (vectorised, float64).

    Columns are centred before the products are formed (numerically stable for large means).

    Args:
        a: Array ``(n, m)`` (or ``(n,)``, treated as one column).
        b: Array of the same shape.

    Returns:
        ``(r, undefined)``: ``r`` has shape ``(m,)`` with values in [-1, 1] and NaN where the
        correlation is undefined; ``undefined`` is the boolean mask of columns where ``a`` or
        ``b`` is constant (``std <= 1e-12 * (1 + |mean|)``) or where ``n < 2``.

    Raises:
        EvaluationInputError: Shapes differ or inputs are not numeric.
    """
    a2, b2 = _as_2d_float(a, "a"), _as_2d_float(b, "b")
    if a2.shape != b2.shape:
        raise EvaluationInputError(f"shape mismatch: a {a2.shape} vs b {b2.shape}")
    if a2.shape[0] == 0:
        raise EvaluationInputError("need at least one row")
    return _moments(a2, b2).pearson()


def spearman_columns(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation between matching columns: average-tie ranks, then Pearson.

    Ranks are ``scipy.stats.rankdata(x, method="average", axis=0)``.

    Args:
        a: Array ``(n, m)`` (or ``(n,)``, treated as one column).
        b: Array of the same shape.

    Returns:
        ``(rho, undefined)`` as in :func:`pearson_columns`; a column is undefined when ``a`` or
        ``b`` is constant in value (same tolerance as Pearson) or in rank.

    Raises:
        EvaluationInputError: Shapes differ or inputs are not numeric.
    """
    a2, b2 = _as_2d_float(a, "a"), _as_2d_float(b, "b")
    if a2.shape != b2.shape:
        raise EvaluationInputError(f"shape mismatch: a {a2.shape} vs b {b2.shape}")
    if a2.shape[0] == 0:
        raise EvaluationInputError("need at least one row")
    value = _moments(a2, b2)
    ra = stats.rankdata(a2, method="average", axis=0)
    rb = stats.rankdata(b2, method="average", axis=0)
    rank = _moments(ra, rb)
    rho, undefined = rank.pearson()
    undefined |= value.const_a | value.const_b
    rho[undefined] = np.nan
    return rho, undefined


# --------------------------------------------------------------------------------------------
# The evaluator
# --------------------------------------------------------------------------------------------


def _validate_stat(x: Any, name: str, n_genes: int) -> np.ndarray:
    if x is None:
        raise EvaluationInputError(
            f"{name} is required",
            fix=(
                f"pass {name}=<per-gene statistic over the fold's TRAINING slides, shape "
                f"({n_genes},)>; the top-k gene subsets must not be chosen on test data"
            ),
        )
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(f"{name} must be numeric: {exc}") from exc
    if arr.shape != (n_genes,):
        raise EvaluationInputError(f"{name} must have shape ({n_genes},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        n_bad = int(np.sum(~np.isfinite(arr)))
        raise EvaluationInputError(f"{name} contains {n_bad} non-finite value(s)")
    return arr


def _validate_matrix(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(f"{name} must be a numeric array: {exc}") from exc
    if arr.ndim != 2:
        raise EvaluationInputError(
            f"{name} must be 2-D (n_spots, n_genes), got shape {arr.shape}"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        n_nan = int(np.isnan(arr).sum())
        raise EvaluationInputError(
            f"{name} contains {int(bad.sum())} non-finite value(s) ({n_nan} NaN, "
            f"{int(bad.sum()) - n_nan} inf); non-finite values are refused, not dropped",
            fix="fix the model output / data so every value is finite",
        )
    return arr


def _top_k(stat: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values (ties: lower column index first)."""
    order = np.argsort(-stat, kind="stable")
    return order[: min(k, stat.size)]


#: Principal components of the measured panel in the generic pattern of ``pcc_specific_mean``.
GENERIC_N_PCS = 1


def generic_pattern(panel_expression: Any, total_counts: Any, n_pcs: int = GENERIC_N_PCS
                    ) -> np.ndarray:
    """The generic spatial pattern of ONE test slide: ``(n_spots, 1 + n_pcs)`` covariates.

    Columns: ``log1p`` of each spot's total raw counts, then the first ``n_pcs`` principal
    component scores of the slide's measured, log-normalised panel (all panel genes).

    Args:
        panel_expression: ``(n_spots, n_panel)`` log-normalised expression of the slide.
        total_counts: ``(n_spots,)`` raw counts per spot over all measured genes.
        n_pcs: How many principal components to include.
    """
    x = np.asarray(panel_expression, dtype=np.float64)
    depth = np.log1p(np.asarray(total_counts, dtype=np.float64)).reshape(-1, 1)
    centred = x - x.mean(axis=0, keepdims=True)
    k = max(0, min(int(n_pcs), min(centred.shape) - 1))
    if k == 0:
        return depth
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    return np.hstack([depth, u[:, :k] * s[:k]])


def _residualise(columns: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """``columns`` minus their least-squares fit on ``[1, covariates]``."""
    design = np.hstack([np.ones((columns.shape[0], 1)), covariates])
    q, r = np.linalg.qr(design)
    keep = np.abs(np.diag(r)) > 1e-10 * max(1.0, float(np.abs(np.diag(r)).max()))
    q = q[:, keep]  # drop collinear covariates (e.g. constant depth)
    return columns - q @ (q.T @ columns)


@dataclass
class _SlideStats:
    """Per (test slide, gene) statistics of one fold."""

    pcc: np.ndarray
    spearman: np.ndarray
    r2: np.ndarray
    specific: np.ndarray | None
    undefined: np.ndarray
    const_pred: np.ndarray
    const_true: np.ndarray
    mse: np.ndarray
    mae: np.ndarray
    n: np.ndarray


def _slide_stats(yt: np.ndarray, yp: np.ndarray, codes: np.ndarray, n_slides: int,
                 generic: np.ndarray | None) -> _SlideStats:
    """Loop over slides only, vectorised over genes."""
    n_genes = yt.shape[1]
    st = _SlideStats(*(np.zeros((n_slides, n_genes)) for _ in range(3)),
                     np.zeros((n_slides, n_genes)) if generic is not None else None,
                     *(np.zeros((n_slides, n_genes), dtype=bool) for _ in range(3)),
                     np.zeros(n_slides), np.zeros(n_slides), np.zeros(n_slides, dtype=np.int64))
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_slides + 1))
    for s in range(n_slides):
        idx = order[bounds[s] : bounds[s + 1]]
        t, p = yt[idx], yp[idx]
        mom = _moments(t, p, errors=True)
        r, undefined = mom.pearson()
        st.pcc[s] = np.nan_to_num(r, nan=0.0)
        rho, undef_rho = spearman_columns(t, p)
        st.spearman[s] = np.where(undef_rho, 0.0, rho)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = 1.0 - mom.sse / mom.ss_a
        st.r2[s] = np.where(mom.const_a, 0.0, r2)
        if st.specific is not None:
            z = generic[idx]
            partial, _ = _moments(_residualise(t, z), _residualise(p, z)).pearson()
            st.specific[s] = np.nan_to_num(partial, nan=0.0)
        st.undefined[s], st.const_pred[s], st.const_true[s] = undefined, mom.const_b, mom.const_a
        st.mse[s] = float(mom.sse.sum() / mom.sse.size / max(idx.size, 1))
        st.mae[s] = float(mom.sae.sum() / mom.sae.size / max(idx.size, 1))
        st.n[s] = idx.size
    return st


def _check_labels(slide_ids: Any, n_spots: int) -> tuple[np.ndarray, list]:
    """Integer slide codes (sorted labels: a deterministic order) and the labels."""
    labels = np.asarray(slide_ids, dtype=object)
    if labels.ndim != 1 or labels.shape[0] != n_spots:
        raise EvaluationInputError(
            f"slide_ids must be 1-D of length n_spots={n_spots}, got shape {labels.shape}"
        )
    try:  # sorted labels make the slide order (and float summation order) deterministic
        codes, uniques = pd.factorize(pd.Series(labels, dtype=object), sort=True)
    except TypeError:  # unorderable mixed label types: order of first appearance
        codes, uniques = pd.factorize(pd.Series(labels, dtype=object), sort=False)
    if (codes < 0).any():
        raise EvaluationInputError(f"slide_ids contains {int((codes < 0).sum())} missing label(s)")
    return codes, list(uniques)


def _check_inputs(y_true: Any, y_pred: Any, genes: Sequence[str], top_k: Any, generic: Any
                  ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """Validated float64 matrices, gene names and generic covariates."""
    yt = _validate_matrix(y_true, "y_true")
    yp = _validate_matrix(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise EvaluationInputError(f"y_true shape {yt.shape} != y_pred shape {yp.shape}")
    n_spots, n_genes = yt.shape
    if n_spots == 0 or n_genes == 0:
        raise EvaluationInputError(f"empty evaluation: shape {yt.shape}")
    genes_list = [str(g) for g in genes]
    if len(genes_list) != n_genes:
        raise EvaluationInputError(f"len(genes)={len(genes_list)} but y has {n_genes} columns")
    if len(set(genes_list)) != n_genes:
        dup = pd.Index(genes_list)[pd.Index(genes_list).duplicated()].unique().tolist()
        raise EvaluationInputError(f"duplicate gene names: {dup[:10]}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise EvaluationInputError(f"top_k must be a positive integer, got {top_k!r}")
    if generic is not None:
        generic = _validate_matrix(generic, "generic")
        if generic.shape[0] != n_spots:
            raise EvaluationInputError(f"generic has {generic.shape[0]} rows, y has {n_spots}")
    return yt, yp, genes_list, generic


def evaluate(
    y_true: Any,
    y_pred: Any,
    slide_ids: Sequence[Any] | np.ndarray,
    genes: Sequence[str],
    *,
    gene_mean_train: Any = None,
    gene_var_train: Any = None,
    top_k: int = 50,
    generic: Any = None,
) -> Evaluation:
    """Compute the official metrics for one fold (see the module docstring for levels).

    Args:
        y_true: ``(n_spots, n_genes)`` log-normalised truth of the evaluated genes, all test
            spots of the fold.
        y_pred: Predictions, same shape.
        slide_ids: ``(n_spots,)`` test-slide label of every spot (any hashable values; NaN /
            None labels are refused).
        genes: The ``n_genes`` unique gene names, in column order.
        gene_mean_train: ``(n_genes,)`` per-gene mean over the TRAINING slides (selects the
            top-k highly expressed genes). Required despite the ``None`` default: ``None``
            raises :class:`EvaluationInputError`.
        gene_var_train: ``(n_genes,)`` per-gene variance over the TRAINING slides (selects the
            top-k highly variable genes). Required likewise.
        top_k: Size of the top-k gene subsets (metric names ``pcc_top{top_k}_heg/_hvg``).
        generic: ``(n_spots, q)`` each test spot's generic pattern (rows of
            :func:`generic_pattern` of its slide); when given, ``pcc_specific_mean`` is reported.

    Returns:
        An :class:`Evaluation` with ``metrics`` (floats only), ``per_gene``, ``counts`` and
        ``per_slide``.

    Raises:
        EvaluationInputError: (a ``ValueError``) arrays not 2-D or of different shapes,
            ``len(slide_ids) != n_spots``, ``len(genes) != n_genes`` or duplicate gene names,
            empty inputs, missing/ill-shaped training statistics, ``top_k < 1``, or any
            non-finite value in ``y_true``, ``y_pred``, ``generic`` or the training statistics
            (non-finite values are refused, never silently dropped).
    """
    yt, yp, genes_list, generic = _check_inputs(y_true, y_pred, genes, top_k, generic)
    codes, uniques = _check_labels(slide_ids, yt.shape[0])
    mean_train = _validate_stat(gene_mean_train, "gene_mean_train", yt.shape[1])
    var_train = _validate_stat(gene_var_train, "gene_var_train", yt.shape[1])
    st = _slide_stats(yt, yp, codes, len(uniques), generic)
    pooled_moments = _moments(yt, yp, errors=True)
    pooled = np.nan_to_num(pooled_moments.pearson()[0], nan=0.0)
    gene = {"pcc": st.pcc.mean(axis=0), "spearman": st.spearman.mean(axis=0),
            "r2": st.r2.mean(axis=0), "pooled": pooled,
            "mse": pooled_moments.sse / yt.shape[0], "mae": pooled_moments.sae / yt.shape[0]}
    metrics = _fold_metrics(gene, st, mean_train, var_train, top_k)
    per_gene = pd.DataFrame(
        {"gene": genes_list, "pcc": gene["pcc"],
         "pcc_specific": st.specific.mean(axis=0) if st.specific is not None else 0.0,
         "pcc_pooled": pooled, "spearman": gene["spearman"], "r2": gene["r2"],
         "mse": gene["mse"], "mae": gene["mae"], "mean_train": mean_train,
         "var_train": var_train, "n_undefined_slides": st.undefined.sum(axis=0).astype(np.int64)},
        columns=[c for c in _PER_GENE_COLUMNS if c != "pcc_specific" or st.specific is not None],
    )
    per_slide = pd.DataFrame(
        {"slide": uniques, "n_spots": st.n, "pcc": st.pcc.mean(axis=1),
         "spearman": st.spearman.mean(axis=1), "r2": st.r2.mean(axis=1), "mse": st.mse,
         "mae": st.mae}
    )
    if st.specific is not None:
        per_slide["pcc_specific"] = st.specific.mean(axis=1)
    counts = {
        "n_genes": int(yt.shape[1]), "n_spots": int(yt.shape[0]), "n_slides": len(uniques),
        "n_constant_pred_gene_slides": int(st.const_pred.sum()),
        "n_constant_true_gene_slides": int(st.const_true.sum()),
        "n_constant_pred_genes_pooled": int(pooled_moments.const_b.sum()),
        "n_constant_true_genes_pooled": int(pooled_moments.const_a.sum()),
        "n_top_genes": int(min(top_k, yt.shape[1])),
    }
    return Evaluation(metrics=metrics, per_gene=per_gene, counts=counts, per_slide=per_slide)


def _fold_metrics(gene: dict[str, np.ndarray], st: _SlideStats, mean_train: np.ndarray,
                  var_train: np.ndarray, top_k: int) -> dict[str, float]:
    """The fold's metric values from per-gene statistics."""
    pcc = gene["pcc"]
    heg, hvg = _top_k(mean_train, top_k), _top_k(var_train, top_k)
    metrics = {"pcc_mean": float(pcc.mean())}
    if st.specific is not None:
        metrics["pcc_specific_mean"] = float(st.specific.mean(axis=0).mean())
    metrics.update({
        "pcc_pooled_mean": float(gene["pooled"].mean()),
        "pcc_q25": float(np.percentile(pcc, 25)),
        "pcc_median": float(np.median(pcc)),
        f"pcc_top{top_k}_heg": float(pcc[heg].mean()),
        f"pcc_top{top_k}_hvg": float(pcc[hvg].mean()),
        "spearman_mean": float(gene["spearman"].mean()),
        "mse": float(gene["mse"].mean()),
        "mae": float(gene["mae"].mean()),
        "r2_mean": float(gene["r2"].mean()),
    })
    return metrics


# --------------------------------------------------------------------------------------------
# Paired statistics for leaderboards
# --------------------------------------------------------------------------------------------


def _as_1d_finite(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise EvaluationInputError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise EvaluationInputError(f"{name} contains non-finite values; they are refused")
    return arr


def paired_wilcoxon(a: Any, b: Any) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired values (e.g. per-slide or per-gene PCC).

    Uses ``scipy.stats.wilcoxon(a, b, zero_method="wilcox")`` (zero differences discarded).

    Args:
        a: 1-D values of method A.
        b: 1-D values of method B, paired with ``a``.

    Returns:
        ``(statistic, p_value)``. If every difference is zero (identical methods), returns
        ``(0.0, 1.0)`` instead of failing.

    Raises:
        EvaluationInputError: Lengths differ, inputs empty, not 1-D or non-finite.
    """
    x, y = _as_1d_finite(a, "a"), _as_1d_finite(b, "b")
    if x.shape != y.shape:
        raise EvaluationInputError(f"paired inputs differ in length: {x.size} vs {y.size}")
    if x.size == 0:
        raise EvaluationInputError("paired_wilcoxon needs at least one pair")
    if np.all(x - y == 0):
        return 0.0, 1.0
    res = stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    p = float(res.pvalue)
    return float(res.statistic), (1.0 if np.isnan(p) else min(p, 1.0))


def holm(pvalues: Any) -> np.ndarray:
    """Holm-Bonferroni step-down adjustment of a family of p-values.

    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))`` over ascending p-values, returned in
    the original order.

    Args:
        pvalues: 1-D p-values in [0, 1].

    Returns:
        Adjusted p-values, same shape and order as the input.

    Raises:
        EvaluationInputError: Not 1-D, non-finite or outside [0, 1].
    """
    p = _as_1d_finite(pvalues, "pvalues")
    if np.any((p < 0) | (p > 1)):
        raise EvaluationInputError("p-values must lie in [0, 1]")
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted_sorted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adjusted_sorted
    return out


def bootstrap_ci(
    values_per_slide: Any, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean, resampling slides.

    Slides are drawn with replacement (``numpy.random.default_rng(seed)``), so the result is
    deterministic for a given seed.

    Args:
        values_per_slide: 1-D metric values, one per slide (e.g. ``Evaluation.per_slide.pcc``).
        n_boot: Number of bootstrap resamples.
        seed: Seed of the random generator.
        alpha: Two-sided level; the interval is ``[alpha/2, 1 - alpha/2]`` quantiles.

    Returns:
        ``(low, high)``; ``(v, v)`` for a single slide.

    Raises:
        EvaluationInputError: Empty/non-finite values, ``n_boot < 1`` or ``alpha`` not in (0, 1).
    """
    v = _as_1d_finite(values_per_slide, "values_per_slide")
    if v.size == 0:
        raise EvaluationInputError("bootstrap_ci needs at least one slide")
    if n_boot < 1:
        raise EvaluationInputError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise EvaluationInputError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    means = v[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)
