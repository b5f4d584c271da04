"""Board statistics: mean ± std over units, paired tests against a reference, Holm, bootstrap CI.

Each row aggregates every (seed, fold) *unit* of its files: metrics are mean ± sample standard
deviation (``ddof=1``; no ± for a single unit) over folds x seeds.

Statistics (the reference row is the best zero-shot row by mean ``pcc_mean``; the best row of
any kind when there is no zero-shot row):

* over genes: per-gene PCC (``per_gene.pcc``, slide-averaged) averaged over the (seed, fold)
  units of the seeds both rows share, aligned by gene, then
  :func:`stbench.protocol.metrics.paired_wilcoxon`;
* over sections: per-section PCC (``per_slide.pcc``) averaged over the units of the shared seeds
  that test the section, aligned by section, Wilcoxon (needs at least two sections);
* over folds: per-unit ``pcc_mean`` paired by (seed, fold) on the shared seeds, Wilcoxon (kept
  for the record; the board shows genes and sections);
* Holm (:func:`stbench.protocol.metrics.holm`) across the rows compared with the reference,
  separately for each test;
* 95 % percentile bootstrap CIs (:func:`stbench.protocol.metrics.bootstrap_ci`, 2000 resamples,
  seed 0) of the mean per-gene PCC (resampling genes) and of the mean per-section PCC
  (resampling sections; ``None``, shown as "n/a", with fewer than two sections);
* the minimal detectable difference (:func:`minimal_detectable_difference`): the smallest true
  mean paired difference a two-sided paired t-test at level ``0.05 / m`` (``m`` rows compared,
  the strictest Holm step) detects with 80 % power, given the observed standard deviation
  ``s_d`` of the ``n`` paired differences. Exactly: the ``delta`` solving
  ``P(|T| > t_{1-a/2, n-1}) = 0.8`` for ``T`` noncentral t with ``n - 1`` degrees of freedom and
  noncentrality ``delta * sqrt(n) / s_d``; approximately
  ``(t_{1-a/2, n-1} + t_{0.8, n-1}) * s_d / sqrt(n)``.

The functions work on anything shaped like a board row (:class:`PairedRow`,
:class:`ComparedRow`), so this module does not depend on :mod:`stbench.report.board`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "ALPHA",
    "BOOTSTRAP_RESAMPLES",
    "ComparedRow",
    "PairedRow",
    "Stat",
    "holm_with_gaps",
    "mean_std",
    "p_or_none",
    "paired_fold_test",
    "paired_gene_test",
    "paired_section_test",
    "bootstrap_mean_ci",
    "minimal_detectable_difference",
    "significance",
    "slide_ci",
]

BOOTSTRAP_RESAMPLES = 2000
ALPHA = 0.05
#: Power at which the minimal detectable difference is computed.
POWER = 0.8


@dataclass
class Stat:
    """A mean ± std over units."""

    mean: float
    std: float
    n: int


class PairedRow(Protocol):
    """What the paired tests need of a row (:class:`stbench.report.board.Row` has it)."""

    @property
    def seeds(self) -> list[int]: ...

    def gene_pcc(self, seeds: Iterable[int] | None = None) -> dict[str, float]: ...

    def slide_pcc(self, seeds: Iterable[int] | None = None) -> dict[str, float]: ...

    def unit_metric(self, name: str, seeds: Iterable[int] | None = None
                    ) -> dict[tuple[int, int], float]: ...


class ComparedRow(PairedRow, Protocol):
    """A row that receives the results of the tests against the reference row."""

    metrics: dict[str, Stat]
    is_reference: bool
    delta: float | None
    p_gene: float | None
    p_gene_holm: float | None
    n_genes: int
    p_fold: float | None
    p_fold_holm: float | None
    n_folds: int
    p_section: float | None
    p_section_holm: float | None
    n_sections_paired: int
    mde_gene: float | None
    mde_section: float | None


def mean_std(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (``ddof=1``; 0 for one value)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return Stat(float("nan"), float("nan"), 0)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))


def bootstrap_mean_ci(values: Sequence[float]) -> tuple[float, float] | None:
    """95 % percentile bootstrap CI of the mean of ``values`` (2000 resamples, seed 0).

    ``None`` with fewer than two finite values: one value has no sampling spread to resample,
    and a zero-width interval would claim a precision the data cannot give.
    """
    from stbench.protocol.metrics import bootstrap_ci

    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if len(v) < 2:
        return None
    return bootstrap_ci(v, n_boot=BOOTSTRAP_RESAMPLES, seed=0)


def slide_ci(slide_pcc: dict[str, float]) -> tuple[float, float] | None:
    """95 % bootstrap CI of the mean per-slide PCC, resampling slides; ``None`` with fewer
    than two slides."""
    return bootstrap_mean_ci(list(slide_pcc.values()))


def minimal_detectable_difference(sd: float, n: int, alpha: float = ALPHA,
                                  power: float = POWER) -> float | None:
    """Smallest true mean paired difference a two-sided paired t-test detects with ``power``.

    Args:
        sd: Standard deviation (``ddof=1``) of the ``n`` paired differences.
        n: Number of pairs.
        alpha: Two-sided level of the test.
        power: Wanted power.

    Returns:
        ``delta`` with ``P(|T| > t_{1-alpha/2, n-1}) = power`` for ``T`` noncentral t
        (``n - 1`` degrees of freedom, noncentrality ``delta * sqrt(n) / sd``); ``None`` with
        fewer than 3 pairs or a non-finite ``sd``; ``0.0`` when ``sd`` is 0.
    """
    from scipy import optimize, stats

    if n < 3 or sd is None or not math.isfinite(sd):
        return None
    if sd == 0:
        return 0.0
    df = n - 1
    crit = float(stats.t.ppf(1.0 - alpha / 2.0, df))

    def gap(nc: float) -> float:
        p = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
        return (1.0 if not math.isfinite(p) else p) - power  # NaN far out: power is 1

    approx = crit + float(stats.t.ppf(power, df))
    nc = optimize.brentq(gap, 0.0, 2.0 * approx + 5.0)
    return float(nc * sd / math.sqrt(n))


def p_or_none(x: float | None) -> float | None:
    """A p-value as ``float``, or ``None`` when missing or not finite."""
    return None if x is None or not math.isfinite(x) else float(x)


def _aligned(va: dict[str, float], vb: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """The values of the keys both dicts hold, in sorted key order."""
    common = sorted(set(va) & set(vb))
    return (np.array([va[k] for k in common], dtype=np.float64),
            np.array([vb[k] for k in common], dtype=np.float64))


def gene_pairs(a: PairedRow, b: PairedRow) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene PCC of ``a`` and ``b`` (mean over the units of their shared seeds), aligned."""
    seeds = set(a.seeds) & set(b.seeds)
    return _aligned(a.gene_pcc(seeds), b.gene_pcc(seeds))


