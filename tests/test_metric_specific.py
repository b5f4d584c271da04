"""``pcc_specific_mean``: partial correlation given the slide's generic pattern. A predictor that
outputs the generic pattern itself scores 0; gene-specific signal survives."""

from __future__ import annotations

import numpy as np
import pytest

from stbench.protocol.metrics import evaluate, generic_pattern


def _slide(rng, n=120, g=30):
    depth = rng.gamma(5.0, 200.0, size=n)
    cellularity = rng.normal(size=n)
    specific = rng.normal(size=(n, g))
    truth = 0.8 * cellularity[:, None] + 0.3 * np.log1p(depth)[:, None] + specific
    return truth, depth, specific


def _evaluate(truth, pred, generic, n_slides=1):
    n, g = truth.shape
    labels = np.repeat(np.arange(n_slides), n // n_slides)
    return evaluate(truth, pred, labels, [f"g{i}" for i in range(g)], gene_mean_train=np.zeros(g),
                    gene_var_train=np.ones(g), generic=generic)


def test_the_generic_pattern_itself_scores_zero_but_well_on_pcc():
    rng = np.random.default_rng(0)
    truth, depth, _ = _slide(rng)
    z = generic_pattern(truth, depth)
    design = np.hstack([np.ones((len(z), 1)), z])
    shared = design @ np.linalg.lstsq(design, truth.mean(axis=1), rcond=None)[0]  # one pattern
    pred = np.repeat(shared[:, None], truth.shape[1], axis=1) + rng.normal(size=truth.shape[1])
    ev = _evaluate(truth, pred, z)
    assert ev.metrics["pcc_mean"] > 0.3
    assert ev.metrics["pcc_specific_mean"] == pytest.approx(0.0, abs=1e-9)


def test_gene_specific_signal_survives():
    rng = np.random.default_rng(1)
    truth, depth, specific = _slide(rng)
    z = generic_pattern(truth, depth)
    pred = specific + 0.1 * rng.normal(size=specific.shape)
    ev = _evaluate(truth, pred, z)
    assert ev.metrics["pcc_specific_mean"] > 0.8
    assert _evaluate(truth, truth, z).metrics["pcc_specific_mean"] == pytest.approx(1.0)


def test_matches_a_direct_partial_correlation_per_slide():
    rng = np.random.default_rng(2)
    parts = [_slide(rng, n=80, g=6) for _ in range(2)]
    truth = np.vstack([p[0] for p in parts])
    z = np.vstack([generic_pattern(p[0], p[1]) for p in parts])
    pred = truth + rng.normal(scale=2.0, size=truth.shape)
    ev = _evaluate(truth, pred, z, n_slides=2)
    expected = []
    for s in range(2):
        rows = slice(80 * s, 80 * (s + 1))
        design = np.hstack([np.ones((80, 1)), z[rows]])
        def resid(y):
            return y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        expected.append([np.corrcoef(resid(truth[rows, j]), resid(pred[rows, j]))[0, 1]
                         for j in range(6)])
    np.testing.assert_allclose(ev.per_gene["pcc_specific"], np.mean(expected, axis=0), atol=1e-10)
    assert ev.metrics["pcc_specific_mean"] == pytest.approx(np.mean(expected), abs=1e-10)


def test_generic_pattern_columns():
    rng = np.random.default_rng(3)
    truth, depth, _ = _slide(rng)
    z = generic_pattern(truth, depth, n_pcs=2)
    assert z.shape == (truth.shape[0], 3)
    np.testing.assert_allclose(z[:, 0], np.log1p(depth))
