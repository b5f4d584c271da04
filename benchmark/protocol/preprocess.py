"""Expression preprocessing and panel choice.

Normalisation is per spot (library size), so it uses no information from other slides.
The panel (``literature``, ``file``, ``hvg``, ``all``) and every gene statistic are computed
from TRAINING slides only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from stbench.data import Slide
from stbench.errors import ConfigError, DataError

PANELS = ("default", "literature", "file", "hvg", "all")


@dataclass
class Expression:
    """Normalised expression of one slide over its own genes."""

    values: np.ndarray  # (n_spots, n_genes) float32
    genes: list[str]

    def __post_init__(self) -> None:
        self._index = {g: i for i, g in enumerate(self.genes)}

    def select(self, genes: Sequence[str]) -> tuple[np.ndarray, int]:
        """Columns for ``genes``; genes absent from this slide are zeros.

        Returns:
            The (n_spots, len(genes)) matrix and the number of absent genes.
        """
        out = np.zeros((self.values.shape[0], len(genes)), dtype=np.float32)
        absent = 0
        for j, g in enumerate(genes):
            i = self._index.get(g)
            if i is None:
                absent += 1
            else:
                out[:, j] = self.values[:, i]
        return out, absent


def normalise(slide: Slide, target_sum: float = 1e4, log1p: bool = True) -> Expression:
    """``normalize_total(target_sum)`` then ``log1p`` of a slide's raw counts.

    Raises:
        DataError: On negative, non-finite or non-integer counts.
    """
    x = slide.adata.X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise DataError(f"section {slide.name}: counts contain NaN or infinite values",
                        fix="provide raw integer counts")
    if (x < 0).any():
        raise DataError(f"section {slide.name}: counts contain negative values",
                        fix="provide raw (not normalised or scaled) integer counts")
    if not np.allclose(x, np.round(x)):
        raise DataError(f"section {slide.name}: counts are not integers",
                        fix="provide raw counts, not normalised expression")
    totals = x.sum(axis=1, keepdims=True)
    totals[totals == 0] = 1.0
    y = x / totals * target_sum if target_sum > 0 else x
    if log1p:
        y = np.log1p(y)
    return Expression(y.astype(np.float32), list(slide.adata.var_names))


@dataclass(frozen=True)
class PanelSource:
    """What the panel is chosen from: the resolved kind and the gene lists that kind uses."""

    kind: str
    literature: list[str] | None = None
    panel_file_genes: list[str] | None = None


def panel_source(genes_cfg: Any, dataset: Any) -> PanelSource:
    """The one rule for the panel setting (used by ``stbench run`` and ``stbench features``).

    ``default`` means the dataset's literature panel when it has one, else ``all``. The
    literature panel is loaded only when the setting uses it (``literature`` or ``default``),
    and the panel file only for ``file``: ``genes.panel=file`` works on a root without any
    literature panel.
    """
    from stbench.protocol.splits import read_gene_list

    kind = genes_cfg.panel
    if kind not in PANELS:
        raise ConfigError(f"unknown panel {kind!r}", fix=f"use genes.panel= one of {', '.join(PANELS)}")
    if kind == "file":
        if not genes_cfg.panel_file:
            raise ConfigError("genes.panel=file needs genes.panel_file=PATH",
                              fix="write one symbol a line and pass genes.panel_file=PATH")
        return PanelSource("file", panel_file_genes=read_gene_list(genes_cfg.panel_file, "panel"))
    if kind in ("default", "literature"):
        literature = dataset.literature_panel()
        if literature is not None:
            return PanelSource("literature", literature=list(literature))
        if kind == "literature":
            raise ConfigError("this dataset has no literature panel",
                              fix="use genes.panel=hvg, all or file")
        return PanelSource("all")
    return PanelSource(kind)


def choose_panel(source: PanelSource, train: Sequence[Expression], *, n_hvg: int
                 ) -> tuple[list[str], str]:
    """Choose the gene panel from training slides.

    Genes with no count in any training spot are dropped from every panel (they can be
    neither learned nor meaningfully evaluated).

    Args:
        source: The resolved panel setting (:func:`panel_source`).
        train: Normalised expression of the fold's training slides only.
        n_hvg: Panel size for ``hvg``.

    Returns:
        The panel and the resolved panel kind.
    """
    kind = source.kind
    present: dict[str, float] = {}
    for expr in train:
        total = expr.values.sum(axis=0)
        for g, t in zip(expr.genes, total):
            present[g] = present.get(g, 0.0) + float(t)
    expressed = {g for g, t in present.items() if t > 0}
    if kind == "literature":
        candidates = source.literature or []
    elif kind == "file":
        candidates = source.panel_file_genes or []
    elif kind == "all":
        candidates = sorted(expressed) if len(train) > 1 else list(train[0].genes)
    else:
        candidates = _highly_variable(train, n_hvg)
    panel = [g for g in candidates if g in expressed]
    if not panel:
        raise DataError(f"the {kind} panel has no gene expressed in the training sections",
                        fix="check gene symbols (case, aliases) or choose another genes.panel")
    return panel, kind


def _highly_variable(train: Sequence[Expression], n: int) -> list[str]:
    """The ``n`` genes with the largest variance of log-normalised expression over training spots."""
    genes = sorted(set().union(*[set(e.genes) for e in train]))
    stacked = np.concatenate([e.select(genes)[0] for e in train], axis=0)
    var = stacked.var(axis=0)
    order = np.argsort(-var, kind="stable")[:n]
    return [genes[i] for i in sorted(order)]
