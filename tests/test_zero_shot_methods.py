"""Zero-shot baselines and controls: sgn, genequery, textknn, seen_mean, shuffled_text.

Each passes the conformance kit, learns unseen genes on ``tiny_problem`` (and, when it reads
text, beats the same method fed permuted descriptions), and the pieces the issue pins down are
checked by hand: SGN's two graphs, SGN's PCC term on the sampled genes, shuffled_text's
derangement shared by fit and predict.

The two trained networks use smaller widths in the learning tests (and fewer epochs in the
conformance run) to keep this file within its time budget on two shared CPU cores.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest

from stbench.errors import ConfigError
import torch

from stbench.method import Bundle, FitContext, GeneText, Method, MethodConfig, MethodMeta, SlideView
from stbench.methods import shuffled_text as shuffled_mod
from stbench.methods._torch_utils import (
    EarlyStopping,
    grid_edges,
    knn_edges,
    mean_gene_pcc,
    pearson_per_column,
    slide_edges,
    torch_threads,
)
from stbench.methods.genequery import GeneQuery
from stbench.methods.seen_mean import SeenMean
from stbench.features.graph import message_passing_mean as mean_aggregate
from stbench.methods.sgn import SGN, gene_tokens, sampled_gene_loss
from stbench.methods.shuffled_text import ShuffledText, derangement, shuffled_gene_text
from stbench.methods.textknn import TextKNN, transfer_weights
from stbench.testing import _subset, check_method, tiny_problem
from stbench.features.gene_text import build_gene_text

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread in this file: small tensors on two CPU cores shared with other jobs,
    where a second thread made the trained methods many times slower (OpenMP contention)."""
    with torch_threads(1):
        yield


#: Smaller networks for the tests; the learning rate and the rest are the methods' defaults.
SGN_SMALL = {"hidden_dim": 128, "out_dim": 64, "text_ff_dim": 128, "max_epochs": 150, "patience": 150}
GQ_SMALL = {"d_model": 32, "ff_dim": 64, "max_epochs": 150, "patience": 150}


def _with_defaults(cls: type[Method], **defaults) -> type[Method]:
    """``cls`` with other Config defaults (same meta, fit and predict)."""
    fields = [(k, type(v), dataclasses.field(default=v)) for k, v in defaults.items()]
    cfg = dataclasses.make_dataclass(cls.Config.__name__, fields, bases=(cls.Config,))
    return type(cls.__name__, (cls,), {"Config": cfg})


def _problem_bundles(seed: int = 0, **kw):
    """Bundles as the harness builds them (see ``stbench.testing._fit_predict``)."""
    problem = tiny_problem(seed, **kw)
    genes = problem["genes"]
    unseen = genes[::4]
    seen = [g for g in genes if g not in set(unseen)]
    val_genes = seen[::5]
    fit_genes = [g for g in seen if g not in set(val_genes)]
    views = problem["slides"]
    train = Bundle(_subset(views[:-2], genes, fit_genes), fit_genes)
    val = Bundle(_subset(views[-2:-1], genes, val_genes), val_genes)
    test = Bundle(_subset(views[-1:], genes, None), [])
    truth = np.asarray(views[-1].expression)[:, [genes.index(g) for g in unseen]]
    ctx = FitContext(seed=seed, gene_text=build_gene_text(problem["descriptions"]), val_genes=val_genes)
    return train, val, test, unseen, truth, ctx


def _unseen_pcc(method: Method, seed: int = 0) -> float:
    train, val, test, unseen, truth, ctx = _problem_bundles(seed)
    method.fit(train, val, ctx)
    pred = method.predict(test, unseen)
    assert pred.shape == truth.shape and np.isfinite(pred).all()
    return mean_gene_pcc(truth, pred)


# ---------------------------------------------------------------------------------------------
# Conformance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [
    _with_defaults(SGN, **{**SGN_SMALL, "max_epochs": 15}),
    _with_defaults(GeneQuery, **{**GQ_SMALL, "max_epochs": 15}),
    TextKNN,
    SeenMean,
    ShuffledText,
], ids=["sgn", "genequery", "textknn", "seen_mean", "shuffled_text"])
def test_conformance(cls):
    check_method(cls)


