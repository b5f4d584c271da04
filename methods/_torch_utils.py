"""Shared helpers of the trained (torch) method plugins.

* :func:`seed_all` / :func:`torch_threads`: re-exported from :mod:`stbench.run.compute`;
* :func:`pcc_loss`, :func:`mean_gene_pcc_per_slide`: Pearson losses and validation scores;
* :class:`EarlyStopping`: re-exported from :mod:`stbench.methods._training` (the one epoch
  loop, :func:`~stbench.methods._training.run_epochs`);
* :func:`grid_edges`, :func:`knn_edges`, :func:`slide_edges`: the spot graphs (SGN's two edge
  types), taken from the harness's ``graph`` features when present, else built here;
* :class:`FeatureScaler`: training-set feature scaling (``global`` by default: see there);
* :func:`validation_target`, :func:`fit_with_early_stopping`, :func:`gene_columns`: the
  epoch loop with early stopping of the supervised references.

Edge convention everywhere: ``(2, n_edges)`` int64, row 0 = source (the neighbour whose
message is sent), row 1 = target (the spot that aggregates), indices local to one slide,
no self-loops (PyG's ``flow="source_to_target"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from stbench.method import Bundle, FitContext, SlideView
from stbench.methods._linear import (  # noqa: F401 (numpy helpers re-exported)
    SCALINGS, FeatureScaler, mean_gene_pcc, mean_gene_pcc_per_slide,
)
from stbench.methods._training import EarlyStopping, LoopSpec, run_epochs
from stbench.protocol.metrics import pearson_columns
from stbench.run.compute import resolve_device as _resolve_device
from stbench.run.compute import seed_everything as seed_all
from stbench.run.compute import torch_threads  # noqa: F401 (re-exported for the methods)

#: Radius (in grid units) and neighbour cap of SGN's spatial edges; k of its feature kNN.
GRID_RADIUS = math.sqrt(2.0)
GRID_MAX_NEIGHBOURS = 5
KNN_K = 5


def pearson_per_column(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson's r of every column (gene) over rows (spots), shape (n_columns,).

    A column that is constant in either argument gets r = 0 (its numerator is 0).
    """
    pc = pred - pred.mean(0, keepdim=True)
    tc = target - target.mean(0, keepdim=True)
    num = (pc * tc).sum(0)
    den = torch.sqrt((pc * pc).sum(0) * (tc * tc).sum(0) + eps)
    return num / den


def pcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean over columns of Pearson's r over rows`` (both (n_spots, n_genes))."""
    return 1.0 - pearson_per_column(pred, target).mean()


# ---------------------------------------------------------------------------------------------
# Spot graphs
# ---------------------------------------------------------------------------------------------


def grid_edges(grid: np.ndarray, radius: float = GRID_RADIUS,
               max_neighbours: int = GRID_MAX_NEIGHBOURS) -> np.ndarray:
    """SGN's spatial edges: every spot's grid neighbours within ``radius`` (inclusive) of its
    position in ``grid`` units, at most ``max_neighbours`` of them, nearest first (ties by
    index) -- :func:`stbench.features.graph.grid_edges` with a square layout.

    Mirrors ``torch_cluster.radius_graph(grid, r=radius, max_num_neighbors=max_neighbours)``
    of SGN's code, except that the cap keeps the NEAREST neighbours deterministically
    (torch_cluster keeps whichever it finds first). On a square lattice (legacy ST) an interior
    spot gets its 4 side neighbours and 1 diagonal one.

    Returns:
        (2, n_edges) int64: row 0 the neighbour (source), row 1 the spot (target).
    """
    from stbench.features.graph import grid_edges as _grid_edges

    if len(grid) < 2:
        return np.zeros((2, 0), dtype=np.int64)
    return _grid_edges(np.asarray(grid, np.float64), radius, layout="square",
                       max_neighbors=int(max_neighbours))