def section_pairs(a: PairedRow, b: PairedRow) -> tuple[np.ndarray, np.ndarray]:
    """Per-section PCC of ``a`` and ``b`` (mean over the shared seeds' units), aligned."""
    seeds = set(a.seeds) & set(b.seeds)
    return _aligned(a.slide_pcc(seeds), b.slide_pcc(seeds))


def _wilcoxon_p(xa: np.ndarray, xb: np.ndarray) -> float:
    """Wilcoxon p of aligned pairs; NaN with fewer than 2 pairs."""
    from stbench.protocol.metrics import paired_wilcoxon

    return float("nan") if xa.size < 2 else paired_wilcoxon(xa, xb)[1]


def paired_gene_test(a: PairedRow, b: PairedRow) -> tuple[float, int, float]:
    """Wilcoxon over genes of per-gene PCC (mean over the shared seeds' units).

    Returns ``(p, n_genes, mean difference a - b)``; ``p`` is NaN with fewer than 2 genes.
    """
    xa, xb = gene_pairs(a, b)
    if not xa.size:
        return float("nan"), 0, float("nan")
    return _wilcoxon_p(xa, xb), int(xa.size), float(np.mean(xa - xb))


def paired_section_test(a: PairedRow, b: PairedRow) -> tuple[float, int]:
    """Wilcoxon over test sections of per-section PCC (mean over the shared seeds' units).

    Returns ``(p, n_sections)``; ``p`` is NaN with fewer than 2 sections.
    """
    xa, xb = section_pairs(a, b)
    return _wilcoxon_p(xa, xb), int(xa.size)


def _mde(xa: np.ndarray, xb: np.ndarray, alpha: float) -> float | None:
    """:func:`minimal_detectable_difference` of the paired differences ``xa - xb``."""
    if xa.size < 3:
        return None
    return minimal_detectable_difference(float(np.std(xa - xb, ddof=1)), int(xa.size), alpha)


def paired_fold_test(a: PairedRow, b: PairedRow, metric: str = "pcc_mean") -> tuple[float, int]:
    """Wilcoxon over (seed, fold) units of ``metric`` on the shared seeds."""
    from stbench.protocol.metrics import paired_wilcoxon

    seeds = set(a.seeds) & set(b.seeds)
    ua, ub = a.unit_metric(metric, seeds), b.unit_metric(metric, seeds)
    common = sorted(set(ua) & set(ub))
    if len(common) < 2:
        return float("nan"), len(common)
    return paired_wilcoxon([ua[k] for k in common], [ub[k] for k in common])[1], len(common)


def holm_with_gaps(values: list[float | None]) -> list[float | None]:
    """Holm-adjust the p-values that are not ``None``; ``None`` stays in place."""
    from stbench.protocol.metrics import holm

    idx = [i for i, v in enumerate(values) if v is not None]
    out: list[float | None] = [None] * len(values)
    if idx:
        adj = holm([values[i] for i in idx])
        for i, v in zip(idx, adj):
            out[i] = float(v)
    return out


def significance(rows: Sequence[ComparedRow], ref: ComparedRow | None) -> None:
    """Mark ``ref`` and test every other row against it: Wilcoxon over genes, sections and
    folds, Holm across rows, and the minimal detectable differences at ``0.05 / m``."""
    if ref is None:
        return
    ref.is_reference = True
    others = [r for r in rows if r is not ref]
    alpha = ALPHA / max(len(others), 1)
    for r in others:
        pg, ng, _ = paired_gene_test(r, ref)
        pf, nf = paired_fold_test(r, ref)
        ps, ns = paired_section_test(r, ref)
        r.p_gene, r.n_genes, r.p_fold, r.n_folds = p_or_none(pg), ng, p_or_none(pf), nf
        r.p_section, r.n_sections_paired = p_or_none(ps), ns
        r.mde_gene = _mde(*gene_pairs(r, ref), alpha)
        r.mde_section = _mde(*section_pairs(r, ref), alpha)
        if "pcc_mean" in r.metrics and "pcc_mean" in ref.metrics:
            r.delta = r.metrics["pcc_mean"].mean - ref.metrics["pcc_mean"].mean
    for name in ("p_gene", "p_fold", "p_section"):
        for r, adj in zip(others, holm_with_gaps([getattr(r, name) for r in others])):
            setattr(r, f"{name}_holm", adj)
