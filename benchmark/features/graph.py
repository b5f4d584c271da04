"""Spot graphs of one slide and message passing in plain torch.

Edges are ``(2, E)`` int64 arrays ``(source, target)``: a message flows from ``edge_index[0]``
to ``edge_index[1]``, and aggregations are over a node's INCOMING edges. Edge lists are sorted
by target then source, never contain self loops unless ``self_loops=True``, and never contain
duplicates.

* :func:`grid_edges`: neighbours on the array grid (``obsm['grid']``, (col, row)) within
  ``radius`` grid units: the default ``sqrt(2)`` is the 8-neighbourhood of legacy ST's square
  array; ``layout="hex"`` maps Visium's array (columns step 2 along a row, rows offset by one
  column) to unit hexagon spacing first, so radius 1 is the 6-neighbourhood.
* :func:`pixel_edges`: neighbours within ``radius`` pixels of the spot centres.
* :func:`knn_edges`: each spot's ``k`` nearest spots in feature space (euclidean or cosine).

Radius graphs are symmetric. ``max_neighbors`` keeps each target's nearest sources (ties by
index), which may break symmetry; ``symmetric=True`` then takes the union of both directions.
Graphs of several slides are stacked with :func:`concat_graphs`.

Aggregations (:func:`message_passing_mean`, :func:`scatter_softmax`,
:func:`attention_aggregate`) use ``index_add_`` / ``scatter_reduce`` only, so they run on any
device and are differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# Edge builders (numpy)
# --------------------------------------------------------------------------------------------


def _finish(src: np.ndarray, dst: np.ndarray, n: int, self_loops: bool) -> np.ndarray:
    """Deduplicate, drop or add self loops, sort by (target, source)."""
    src = np.asarray(src, np.int64).ravel()
    dst = np.asarray(dst, np.int64).ravel()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    if self_loops:
        loops = np.arange(n, dtype=np.int64)
        src, dst = np.concatenate([src, loops]), np.concatenate([dst, loops])
    if src.size == 0:
        return np.zeros((2, 0), np.int64)
    code = np.unique(dst * max(n, 1) + src)
    return np.stack([code % max(n, 1), code // max(n, 1)]).astype(np.int64)


def radius_edges(coords: np.ndarray, radius: float, *, max_neighbors: int | None = None,
                 symmetric: bool = False, self_loops: bool = False) -> np.ndarray:
    """Edges between points closer than ``radius`` (inclusive, with a small tolerance).

    Args:
        coords: (n, d) positions.
        radius: Neighbourhood radius in the units of ``coords``.
        max_neighbors: Keep at most this many nearest sources per target.
        symmetric: After ``max_neighbors``, add the reverse of every edge.
        self_loops: Add ``i -> i`` for every node.
    """
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, np.float64)
    n = len(coords)
    if n == 0:
        return np.zeros((2, 0), np.int64)
    pairs = cKDTree(coords).query_pairs(radius * (1 + _EPS) + _EPS, output_type="ndarray")
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    if max_neighbors is not None:
        d = np.linalg.norm(coords[src] - coords[dst], axis=1)
        src, dst = _keep_nearest(src, dst, d, int(max_neighbors))
        if symmetric:
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    return _finish(src, dst, n, self_loops)


def _keep_nearest(src: np.ndarray, dst: np.ndarray, dist: np.ndarray, k: int):
    """Per target, the ``k`` sources of smallest ``dist`` (ties by source index)."""
    if k < 1:
        raise ValueError("max_neighbors must be >= 1")
    order = np.lexsort((src, dist, dst))
    src, dst = src[order], dst[order]
    starts = np.searchsorted(dst, dst, side="left")
    rank = np.arange(len(dst)) - starts
    keep = rank < k
    return src[keep], dst[keep]


def grid_edges(grid: np.ndarray, radius: float | None = None, *, layout: str = "square",
               max_neighbors: int | None = None, symmetric: bool = False,
               self_loops: bool = False) -> np.ndarray:
    """Neighbours on the spot array.

    Args:
        grid: (n, 2) array coordinates (col, row).
        radius: In grid units; default ``sqrt(2)`` (8-neighbourhood) for ``square`` and 1
            (6-neighbourhood) for ``hex``.
        layout: ``square`` (legacy ST) or ``hex`` (Visium: ``array_col`` steps by 2 within a
            row, odd rows offset by one column).
    """
    grid = np.asarray(grid, np.float64)
    if layout == "square":
        coords = grid
        radius = math.sqrt(2) if radius is None else radius
    elif layout == "hex":
        coords = np.stack([grid[:, 0] * 0.5, grid[:, 1] * (math.sqrt(3) / 2)], axis=1)
        radius = 1.0 if radius is None else radius
    else:
        raise ValueError(f"unknown grid layout {layout!r}: use 'square' or 'hex'")
    return radius_edges(coords, radius, max_neighbors=max_neighbors, symmetric=symmetric,
                        self_loops=self_loops)


def pixel_edges(spatial: np.ndarray, radius_px: float, *, max_neighbors: int | None = None,
                symmetric: bool = False, self_loops: bool = False) -> np.ndarray:
    """Neighbours within ``radius_px`` pixels of the spot centres (``obsm['spatial']``)."""
    return radius_edges(spatial, radius_px, max_neighbors=max_neighbors, symmetric=symmetric,
                        self_loops=self_loops)


def knn_edges(x: np.ndarray, k: int, *, metric: str = "euclidean", symmetric: bool = False,
              self_loops: bool = False, chunk: int = 2048) -> np.ndarray:
    """Each node's ``k`` nearest other nodes in feature space, as edges ``neighbour -> node``.

    Args:
        x: (n, d) features.
        k: Neighbours per node (fewer when the slide has at most ``k`` spots).
        metric: ``euclidean`` or ``cosine``.
        symmetric: Add the reverse of every edge (then degrees may exceed ``k``).
        self_loops: Add ``i -> i``.
        chunk: Rows per block of the brute-force distance computation.
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    if k < 1:
        raise ValueError("k must be >= 1")
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif metric != "euclidean":
        raise ValueError(f"unknown metric {metric!r}: use 'euclidean' or 'cosine'")
    kk = min(k, n - 1)
    if kk <= 0:
        return _finish(np.zeros(0), np.zeros(0), n, self_loops)
    sq = (x**2).sum(1)
    srcs, dsts = [], []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        d2 = sq[rows, None] + sq[None, :] - 2.0 * x[rows] @ x.T
        d2[np.arange(len(rows)), rows] = np.inf
        # stable: smallest distance first, ties by index
        order = np.argsort(d2, axis=1, kind="stable")[:, :kk]
        srcs.append(order.ravel())
        dsts.append(np.repeat(rows, kk))
    src, dst = np.concatenate(srcs), np.concatenate(dsts)
    if symmetric:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    return _finish(src, dst, n, self_loops)