def test_registered_with_kinds():
    from stbench.plugins import METHODS

    kinds = {n: METHODS.get(n).meta for n in ("sgn", "genequery", "textknn", "seen_mean", "shuffled_text")}
    assert kinds["sgn"].kind == kinds["genequery"].kind == kinds["textknn"].kind == "zero_shot"
    assert kinds["seen_mean"].kind == kinds["shuffled_text"].kind == "control"
    assert all(m.trained_on == "seen" for m in kinds.values())
    assert "graph" in kinds["sgn"].needs and "gene_text" in kinds["sgn"].needs


# ---------------------------------------------------------------------------------------------
# Learning on the tiny problem (unseen genes of the test slide)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, cls, config", [
    ("sgn", SGN, SGN_SMALL),
    ("genequery", GeneQuery, GQ_SMALL),
    ("textknn", TextKNN, {}),
], ids=["sgn", "genequery", "textknn"])
def test_text_methods_learn_and_beat_shuffled_text(name, cls, config):
    pcc = _unseen_pcc(cls(cls.Config(**config)))
    control = _unseen_pcc(ShuffledText(ShuffledText.Config(inner=name, inner_config=dict(config))))
    assert pcc > 0.5, f"{name}: unseen-gene PCC {pcc:.3f}"
    assert pcc > control + 0.2, f"{name}: {pcc:.3f} vs shuffled descriptions {control:.3f}"


def test_seen_mean_learns_shared_signal():
    pcc = _unseen_pcc(SeenMean())
    assert pcc > 0.15, pcc


def test_same_seed_same_sgn_predictions():
    a = _unseen_pcc(SGN(SGN.Config(**{**SGN_SMALL, "max_epochs": 5})), seed=1)
    b = _unseen_pcc(SGN(SGN.Config(**{**SGN_SMALL, "max_epochs": 5})), seed=1)
    assert a == b


# ---------------------------------------------------------------------------------------------
# SGN: graphs, loss, text tokens
# ---------------------------------------------------------------------------------------------


def _edge_sets(edges: np.ndarray, n: int) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {i: set() for i in range(n)}
    for s, t in edges.T:
        out[int(t)].add(int(s))
    return out


def test_grid_edges_radius_sqrt2_at_most_5_hand_checked():
    # 3x3 lattice, index = row * 3 + col, plus an isolated spot far away.
    cols, rows = np.meshgrid(np.arange(3), np.arange(3))
    grid = np.concatenate([np.stack([cols.ravel(), rows.ravel()], 1), [[10, 10]]])
    edges = grid_edges(grid)
    assert edges.dtype == np.int64 and edges.shape[0] == 2
    expected = {
        0: {1, 3, 4}, 1: {0, 2, 4, 3, 5}, 2: {1, 5, 4},
        3: {0, 4, 6, 1, 7}, 4: {1, 3, 5, 7, 0}, 5: {2, 4, 8, 1, 7},
        6: {3, 7, 4}, 7: {4, 6, 8, 3, 5}, 8: {5, 7, 4},
        9: set(),
    }
    assert _edge_sets(edges, 10) == expected
    assert not (edges[0] == edges[1]).any()
    # the cap keeps the nearest: the centre keeps its 4 side neighbours + the lowest diagonal
    assert np.bincount(edges[1], minlength=10).max() == 5


def test_knn_edges_k5_hand_checked():
    x = np.array([0, 1, 3, 6, 10, 15, 21], dtype=float)[:, None]
    edges = knn_edges(x, k=5)
    assert edges.shape == (2, 35)
    got = _edge_sets(edges, 7)
    assert got[0] == {1, 2, 3, 4, 5}
    assert got[3] == {2, 4, 1, 0, 5}  # distances 3, 4, 5, 6, 9 (not 15)
    assert got[6] == {5, 4, 3, 2, 1}
    assert not (edges[0] == edges[1]).any()


def test_slide_edges_prefers_harness_graph():
    given = np.array([[1], [0]], dtype=np.int64)
    view = SlideView("s", "p", {"image": np.zeros((3, 2), np.float32), "edges_grid": given,
                                "edges_knn": given}, np.zeros((3, 2)), np.zeros((3, 2)), None)
    eg, ek = slide_edges(view)
    assert np.array_equal(eg, given) and np.array_equal(ek, given)


def test_mean_aggregate():
    h = torch.tensor([[1.0], [3.0], [5.0]])
    edges = torch.tensor([[1, 2, 0], [0, 0, 2]])  # 0 <- {1, 2}; 2 <- {0}; 1 isolated
    assert mean_aggregate(h, edges).squeeze(1).tolist() == [4.0, 0.0, 1.0]


