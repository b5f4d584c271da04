"""Property-based tests (hypothesis) of the splits and the evaluator.

Complements tests/test_splits.py (gene-split properties of ``random`` and ``top_mean``) and
tests/test_metrics.py (metric values against scipy on random cases, one fixed spot
permutation) with the properties they do not state:

* slide folds (loso, lopo, kfold, holdout) partition the sections: in every fold train, val
  and test are disjoint and cover all sections, and over the folds every section is tested
  exactly once (holdout: the given test sections); lopo and kfold never split a patient;
* gene splits of every kind (random, top_mean, kfold, file, none): seen and unseen disjoint
  and covering the panel, validation genes a subset of the seen genes; kfold makes every gene
  unseen exactly once;
* metrics are invariant to the order of spots (rows of y and y_hat permuted together),
  bounded (correlations in [-1, 1], errors >= 0, R2 <= 1), and invariant to the order of genes
  up to the same permutation of the per-gene table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stbench.errors import ConfigError
from stbench.protocol.metrics import evaluate
from stbench.protocol.splits import gene_splits, slide_folds

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Slide folds
# --------------------------------------------------------------------------------------------


@st.composite
def slide_lists(draw):
    """(section, patient) pairs: 2-12 sections over 1-5 patients, in any order."""
    n = draw(st.integers(2, 12))
    n_patients = draw(st.integers(1, min(5, n)))
    order = draw(st.permutations(range(n)))  # every patient has a section, in any order
    return [(f"S{i}", f"P{order[i] % n_patients}") for i in range(n)]


def _assert_partition(folds, names):
    for f in folds:
        train, val, test = set(f.train), set(f.val), set(f.test)
        assert not (train & val or train & test or val & test), f
        assert train | val | test == set(names), f
        assert len(f.train) == len(train) and len(f.val) == len(val) and len(f.test) == len(test)
        assert train, "every fold trains on something"


@SETTINGS
@given(slides=slide_lists(), name=st.sampled_from(["loso", "lopo", "kfold"]),
       seed=st.integers(0, 10_000), k=st.integers(2, 5), n_val=st.integers(0, 3))
def test_slide_folds_partition_the_sections(slides, name, seed, k, n_val):
    names = [s for s, _ in slides]
    patient = dict(slides)
    n_patients = len(set(patient.values()))
    # refused exactly when the split is impossible: one patient (lopo), k > patients (kfold)
    impossible = (name == "lopo" and n_patients < 2) or (name == "kfold" and k > n_patients)
    try:
        folds = slide_folds(slides, name, seed=seed, k=k, n_val_slides=n_val)
    except ConfigError:
        assert impossible
        return
    assert not impossible
    _assert_partition(folds, names)
    tested = [s for f in folds for s in f.test]
    assert sorted(tested) == sorted(names), "every section is tested exactly once"
    assert [f.index for f in folds] == list(range(len(folds)))
    if name in ("lopo", "kfold"):
        for f in folds:
            test_patients = {patient[s] for s in f.test}
            assert not test_patients & {patient[s] for s in f.train + f.val}
    assert slide_folds(slides, name, seed=seed, k=k, n_val_slides=n_val) == folds  # seeded


@SETTINGS
@given(slides=slide_lists(), data=st.data(), seed=st.integers(0, 10_000))
def test_holdout_partitions_and_tests_exactly_the_given_sections(slides, data, seed):
    names = [s for s, _ in slides]
    test = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names) - 1,
                              unique=True))
    rest = [s for s in names if s not in test]
    val = data.draw(st.lists(st.sampled_from(rest), max_size=len(rest) - 1, unique=True))
    (fold,) = slide_folds(slides, "holdout", seed=seed, test=test, val=val)
    _assert_partition([fold], names)
    assert fold.test == tuple(test)
    if val:
        assert fold.val == tuple(val)


# --------------------------------------------------------------------------------------------
# Gene splits
# --------------------------------------------------------------------------------------------


def _assert_gene_split(s, panel, with_val):
    seen, unseen, val = set(s.seen), set(s.unseen), set(s.val)
    assert not seen & unseen
    assert seen | unseen == set(panel)
    assert len(s.seen) == len(seen) and len(s.unseen) == len(unseen)
    assert val <= seen and not val & unseen
    if with_val and unseen:
        assert val and val < seen, "validation genes are a strict subset of the seen genes"
        assert set(s.fit) == seen - val
    # the panel's order is kept
    order = {g: i for i, g in enumerate(panel)}
    assert list(s.seen) == sorted(s.seen, key=order.__getitem__)


@SETTINGS
@given(n=st.integers(3, 80), seed=st.integers(0, 10_000), with_val=st.booleans(),
       kind=st.sampled_from(["random", "top_mean", "kfold", "none"]),
       frac=st.floats(0.02, 0.9), k=st.integers(2, 6), val_fraction=st.floats(0.0, 0.6))
def test_gene_splits_are_disjoint_and_cover_the_panel(n, seed, with_val, kind, frac, k,
                                                      val_fraction):
    panel = [f"G{i}" for i in range(n)]
    mean = np.random.default_rng(seed).random(n)
    try:
        splits = gene_splits(panel, mean, kind, seed=seed, n_unseen=frac, k=k,
                             val_fraction=val_fraction, with_val=with_val)
    except ConfigError:
        return  # too few genes for the split asked for: refused, never a degenerate split
    for s in splits:
        _assert_gene_split(s, panel, with_val and kind != "none")
    if kind == "kfold":
        unseen = [g for s in splits for g in s.unseen]
        assert sorted(unseen) == sorted(panel), "every gene is unseen exactly once"
        assert len(splits) == k
    if kind == "none":
        assert splits[0].unseen == () and splits[0].val == ()
    if kind == "top_mean":
        (s,) = splits
        lowest_unseen = min(mean[panel.index(g)] for g in s.unseen)
        assert all(mean[panel.index(g)] <= lowest_unseen for g in s.seen)


@SETTINGS
@given(n=st.integers(4, 40), data=st.data(), seed=st.integers(0, 1000))
def test_file_gene_split_uses_exactly_the_listed_genes(tmp_path_factory, n, data, seed):
    panel = [f"G{i}" for i in range(n)]
    unseen = data.draw(st.lists(st.sampled_from(panel), min_size=1, max_size=n - 2, unique=True))
    path = tmp_path_factory.mktemp("unseen") / "unseen.txt"
    path.write_text("# held out\n" + "\n".join(unseen) + "\n")
    (s,) = gene_splits(panel, np.zeros(n), "file", seed=seed, unseen_file=str(path))
    assert list(s.unseen) == unseen
    _assert_gene_split(s, panel, True)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


@st.composite
def eval_cases(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    n_slides = draw(st.integers(1, 4))
    n_genes = draw(st.integers(1, 10))
    ties = draw(st.booleans())
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 25, size=n_slides)
    slides = np.concatenate([[f"s{i}"] * k for i, k in enumerate(sizes)])
    n = slides.size
    y_true = rng.normal(size=(n, n_genes)) * rng.uniform(0.1, 3, n_genes) + rng.normal(size=n_genes)
    y_pred = rng.uniform(-1, 1) * y_true + rng.normal(size=(n, n_genes))
    if ties:  # counts-like data: many zeros and repeated values, some constant columns
        y_true = np.round(np.clip(y_true, 0, None))
        y_pred = np.round(np.clip(y_pred, 0, None), 1)
    perm = rng.permutation(n)
    return dict(y_true=y_true[perm], y_pred=y_pred[perm], slides=slides[perm],
                genes=[f"g{j}" for j in range(n_genes)],
                mean=rng.normal(size=n_genes), var=rng.uniform(0.1, 2.0, size=n_genes),
                top_k=draw(st.integers(1, 12)), rng=rng)


def _evaluate(c, rows=None, cols=None):
    rows = np.arange(len(c["slides"])) if rows is None else rows
    cols = np.arange(len(c["genes"])) if cols is None else cols
    return evaluate(c["y_true"][np.ix_(rows, cols)], c["y_pred"][np.ix_(rows, cols)],
                    c["slides"][rows], [c["genes"][j] for j in cols],
                    gene_mean_train=c["mean"][cols], gene_var_train=c["var"][cols],
                    top_k=c["top_k"])


@SETTINGS
@given(c=eval_cases())
def test_metrics_invariant_to_spot_order(c):
    base = _evaluate(c)
    perm = c["rng"].permutation(len(c["slides"]))
    moved = _evaluate(c, rows=perm)
    assert set(moved.metrics) == set(base.metrics)
    for name, value in base.metrics.items():
        assert moved.metrics[name] == pytest.approx(value, abs=1e-9), name
    pd.testing.assert_frame_equal(base.per_gene, moved.per_gene, atol=1e-9, rtol=0)
    assert base.counts == moved.counts


@SETTINGS
@given(c=eval_cases())
def test_metrics_are_bounded(c):
    ev = _evaluate(c)
    for col in ("pcc", "pcc_pooled", "spearman"):
        values = ev.per_gene[col].to_numpy()
        assert np.isfinite(values).all()
        assert (values >= -1 - 1e-12).all() and (values <= 1 + 1e-12).all(), col
    assert (ev.per_gene["r2"] <= 1 + 1e-12).all()
    for name, value in ev.metrics.items():
        assert np.isfinite(value), name
        if name.startswith(("pcc", "spearman")):
            assert -1 - 1e-12 <= value <= 1 + 1e-12, name
    assert ev.metrics["mse"] >= 0 and ev.metrics["mae"] >= 0
    assert ev.metrics["r2_mean"] <= 1 + 1e-12
    assert ev.metrics["pcc_q25"] <= ev.metrics["pcc_median"] + 1e-12


@SETTINGS
@given(c=eval_cases())
def test_evaluate_invariant_to_gene_order_up_to_the_permutation(c):
    base = _evaluate(c)
    perm = c["rng"].permutation(len(c["genes"]))
    moved = _evaluate(c, cols=perm)
    for name, value in base.metrics.items():
        assert moved.metrics[name] == pytest.approx(value, abs=1e-9), name
    assert base.counts == moved.counts
    # the per-gene table follows the permutation: same rows, re-ordered
    expected = base.per_gene.iloc[perm].reset_index(drop=True)
    pd.testing.assert_frame_equal(moved.per_gene.reset_index(drop=True), expected,
                                  atol=1e-9, rtol=0)
    by_gene = moved.per_gene.set_index("gene").loc[base.per_gene["gene"]].reset_index()
    pd.testing.assert_frame_equal(by_gene, base.per_gene.reset_index(drop=True),
                                  atol=1e-9, rtol=0)


@SETTINGS
@given(c=eval_cases(), scale=st.floats(0.01, 100.0), shift=st.floats(-50.0, 50.0))
def test_correlations_invariant_to_affine_rescaling_of_predictions(c, scale, shift):
    base = _evaluate(c)
    scaled = dict(c, y_pred=c["y_pred"] * scale + shift)
    moved = _evaluate(scaled)
    for name in ("pcc_mean", "pcc_pooled_mean", "spearman_mean", "pcc_median"):
        assert moved.metrics[name] == pytest.approx(base.metrics[name], abs=1e-7), name
