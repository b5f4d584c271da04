import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stbench.errors import ConfigError, DataError
from stbench.protocol.splits import gene_splits, slide_folds

SLIDES = [("A1", "A"), ("A2", "A"), ("B1", "B"), ("B2", "B"), ("C1", "C")]


def _check_disjoint(fold, names):
    parts = [set(fold.train), set(fold.val), set(fold.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(names)


def test_loso_tests_each_section_once():
    folds = slide_folds(SLIDES, "loso", seed=0)
    assert [f.test for f in folds] == [(s,) for s, _ in SLIDES]
    for f in folds:
        _check_disjoint(f, [s for s, _ in SLIDES])
        assert len(f.val) == 1


def test_lopo_holds_out_whole_patients():
    folds = slide_folds(SLIDES, "lopo", seed=0)
    assert [set(f.test) for f in folds] == [{"A1", "A2"}, {"B1", "B2"}, {"C1"}]
    for f in folds:
        patients = {p for s, p in SLIDES if s in f.test}
        assert len(patients) == 1


def test_holdout_with_and_without_val():
    (f,) = slide_folds(SLIDES, "holdout", seed=0, test=["C1"], val=["A1"])
    assert f.test == ("C1",) and f.val == ("A1",) and set(f.train) == {"A2", "B1", "B2"}
    (g,) = slide_folds(SLIDES, "holdout", seed=3, test=["C1"])
    assert len(g.val) == 1 and g.val[0] != "C1"
    assert slide_folds(SLIDES, "holdout", seed=3, test=["C1"]) == [g]  # seeded


def test_kfold_over_patients_partitions():
    folds = slide_folds(SLIDES, "kfold", seed=1, k=3)
    tested = [s for f in folds for s in f.test]
    assert sorted(tested) == sorted(s for s, _ in SLIDES)


@pytest.mark.parametrize("kwargs", [dict(name="holdout"), dict(name="holdout", test=["Z9"]),
                                    dict(name="nope"), dict(name="kfold", k=9)])
def test_bad_slide_splits(kwargs):
    name = kwargs.pop("name")
    with pytest.raises(ConfigError):
        slide_folds(SLIDES, name, seed=0, **kwargs)


PANEL = [f"G{i}" for i in range(40)]


def test_top_mean_uses_training_means():
    mean = np.arange(40.0)
    (s,) = gene_splits(PANEL, mean, "top_mean", seed=0, n_unseen=5)
    assert set(s.unseen) == {f"G{i}" for i in range(35, 40)}
    assert set(s.val) <= set(s.seen)


def test_kfold_genes_each_unseen_once():
    splits = gene_splits(PANEL, np.zeros(40), "kfold", seed=0, k=4)
    unseen = [g for s in splits for g in s.unseen]
    assert sorted(unseen) == sorted(PANEL)


def test_file_split(tmp_path):
    f = tmp_path / "unseen.txt"
    f.write_text("# comment\nG1\nG2\n\n")
    (s,) = gene_splits(PANEL, np.zeros(40), "file", seed=0, unseen_file=str(f))
    assert s.unseen == ("G1", "G2")
    f.write_text("G1\nNOTAGENE\n")
    with pytest.raises(ConfigError, match="not in the panel"):
        gene_splits(PANEL, np.zeros(40), "file", seed=0, unseen_file=str(f))
    with pytest.raises(DataError):
        gene_splits(PANEL, np.zeros(40), "file", seed=0, unseen_file=str(tmp_path / "missing.txt"))


def test_split_leaving_no_seen_genes_is_an_error():
    with pytest.raises(ConfigError, match="seen genes"):
        gene_splits(PANEL, np.zeros(40), "random", seed=0, n_unseen=40)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(5, 60), frac=st.floats(0.05, 0.8), seed=st.integers(0, 1000),
       kind=st.sampled_from(["random", "top_mean"]))
def test_gene_split_properties(n, frac, seed, kind):
    panel = [f"G{i}" for i in range(n)]
    mean = np.random.default_rng(seed).random(n)
    try:
        (s,) = gene_splits(panel, mean, kind, seed=seed, n_unseen=frac)
    except ConfigError:
        return
    assert not set(s.seen) & set(s.unseen)
    assert set(s.seen) | set(s.unseen) == set(panel)
    assert set(s.val) < set(s.seen) and not set(s.val) & set(s.unseen)
