"""Spot graphs and torch message passing against dense-adjacency references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stbench.features.graph import (
    attention_aggregate,
    concat_graphs,
    degree,
    dot_product_scores,
    grid_edges,
    is_symmetric,
    knn_edges,
    message_passing_mean,
    pixel_edges,
    scatter_softmax,
    to_undirected,
)


def square_grid(nx=5, ny=4):
    return np.array([(c, r) for r in range(ny) for c in range(nx)], float)


def hex_grid(nrows=5, ncols=6):
    """Visium-like array coords: even rows at even columns, odd rows shifted by one."""
    return np.array([(2 * c + (r % 2), r) for r in range(nrows) for c in range(ncols)], float)


def test_square_grid_8_neighbourhood():
    g = square_grid()
    e = grid_edges(g)
    assert e.dtype == np.int64 and e.shape[0] == 2
    assert not (e[0] == e[1]).any() and is_symmetric(e)
    deg = degree(e, len(g))
    assert deg[0] == 3 and deg[1] == 5 and deg[6] == 8  # corner, edge, interior
    assert len({tuple(p) for p in e.T}) == e.shape[1]  # no duplicates
    e4 = grid_edges(g, radius=1.0)
    assert degree(e4, len(g))[6] == 4
    loops = grid_edges(g, self_loops=True)
    assert (loops[0] == loops[1]).sum() == len(g)


def test_hex_grid_6_neighbourhood():
    g = hex_grid()
    e = grid_edges(g, layout="hex")
    deg = degree(e, len(g))
    interior = [i for i, (c, r) in enumerate(g) if 0 < r < 4 and 1 < c < 9]
    assert set(deg[interior].tolist()) == {6}
    assert is_symmetric(e)
    # neighbours really are (+-2, 0) and (+-1, +-1)
    d = np.abs(g[e[0]] - g[e[1]])
    assert {tuple(x) for x in d.tolist()} == {(2.0, 0.0), (1.0, 1.0)}
    with pytest.raises(ValueError):
        grid_edges(g, layout="triangle")


def test_pixel_radius_matches_grid_and_max_neighbors():
    g = square_grid()
    rng = np.random.default_rng(0)
    px = g * 290.0 + rng.normal(0, 3, g.shape)
    assert np.array_equal(pixel_edges(px, 290 * 1.6), grid_edges(g))
    capped = pixel_edges(px, 290 * 1.6, max_neighbors=2)
    assert degree(capped, len(g)).max() == 2
    sym = pixel_edges(px, 290 * 1.6, max_neighbors=2, symmetric=True)
    assert is_symmetric(sym) and degree(sym, len(g)).min() >= 2


def test_knn_edges_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 5))
    e = knn_edges(x, k=4, chunk=7)
    assert not (e[0] == e[1]).any()
    assert (degree(e, 30) == 4).all()
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    for i in range(30):
        assert set(e[0][e[1] == i]) == set(np.argsort(d[i])[:4])
    cos = knn_edges(x, k=3, metric="cosine")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    assert set(cos[0][cos[1] == 0]) == set(np.argsort(-s[0])[:3])
    assert is_symmetric(knn_edges(x, k=2, symmetric=True))
    assert is_symmetric(to_undirected(e, 30))
    assert knn_edges(x[:1], k=3).shape == (2, 0)


def dense_adjacency(e, n):
    a = np.zeros((n, n))
    np.add.at(a, (e[1], e[0]), 1.0)  # a[target, source]
    return a


def test_mean_and_attention_match_dense_reference():
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    n, d, heads = 12, 3, 2
    e = knn_edges(rng.normal(size=(n, 4)), k=3)
    e = np.concatenate([e, [[5], [5]]], axis=1)  # a self loop
    e = e[:, e[1] != 7]  # node 7 has no incoming edges
    x = torch.randn(n, d, dtype=torch.float64)
    a = torch.as_tensor(dense_adjacency(e, n))
    ref = (a @ x) / a.sum(1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(message_passing_mean(x, e), ref)
    assert torch.all(message_passing_mean(x, e)[7] == 0)

    scores = torch.randn(e.shape[1], dtype=torch.float64, requires_grad=True)
    dense = torch.full((n, n), float("-inf"), dtype=torch.float64)
    dense[e[1], e[0]] = scores.detach()
    w = torch.softmax(dense, dim=1).nan_to_num(0.0)
    torch.testing.assert_close(attention_aggregate(x, e, scores), w @ x)
    alpha = scatter_softmax(scores, torch.as_tensor(e[1]), n)
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, torch.as_tensor(e[1]), alpha.detach())
    assert torch.allclose(sums[degree(e, n) > 0], torch.ones(1, dtype=torch.float64))
    attention_aggregate(x, e, scores).sum().backward()  # differentiable
    assert scores.grad is not None and torch.isfinite(scores.grad).all()

    # multi-head, with dot-product scores; huge logits stay finite
    xh = torch.randn(n, heads, d, dtype=torch.float64)
    q, k = torch.randn(n, heads, d, dtype=torch.float64), torch.randn(n, heads, d, dtype=torch.float64)
    s = dot_product_scores(q, k, e) * 1e3
    out = attention_aggregate(xh, e, s)
    assert torch.isfinite(out).all()
    for h in range(heads):
        dense = torch.full((n, n), float("-inf"), dtype=torch.float64)
        dense[e[1], e[0]] = s[:, h]
        w = torch.softmax(dense, dim=1).nan_to_num(0.0)
        torch.testing.assert_close(out[:, h], w @ xh[:, h])
    assert math.isclose(float(scatter_softmax(torch.tensor([1.0, 2.0, 3.0]), np.array([0, 0, 0])).sum()), 1.0,
                        rel_tol=1e-6)


def test_concat_graphs_offsets():
    g1, g2 = grid_edges(square_grid(2, 2)), grid_edges(square_grid(3, 1))
    e = concat_graphs([g1, g2], [4, 3])
    assert e.shape[1] == g1.shape[1] + g2.shape[1]
    assert e[:, g1.shape[1]:].min() >= 4 and e.max() == 6


@pytest.mark.real_data
def test_real_her2st_grid(shared_dir):
    import pandas as pd

    spots = pd.read_csv(shared_dir / "data" / "her2st" / "ST-spotfiles" / "C2_selection.tsv", sep="\t")
    spots = spots[spots["selected"] == 1]
    grid = spots[["x", "y"]].to_numpy(float)
    e = grid_edges(grid)
    deg = degree(e, len(grid))
    assert is_symmetric(e) and deg.max() <= 8 and np.median(deg) >= 5
    xy = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    steps = np.linalg.norm(xy[e[0]] - xy[e[1]], axis=1) / np.linalg.norm(grid[e[0]] - grid[e[1]], axis=1)
    pitch = float(np.median(steps))
    assert 250 < pitch < 330  # ~290 px between array neighbours