def test_sgn_pcc_term_uses_the_sampled_genes():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(50, 100, generator=gen)
    idx = torch.cat([torch.arange(70, 100), torch.arange(0, 34)])  # 64 genes, not the first 64
    assert float(sampled_gene_loss(y[:, idx], y, idx, 0.5)) == pytest.approx(0.0, abs=1e-5)
    # what the public code computes (PCC on the first 64 columns) is not zero here
    pred = torch.randn(50, 64, generator=gen)
    loss = float(sampled_gene_loss(pred, y, idx, 0.5))
    target = y[:, idx].numpy()
    mse = float(((pred.numpy() - target) ** 2).mean())
    pcc = mean_gene_pcc(target, pred.numpy())
    assert loss == pytest.approx(mse + 0.5 * (1 - pcc), rel=1e-4)


def test_sgn_samples_genes_beyond_the_first_64(monkeypatch):
    import stbench.methods.sgn as sgn_mod

    seen_idx: list[torch.Tensor] = []
    original = sgn_mod.sampled_gene_loss

    def spy(pred, y, gene_idx, pcc_weight):
        seen_idx.append(gene_idx.clone())
        assert pred.shape == (y.shape[0], gene_idx.numel())
        return original(pred, y, gene_idx, pcc_weight)

    monkeypatch.setattr(sgn_mod, "sampled_gene_loss", spy)
    problem = tiny_problem(0, n_genes=120)
    genes = problem["genes"]
    train = Bundle(_subset(problem["slides"][:2], genes, genes), genes)
    ctx = FitContext(seed=0, gene_text=build_gene_text(problem["descriptions"]))
    SGN(SGN.Config(**{**SGN_SMALL, "epochs_no_val": 2})).fit(train, None, ctx)
    assert seen_idx and all(i.numel() == 64 for i in seen_idx)
    assert all(len(set(i.tolist())) == 64 for i in seen_idx)
    assert max(int(i.max()) for i in seen_idx) >= 64


def test_sgn_reads_token_states_when_available():
    problem = tiny_problem(0)
    base = build_gene_text(problem["descriptions"])

    def token_states(genes):
        e = base.embed(genes)
        states = np.stack([e, 2 * e, np.zeros_like(e)], axis=1)
        mask = np.array([[True, True, False]] * len(genes))
        return states, mask

    text = GeneText(problem["descriptions"], embed=base.embed, token_states=token_states)
    states, mask, used = gene_tokens(text, ["GENE0", "GENE1"])
    assert used and states.shape[:2] == (2, 3) and mask.tolist() == [[True, True, False]] * 2
    states, mask, used = gene_tokens(base, ["GENE0"])  # tfidf: no token states -> pooled
    assert not used and states.shape[1] == 1 and mask.all()

    train, val, test, unseen, _, ctx = _problem_bundles(0)
    ctx = dataclasses.replace(ctx, gene_text=text)
    model = SGN(SGN.Config(**{**SGN_SMALL, "max_epochs": 2}))
    model.fit(train, val, ctx)
    assert model.used_token_states_
    assert model.predict(test, unseen).shape == (test.n_spots, len(unseen))


def test_early_stopping_restores_best_state():
    net = torch.nn.Linear(1, 1)
    stopper = EarlyStopping(patience=2)
    with torch.no_grad():
        net.weight.fill_(1.0)
    assert not stopper.step(0.5, net)
    with torch.no_grad():
        net.weight.fill_(2.0)
    assert not stopper.step(0.4, net)
    assert stopper.step(0.3, net)
    stopper.restore(net)
    assert float(net.weight.detach()) == 1.0 and stopper.best_step == 0


def test_patience_ratio_waits_longer_after_a_late_best():
    net = torch.nn.Linear(1, 1)

    def stop_epoch(stopper: EarlyStopping, scores: list[float]) -> int | None:
        for epoch, score in enumerate(scores):
            if stopper.step(score, net, epoch):
                return epoch
        return None

    late_best = [0.1 * e for e in range(10)] + [0.0] * 10  # best at epoch 9
    assert stop_epoch(EarlyStopping(patience=3), late_best) == 12
    grown = EarlyStopping(patience=3, patience_ratio=0.5)
    assert stop_epoch(grown, late_best) == 14  # waits ceil(0.5 * 10) = 5 epochs
    assert grown.best_step == 9 and grown.wait() == 5
    early_best = [1.0] + [0.0] * 10  # best at epoch 0: the fixed patience rules
    assert stop_epoch(EarlyStopping(patience=3, patience_ratio=0.5), early_best) == 3