def knn_edges(x: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """SGN's feature edges: each spot's ``k`` nearest other spots by Euclidean distance of
    ``x`` (ties by index) -- :func:`stbench.features.graph.knn_edges`, as
    ``torch_cluster.knn_graph(x, k, loop=False)``.

    Returns:
        (2, n_edges) int64: row 0 the neighbour (source), row 1 the spot (target).
    """
    from stbench.features.graph import knn_edges as _knn_edges

    if len(x) < 2:
        return np.zeros((2, 0), dtype=np.int64)
    return _knn_edges(np.asarray(x, np.float64), int(k))


def slide_edges(view: SlideView, radius: float = GRID_RADIUS,
                max_neighbours: int = GRID_MAX_NEIGHBOURS, k: int = KNN_K) -> tuple[np.ndarray, np.ndarray]:
    """``(edges_grid, edges_knn)`` of one slide: the harness's ``graph`` features when present
    (built with its ``features.grid_max_neighbors`` / ``features.knn_k`` and, for Visium's hex
    array, its hex layout), otherwise built here from ``view.grid`` and the image features with
    the given radius, cap and k."""
    feats = view.features
    eg = feats.get("edges_grid")
    ek = feats.get("edges_knn")
    if eg is None:
        eg = grid_edges(view.grid, radius, max_neighbours)
    if ek is None:
        ek = knn_edges(feats["image"], k)
    return np.asarray(eg, dtype=np.int64).reshape(2, -1), np.asarray(ek, dtype=np.int64).reshape(2, -1)




def sample_genes(n_genes: int, n_sample: int, gen: torch.Generator) -> torch.Tensor:
    """``n_sample`` distinct gene columns drawn uniformly (all of them, shuffled, if fewer)."""
    perm = torch.randperm(n_genes, generator=gen)
    return perm[: min(int(n_sample), n_genes)]


def resolve_device(device: str | None) -> torch.device:
    """``ctx.device`` as a torch device; an unavailable CUDA falls back to the CPU (the harness
    already refused ``device=cuda`` without CUDA before any work)."""
    return _resolve_device(device or "cpu", strict=False)


# Training loop shared by the supervised references (stnet, histogene, bleep, hist2st)


def validation_target(val: Bundle | None, genes: list[str]
                      ) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """``(y_val, slide_index, cols)`` for early stopping, or ``None`` without validation data.

    ``y_val`` holds the validation slides' expression of the validation genes that are also
    training genes; ``cols`` are those genes' columns in ``genes`` (the model's outputs).
    """
    if val is None or not val.slides or not val.genes:
        return None
    index = {g: i for i, g in enumerate(genes)}
    keep = [j for j, g in enumerate(val.genes) if g in index]
    if not keep:
        return None
    y = val.expression()[:, keep].astype(np.float64)
    return y, val.slide_index(), [index[val.genes[j]] for j in keep]


def fit_with_early_stopping(net: torch.nn.Module, train_epoch: Callable[[int], float],
                            val_predict: Callable[[], np.ndarray] | None,
                            target: tuple[np.ndarray, np.ndarray, list[int]] | None,
                            max_epochs: int, patience: int, epochs_no_val: int,
                            ctx: FitContext, name: str) -> dict[str, Any]:
    """Train for at most ``max_epochs`` epochs, stopping on the validation slides' PCC.

    Args:
        net: The module whose best ``state_dict`` is kept and restored.
        train_epoch: Runs one epoch (``net`` is in train mode), returns its mean loss.
        val_predict: Predicts the validation spots (all training genes, in the order of
            ``target``'s rows); called under ``torch.no_grad`` with ``net`` in eval mode.
        target: :func:`validation_target`'s output; ``None`` trains ``epochs_no_val`` epochs.

    Returns:
        ``{"history": [...], "best_epoch": int | None, "best_val_pcc": float | None}``.
    """
    has_val = target is not None and val_predict is not None

    def validate() -> float:
        y, slide, cols = target  # type: ignore[misc]
        pred = np.asarray(val_predict())[:, cols]  # type: ignore[misc]
        return mean_gene_pcc_per_slide(y, pred, slide)

    spec = LoopSpec(name, int(max_epochs) if has_val else int(epochs_no_val), int(patience))
    out = run_epochs(net, train_epoch, validate if has_val else None, spec, ctx)
    return {"history": out.history, "best_epoch": out.best_epoch,
            "best_val_pcc": out.best_score}


def gene_columns(trained: list[str], genes: list[str], method: str) -> list[int]:
    """Columns of ``genes`` among the ``trained`` genes; raises for a gene never trained on."""
    index = {g: i for i, g in enumerate(trained)}
    missing = [g for g in genes if g not in index]
    if missing:
        raise ValueError(f"{method} was not trained on genes {missing[:5]}")
    return [index[g] for g in genes]
