"""Shared helpers of the trained (torch) method plugins.

* :func:`seed_all` / :func:`torch_threads`: seeding and a bounded thread count;
* :func:`pcc_loss`, :func:`mean_gene_pcc_per_slide`: Pearson losses and validation scores;
* :class:`EarlyStopping`: keeps the best ``state_dict`` by a validation score and restores it;
* :func:`grid_edges`, :func:`knn_edges`, :func:`slide_edges`: the spot graphs (SGN's two edge
  types), taken from the harness's ``graph`` features when present, else built here;
* :func:`standardiser`: training-set feature statistics.

Edge convention everywhere: ``(2, n_edges)`` int64, row 0 = source (the neighbour whose
message is sent), row 1 = target (the spot that aggregates), indices local to one slide,
no self-loops (PyG's ``flow="source_to_target"``).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from stbench.method import Bundle, SlideView

#: Radius (in grid units) and neighbour cap of SGN's spatial edges; k of its feature kNN.
GRID_RADIUS = math.sqrt(2.0)
GRID_MAX_NEIGHBOURS = 5
KNN_K = 5


def seed_all(seed: int) -> torch.Generator:
    """Seed Python, numpy's legacy RNG and torch; return a CPU generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily cap torch's intra-op threads at ``n`` (``None`` or < 1: leave as is)."""
    if n is None or n < 1:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(min(old, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


def mean_gene_pcc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over genes of Pearson's r over spots (constant columns count as 0)."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    yc, pc = y - y.mean(0), p - p.mean(0)
    den = np.sqrt((yc**2).sum(0) * (pc**2).sum(0))
    r = np.where(den > 0, (yc * pc).sum(0) / np.where(den > 0, den, 1.0), 0.0)
    return float(r.mean()) if r.size else 0.0


def mean_gene_pcc_per_slide(y: np.ndarray, p: np.ndarray, slide: np.ndarray) -> float:
    """The harness's ``pcc_mean`` convention: per gene and slide, mean over slides then genes."""
    ids = np.unique(slide)
    if ids.size == 0:
        return 0.0
    return float(np.mean([mean_gene_pcc(y[slide == i], p[slide == i]) for i in ids]))


class EarlyStopping:
    """Track a validation score (higher is better); keep a copy of the best state.

    ``step(score, module)`` returns True when training should stop (``patience`` evaluations
    without an improvement of more than ``min_delta``). ``restore(module)`` loads the best state.
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best_score = -math.inf
        self.best_step = -1
        self.best_state: dict[str, Any] | None = None
        self._bad = 0
        self._n = 0

    def step(self, score: float, module: torch.nn.Module) -> bool:
        score = float(score) if np.isfinite(score) else -math.inf
        if self.best_state is None or score > self.best_score + self.min_delta:
            self.best_score, self.best_step, self._bad = score, self._n, 0
            self.best_state = copy.deepcopy(module.state_dict())
        else:
            self._bad += 1
        self._n += 1
        return self._bad >= self.patience

    def restore(self, module: torch.nn.Module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


# ---------------------------------------------------------------------------------------------
# Spot graphs
# ---------------------------------------------------------------------------------------------


def grid_edges(grid: np.ndarray, radius: float = GRID_RADIUS,
               max_neighbours: int = GRID_MAX_NEIGHBOURS) -> np.ndarray:
    """Spatial edges: every spot's grid neighbours within ``radius`` (inclusive), at most
    ``max_neighbours`` of them, nearest first (ties by spot index).

    Mirrors ``torch_cluster.radius_graph(grid, r=radius, max_num_neighbors=max_neighbours)``
    of SGN's code, except that the cap keeps the NEAREST neighbours deterministically
    (torch_cluster keeps whichever it finds first). On a square lattice (legacy ST) an interior
    spot gets its 4 side neighbours and 1 diagonal one.

    Returns:
        (2, n_edges) int64: row 0 the neighbour (source), row 1 the spot (target).
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(grid, dtype=np.float64).reshape(len(grid), -1)
    n = pos.shape[0]
    if n < 2 or max_neighbours < 1:
        return np.zeros((2, 0), dtype=np.int64)
    tree = cKDTree(pos)
    src, dst = [], []
    for i, cand in enumerate(tree.query_ball_point(pos, radius * (1 + 1e-9) + 1e-12)):
        cand = np.asarray([c for c in cand if c != i], dtype=np.int64)
        if cand.size == 0:
            continue
        d2 = ((pos[cand] - pos[i]) ** 2).sum(1)
        keep = cand[np.lexsort((cand, d2))[:max_neighbours]]  # distance, then index
        src.append(keep)
        dst.append(np.full(keep.size, i, dtype=np.int64))
    if not src:
        return np.zeros((2, 0), dtype=np.int64)
    return np.stack([np.concatenate(src), np.concatenate(dst)]).astype(np.int64)


def knn_edges(x: np.ndarray, k: int = KNN_K, block: int = 1024) -> np.ndarray:
    """Feature edges: each spot's ``k`` nearest other spots by Euclidean distance of ``x``
    (ties by index), as ``torch_cluster.knn_graph(x, k, loop=False)``. Brute force in blocks
    of ``block`` rows (image features are high-dimensional: trees do not help).

    Returns:
        (2, n_edges) int64: row 0 the neighbour (source), row 1 the spot (target).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        return np.zeros((2, 0), dtype=np.int64)
    sq = (x * x).sum(1)
    rows = []
    for a in range(0, n, block):
        b = min(n, a + block)
        d2 = sq[a:b, None] + sq[None, :] - 2.0 * x[a:b] @ x.T
        d2[np.arange(b - a), np.arange(a, b)] = np.inf
        rows.append(np.argsort(d2, axis=1, kind="stable")[:, :k])
    idx = np.concatenate(rows, axis=0)
    dst = np.repeat(np.arange(n), k)
    return np.stack([idx.ravel(), dst]).astype(np.int64)


def slide_edges(view: SlideView, radius: float = GRID_RADIUS,
                max_neighbours: int = GRID_MAX_NEIGHBOURS, k: int = KNN_K) -> tuple[np.ndarray, np.ndarray]:
    """``(edges_grid, edges_knn)`` of one slide: the harness's ``graph`` features when present,
    otherwise built from ``view.grid`` and ``view.features['image']``."""
    feats = view.features
    eg = feats.get("edges_grid")
    ek = feats.get("edges_knn")
    if eg is None:
        eg = grid_edges(view.grid, radius, max_neighbours)
    if ek is None:
        ek = knn_edges(feats["image"], k)
    return np.asarray(eg, dtype=np.int64).reshape(2, -1), np.asarray(ek, dtype=np.int64).reshape(2, -1)


def standardiser(bundle: Bundle, kind: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (+1e-6) of a per-spot feature over a bundle's spots."""
    x = bundle.stack(kind).astype(np.float64)
    return x.mean(0), x.std(0) + 1e-6


def sample_genes(n_genes: int, n_sample: int, gen: torch.Generator) -> torch.Tensor:
    """``n_sample`` distinct gene columns drawn uniformly (all of them, shuffled, if fewer)."""
    perm = torch.randperm(n_genes, generator=gen)
    return perm[: min(int(n_sample), n_genes)]


def resolve_device(device: str | None) -> torch.device:
    """``ctx.device`` as a torch device, falling back to CPU when CUDA is unavailable."""
    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.device(device)
    return torch.device("cpu")