def test_pearson_per_column_constant_is_zero():
    p = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0]])
    r = pearson_per_column(p, torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]))
    assert float(r[0]) == 0.0 and float(r[1]) == pytest.approx(np.corrcoef([2, 3, 5], [1, 2, 3])[0, 1], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# textknn
# ---------------------------------------------------------------------------------------------


def test_transfer_weights_topk_softmax():
    sim = np.array([[0.9, 0.1, 0.5, 0.8], [0.0, 0.0, 1.0, 0.0]])
    w = transfer_weights(sim, k=2, temperature=0.1)
    assert w.shape == (4, 2)
    assert np.allclose(w.sum(0), 1.0)
    assert set(np.flatnonzero(w[:, 0])) == {0, 3}
    assert w[0, 0] / w[3, 0] == pytest.approx(math.exp(1.0))


def test_textknn_selects_on_validation_only():
    train, val, test, unseen, _, ctx = _problem_bundles(0)
    m = TextKNN()
    m.fit(train, val, ctx)
    assert (m.alpha_, m.temperature_) in m.val_scores_
    assert set(m.val_scores_) == {(a, t) for a in m.config.alpha_grid for t in m.config.temperature_grid}


# ---------------------------------------------------------------------------------------------
# shuffled_text
# ---------------------------------------------------------------------------------------------


def test_derangement_has_no_fixed_point():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 200):
        p = derangement(n, rng)
        assert sorted(p.tolist()) == list(range(n)) and not (p == np.arange(n)).any()


def test_shuffled_gene_text_maps_every_view_consistently():
    problem = tiny_problem(0)
    base = build_gene_text(problem["descriptions"])
    text, mapping = shuffled_gene_text(base, seed=3)
    genes = list(problem["descriptions"])
    assert sorted(mapping) == sorted(genes) and sorted(mapping.values()) == sorted(genes)
    assert all(mapping[g] != g for g in genes)
    assert text.text(genes) == [problem["descriptions"][mapping[g]] for g in genes]
    assert np.array_equal(text.embed(genes), base.embed([mapping[g] for g in genes]))
    again, mapping2 = shuffled_gene_text(base, seed=3)
    assert mapping2 == mapping
    assert shuffled_gene_text(base, seed=4)[1] != mapping


class _Spy(Method):
    """Records what the descriptions look like in fit and in predict."""

    meta = MethodMeta(name="spy", kind="zero_shot", needs=frozenset({"image", "gene_text"}))

    @dataclasses.dataclass
    class Config(MethodConfig):
        flag: int = 0

    def fit(self, train, val, ctx):
        self.text = ctx.gene_text
        self.genes = sorted(ctx.gene_text.descriptions)
        self.fit_view = (self.text.text(self.genes), self.text.embed(self.genes))
        self.fit_ctx = ctx

    def predict(self, bundle, genes):
        self.predict_view = (self.text.text(self.genes), self.text.embed(self.genes))
        return np.zeros((bundle.n_spots, len(genes)), np.float32)


def test_shuffled_text_same_permutation_in_fit_and_predict(monkeypatch):
    monkeypatch.setattr(shuffled_mod, "inner_method_class", lambda name: _Spy)
    train, val, test, unseen, _, ctx = _problem_bundles(0)
    m = ShuffledText(ShuffledText.Config(inner="spy", inner_config={"flag": 2}))
    m.fit(train, val, ctx)
    m.predict(test, unseen)
    spy = m.inner_
    assert spy.config.flag == 2
    assert spy.fit_view[0] == spy.predict_view[0]
    assert np.array_equal(spy.fit_view[1], spy.predict_view[1])
    original = ctx.gene_text.text(spy.genes)
    moved = sum(a != b for a, b in zip(spy.fit_view[0], original))
    assert moved == len(spy.genes)  # a derangement: every gene reads another gene's text
    assert spy.fit_ctx.seed == ctx.seed and spy.fit_ctx.val_genes == ctx.val_genes


