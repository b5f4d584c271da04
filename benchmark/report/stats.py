"""Board statistics: mean ± std over units, paired tests against a reference, Holm, bootstrap CI.

Each row aggregates every (seed, fold) *unit* of its files: metrics are mean ± sample standard
deviation (``ddof=1``; no ± for a single unit) over folds x seeds.

Statistics (the reference row is the best zero-shot row by mean ``pcc_mean``; the best row of
any kind when there is no zero-shot row):

* over genes: per-gene PCC (``per_gene.pcc``, slide-averaged) averaged over the (seed, fold)
  units of the seeds both rows share, aligned by gene, then
  :func:`stbench.protocol.metrics.paired_wilcoxon`;
* over folds: per-unit ``pcc_mean`` paired by (seed, fold) on the shared seeds, Wilcoxon;
* Holm (:func:`stbench.protocol.metrics.holm`) across the rows compared with the reference,
  separately for the two tests;
* a 95 % percentile bootstrap CI (:func:`stbench.protocol.metrics.bootstrap_ci`, 2000 resamples,
  seed 0) of the mean per-slide PCC, one value per test slide (averaged over the units testing
  it).

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
    "significance",
    "slide_ci",
]

BOOTSTRAP_RESAMPLES = 2000
ALPHA = 0.05


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


def mean_std(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (``ddof=1``; 0 for one value)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return Stat(float("nan"), float("nan"), 0)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))


def slide_ci(slide_pcc: dict[str, float]) -> tuple[float, float] | None:
    """95 % bootstrap CI of the mean per-slide PCC; ``None`` without slides."""
    from stbench.protocol.metrics import bootstrap_ci

    if not slide_pcc:
        return None
    return bootstrap_ci(list(slide_pcc.values()), n_boot=BOOTSTRAP_RESAMPLES, seed=0)


def p_or_none(x: float | None) -> float | None:
    """A p-value as ``float``, or ``None`` when missing or not finite."""
    return None if x is None or not math.isfinite(x) else float(x)


def paired_gene_test(a: PairedRow, b: PairedRow) -> tuple[float, int, float]:
    """Wilcoxon over genes of per-gene PCC (mean over the shared seeds' units).

    Returns ``(p, n_genes, mean difference a - b)``; ``p`` is NaN with fewer than 2 genes.
    """
    from stbench.protocol.metrics import paired_wilcoxon

    seeds = set(a.seeds) & set(b.seeds)
    ga, gb = a.gene_pcc(seeds), b.gene_pcc(seeds)
    common = sorted(set(ga) & set(gb))
    if not common:
        return float("nan"), 0, float("nan")
    xa = np.array([ga[g] for g in common])
    xb = np.array([gb[g] for g in common])
    diff = float(np.mean(xa - xb))
    if len(common) < 2:
        return float("nan"), len(common), diff
    return paired_wilcoxon(xa, xb)[1], len(common), diff


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
    """Mark ``ref`` and test every other row against it (gene and fold Wilcoxon, Holm)."""
    if ref is None:
        return
    ref.is_reference = True
    others = [r for r in rows if r is not ref]
    for r in others:
        pg, ng, delta = paired_gene_test(r, ref)
        pf, nf = paired_fold_test(r, ref)
        r.p_gene, r.n_genes, r.p_fold, r.n_folds = p_or_none(pg), ng, p_or_none(pf), nf
        if "pcc_mean" in r.metrics and "pcc_mean" in ref.metrics:
            r.delta = r.metrics["pcc_mean"].mean - ref.metrics["pcc_mean"].mean
    for r, adj in zip(others, holm_with_gaps([r.p_gene for r in others])):
        r.p_gene_holm = adj
    for r, adj in zip(others, holm_with_gaps([r.p_fold for r in others])):
        r.p_fold_holm = adj