def to_undirected(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """The union of ``edge_index`` and its reverse (self loops kept if present)."""
    e = np.asarray(edge_index, np.int64)
    loops = bool((e[0] == e[1]).any())
    return _finish(np.concatenate([e[0], e[1]]), np.concatenate([e[1], e[0]]), num_nodes, loops)


def is_symmetric(edge_index: np.ndarray) -> bool:
    """True when every edge ``s -> t`` has its reverse ``t -> s``."""
    e = np.asarray(edge_index, np.int64)
    fwd = set(zip(e[0].tolist(), e[1].tolist()))
    return all((t, s) in fwd for s, t in fwd)


def concat_graphs(edge_indices: Sequence[np.ndarray], num_nodes: Sequence[int]) -> np.ndarray:
    """Stack per-slide graphs into one over the concatenated spots (indices offset)."""
    offsets = np.concatenate([[0], np.cumsum(num_nodes)[:-1]]).astype(np.int64)
    parts = [np.asarray(e, np.int64) + off for e, off in zip(edge_indices, offsets)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), np.int64)


def degree(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """In-degree of every node."""
    return np.bincount(np.asarray(edge_index)[1], minlength=num_nodes)


# --------------------------------------------------------------------------------------------
# Aggregation (torch)
# --------------------------------------------------------------------------------------------


def _as_index(edge_index, device) -> "torch.Tensor":
    import torch

    return torch.as_tensor(np.asarray(edge_index) if not torch.is_tensor(edge_index) else edge_index,
                           dtype=torch.long, device=device)


def message_passing_mean(x: "torch.Tensor", edge_index, num_nodes: int | None = None) -> "torch.Tensor":
    """Mean of the sources' features over each node's incoming edges.

    Args:
        x: (n, ...) node features.
        edge_index: (2, E) (source, target), numpy or torch.
        num_nodes: Defaults to ``x.shape[0]``.

    Returns:
        (num_nodes, ...) tensor; a node without incoming edges gets zeros.
    """
    import torch

    x = torch.as_tensor(x)
    n = x.shape[0] if num_nodes is None else int(num_nodes)
    ei = _as_index(edge_index, x.device)
    src, dst = ei[0], ei[1]
    out = x.new_zeros((n,) + tuple(x.shape[1:]))
    out.index_add_(0, dst, x.index_select(0, src))
    deg = torch.bincount(dst, minlength=n).clamp(min=1).to(x.dtype)
    return out / deg.view((n,) + (1,) * (x.dim() - 1))


def scatter_softmax(scores: "torch.Tensor", index, num_nodes: int | None = None) -> "torch.Tensor":
    """Softmax of ``scores`` (E,) or (E, H) over the entries sharing the same ``index`` (E,).

    Numerically stable (per-group max subtracted); groups are independent per head.
    """
    import torch

    scores = torch.as_tensor(scores)
    idx = _as_index(index, scores.device)
    n = int(idx.max().item()) + 1 if num_nodes is None and idx.numel() else int(num_nodes or 0)
    shape = (n,) + tuple(scores.shape[1:])
    idx_b = idx.view((-1,) + (1,) * (scores.dim() - 1)).expand_as(scores)
    group_max = torch.full(shape, float("-inf"), dtype=scores.dtype, device=scores.device)
    group_max = group_max.scatter_reduce(0, idx_b, scores.detach(), reduce="amax", include_self=True)
    ex = torch.exp(scores - group_max.index_select(0, idx))
    denom = torch.zeros(shape, dtype=scores.dtype, device=scores.device).index_add_(0, idx, ex)
    return ex / denom.index_select(0, idx).clamp(min=torch.finfo(scores.dtype).tiny)


def attention_aggregate(x: "torch.Tensor", edge_index, scores: "torch.Tensor",
                        num_nodes: int | None = None) -> "torch.Tensor":
    """Attention-weighted sum of the sources' features over each node's incoming edges.

    ``out[t] = sum_{e: s -> t} softmax_t(scores)_e * x[s]``.

    Args:
        x: (n, D) or, for H heads, (n, H, D) source features.
        edge_index: (2, E) (source, target).
        scores: (E,) or (E, H) unnormalised attention logits per edge.

    Returns:
        (num_nodes, D) or (num_nodes, H, D); zeros for nodes without incoming edges.
    """
    import torch

    x = torch.as_tensor(x)
    n = x.shape[0] if num_nodes is None else int(num_nodes)
    ei = _as_index(edge_index, x.device)
    src, dst = ei[0], ei[1]
    alpha = scatter_softmax(scores, dst, n)
    msg = x.index_select(0, src) * alpha.unsqueeze(-1)
    out = x.new_zeros((n,) + tuple(x.shape[1:]))
    return out.index_add_(0, dst, msg)


def dot_product_scores(q: "torch.Tensor", k: "torch.Tensor", edge_index) -> "torch.Tensor":
    """Scaled dot-product logits per edge: ``<q[target], k[source]> / sqrt(D)``; q, k are
    (n, D) or (n, H, D)."""
    ei = _as_index(edge_index, q.device)
    return (q.index_select(0, ei[1]) * k.index_select(0, ei[0])).sum(-1) / math.sqrt(q.shape[-1])