def test_shuffled_text_rejects_bad_inner():
    train, val, _, _, _, ctx = _problem_bundles(0)
    with pytest.raises(ConfigError, match="supervised"):
        ShuffledText(ShuffledText.Config(inner="ridge")).fit(train, val, ctx)
    with pytest.raises(ConfigError, match="nope"):
        ShuffledText(ShuffledText.Config(inner="bilinear", inner_config={"nope": 1})).fit(train, val, ctx)
    with pytest.raises(ConfigError, match=r"method.inner_config.lam=-1"):
        ShuffledText.needs_for(ShuffledText.Config(inner="bilinear", inner_config={"lam": -1}))


def test_shuffled_text_consumes_exactly_its_inner_methods_features():
    from stbench.plugins import METHODS

    for inner in ("alignst", "sgn", "bilinear", "genequery", "textknn"):
        cls = METHODS.get(inner)
        wrapped = ShuffledText.needs_for(ShuffledText.Config(inner=inner))
        assert wrapped == cls.needs_for(cls.Config()), inner
    assert "nuclei" in ShuffledText.needs_for(ShuffledText.Config(inner="alignst"))


def test_shuffled_text_composes_with_hydra():
    from omegaconf import OmegaConf

    from stbench.run.config import compose

    cfg = compose(["method=shuffled_text", "method.inner=bilinear", "+method.inner_config.lam=10.0"])
    obj = OmegaConf.to_object(cfg.method)
    assert obj.inner == "bilinear" and obj.inner_config == {"lam": 10.0}
    m = ShuffledText(obj)
    train, val, test, unseen, _, ctx = _problem_bundles(0)
    m.fit(train, val, ctx)
    assert m.inner_.config.lam == 10.0
    assert m.predict(test, unseen).shape == (test.n_spots, len(unseen))


def test_global_scaling_does_not_explode_near_constant_dimensions():
    from stbench.methods._torch_utils import FeatureScaler

    rng = np.random.default_rng(0)
    train = np.c_[rng.normal(size=(100, 3)), np.full(100, 2.0) + 1e-6 * rng.normal(size=100)]
    test = np.c_[rng.normal(size=(10, 3)), np.full(10, 3.0)]
    assert np.abs(FeatureScaler("feature").fit(train).transform(test)).max() > 1e4
    assert np.abs(FeatureScaler("global").fit(train).transform(test)).max() < 10
    z = FeatureScaler("global").fit(train).transform(train)
    assert np.allclose(z.mean(0), 0) and z.var(0).mean() == pytest.approx(1.0)
    assert np.array_equal(FeatureScaler("none").fit(train).transform(test), test)
    with pytest.raises(ValueError):
        FeatureScaler("zscore")


def test_sgn_weight_generator_cls_shortcut_equals_full_encoder():
    import torch

    from stbench.methods.sgn import GeneWeightGenerator

    torch.manual_seed(0)
    gen = GeneWeightGenerator(12, 16, 2, 4, 32, 0.1).eval()
    states = torch.randn(5, 9, 12)
    mask = torch.rand(5, 9) < 0.7
    mask[:, 0] = True
    w, b = gen(states, mask)
    # reference: the whole stack on every position, then the CLS output
    seq = torch.cat([torch.cat([gen.cls, gen.register], 1).expand(5, -1, -1), gen.proj(states)], 1)
    keep = torch.cat([torch.ones(5, 2, dtype=torch.bool), mask], 1)
    head = gen.head(gen.encoder(seq, src_key_padding_mask=~keep)[:, 0])
    torch.testing.assert_close(w, torch.nn.functional.normalize(head[:, :16], dim=1))
    torch.testing.assert_close(b, head[:, 16])


@pytest.mark.parametrize("cls, small", [(SGN, SGN_SMALL), (GeneQuery, GQ_SMALL)],
                         ids=["sgn", "genequery"])
def test_eval_every_validates_every_k_epochs(cls, small):
    """``eval_every = 2``: validation after epochs 1, 3 and the last one; patience in epochs."""
    train, val, test, unseen, truth, ctx = _problem_bundles(0)
    m = cls(cls.Config(**{**small, "max_epochs": 6, "patience": 50, "eval_every": 2}))
    m.fit(train, val, ctx)
    assert [h["epoch"] for h in m.history_ if "val_pcc" in h] == [1, 3, 5]
    assert m.best_epoch_ in (1, 3, 5)
