"""ALIGN-ST (``alignst``): modules, masks, gradients, determinism, contract, ablations, learning."""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stbench.method import Bundle, FitContext, GeneText, SlideView  # noqa: E402
from stbench.methods.alignst import AlignST  # noqa: E402
from stbench.methods.alignst.method import spot_graph  # noqa: E402
from stbench.methods.alignst.model import (EDGE_BOTH, EDGE_GRID, EDGE_KNN, EDGE_SELF,  # noqa: E402
                                           AlignSTModel, GeneBatch, ModelConfig, SpotBatch,
                                           alignment_loss, masked_attention, pcc_per_gene)
from stbench.testing import _subset, check_method, tiny_problem  # noqa: E402
from stbench.features.gene_text import build_gene_text  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True, scope="module")
def _threads():
    """Small tensors on a shared 2-core CPU: one intra-op thread is the fastest (and fair)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAST = dict(dim=32, heads=4, max_epochs=2, min_epochs=1, min_steps_per_epoch=1, dropout=0.0)


def _cfg(**kw) -> AlignST.Config:
    return dataclasses.replace(AlignST.Config(), **{**FAST, **kw})


# ----------------------------------------------------------------------------------------------
# Synthetic slides with nuclei and graphs
# ----------------------------------------------------------------------------------------------


def grid_edges(grid: np.ndarray) -> np.ndarray:
    """4-neighbour edges (both directions) of integer grid coordinates."""
    index = {tuple(c): i for i, c in enumerate(np.asarray(grid).tolist())}
    src, tgt = [], []
    for i, (c, r) in enumerate(np.asarray(grid).tolist()):
        for dc, dr in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            j = index.get((c + dc, r + dr))
            if j is not None:
                src.append(j)
                tgt.append(i)
    return np.array([src, tgt], dtype=np.int64)


def knn_edges(x: np.ndarray, k: int = 3) -> np.ndarray:
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nb = np.argsort(d, 1)[:, :k]
    return np.stack([nb.ravel(), np.repeat(np.arange(len(x)), k)]).astype(np.int64)


def with_nuclei_graph(view: SlideView, rng: np.random.Generator, max_nuclei: int = 6,
                      n_feat: int = 5) -> SlideView:
    n = view.n_spots
    counts = rng.integers(0, max_nuclei + 1, n)
    counts[0] = 0  # a spot without nuclei
    mask = np.arange(max_nuclei)[None] < counts[:, None]
    nuclei = rng.normal(size=(n, max_nuclei, n_feat)).astype(np.float32) * mask[..., None]
    nuclei[..., 0] += view.features["image"][:, :1] * mask  # some signal
    grid = grid_edges(view.grid)
    knn = np.concatenate([knn_edges(view.features["image"]), grid[:, :5]], 1)  # overlap
    feats = {**view.features, "nuclei": nuclei, "nuclei_mask": mask, "edges_grid": grid,
             "edges_knn": knn}
    return dataclasses.replace(view, features=feats)


def rich_problem(seed: int = 0, **kw) -> dict:
    prob = tiny_problem(seed, **kw)
    rng = np.random.default_rng(seed + 100)
    prob["slides"] = [with_nuclei_graph(v, rng) for v in prob["slides"]]
    return prob


def split(prob: dict):
    genes = prob["genes"]
    unseen = genes[::4]
    seen = [g for g in genes if g not in set(unseen)]
    val_genes = seen[::5]
    fit_genes = [g for g in seen if g not in set(val_genes)]
    views = prob["slides"]
    train = Bundle(_subset(views[:-2], genes, fit_genes), fit_genes)
    val = Bundle(_subset(views[-2:-1], genes, val_genes), val_genes)
    test = Bundle(_subset(views[-1:], genes, None), [])
    return train, val, test, unseen, val_genes


def token_gene_text(descriptions: dict[str, str], d: int = 12, seed: int = 0) -> GeneText:
    """A GeneText with per-token states: one vector per word (hashing), variable lengths."""
    rng = np.random.default_rng(seed)
    vocab: dict[str, np.ndarray] = {}

    def vec(word: str) -> np.ndarray:
        if word not in vocab:
            vocab[word] = rng.normal(size=d).astype(np.float32)
        return vocab[word]

    def token_states(names):
        words = [descriptions[g].lower().replace(".", " ").replace(":", " ").split()[1:]
                 for g in names]
        t = max(len(w) for w in words)
        states = np.zeros((len(names), t, d), np.float32)
        mask = np.zeros((len(names), t), bool)
        for i, ws in enumerate(words):
            states[i, : len(ws)] = [vec(w) for w in ws]
            mask[i, : len(ws)] = True
        return states, mask

    def embed(names):
        s, m = token_states(names)
        return (s * m[..., None]).sum(1) / m.sum(1, keepdims=True)

    return GeneText(descriptions, embed=embed, token_states=token_states)


def pcc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    yc, pc = y - y.mean(0), p - p.mean(0)
    return (yc * pc).sum(0) / np.sqrt((yc**2).sum(0) * (pc**2).sum(0) + 1e-12)


# ----------------------------------------------------------------------------------------------
# Module-level tests
# ----------------------------------------------------------------------------------------------


def _model_inputs(seed=0, n=30, m=5, f=4, g=7, t=6, d_img=10, d_text=8):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, m + 1, (n,), generator=gen)
    counts[:3] = 0
    mask = torch.arange(m)[None] < counts[:, None]
    grid = np.stack([np.arange(n) % 6, np.arange(n) // 6], 1)
    feats = np.random.default_rng(seed).normal(size=(n, 3))
    src, tgt, et = spot_graph(n, grid_edges(grid), knn_edges(feats))
    spots = SpotBatch(torch.randn(n, d_img, generator=gen), torch.randn(n, m, f, generator=gen),
                      mask,
                      torch.from_numpy(src), torch.from_numpy(tgt), torch.from_numpy(et))
    lengths = torch.randint(1, t + 1, (g,), generator=gen)
    tmask = torch.arange(t)[None] < lengths[:, None]
    genes = GeneBatch(torch.randn(g, t, d_text, generator=gen), tmask,
                      torch.randn(g, d_text, generator=gen), torch.ones(g, dtype=torch.bool))
    cfg = ModelConfig(d_img=d_img, d_text=d_text, n_nuclei_features=f, dim=32, heads=4,
                      graph_layers=2, prompt_rounds=2, dropout=0.1)
    return cfg, spots, genes


def test_model_shapes_and_empty_spots() -> None:
    torch.manual_seed(0)
    cfg, spots, genes = _model_inputs()
    model = AlignSTModel(cfg).eval()
    pred, aux = model(spots, genes)
    assert pred.shape == (30, 7)
    assert aux["z"].shape == (30, 32) and aux["w"].shape == (7, 32)
    assert aux["nuclei_attn"].shape == (30, 4, 5)
    assert aux["interaction_attn"].shape == (4, 7, 7)
    assert torch.isfinite(pred).all()
    # spots without nuclei: zero attention, zero gate; real rows sum to 1 per head
    empty = ~spots.nuclei_mask.any(1)
    assert empty.sum() >= 3
    assert torch.all(aux["nuclei_attn"][empty] == 0) and torch.all(aux["nuclei_gate"][empty] == 0)
    sums = aux["nuclei_attn"][~empty].sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_masked_attention_all_masked_row_is_zero_not_nan() -> None:
    q = torch.randn(2, 1, 1, 4, requires_grad=True)
    k = torch.randn(2, 1, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out, w = masked_attention(q, k, k, mask)
    assert torch.all(out[1] == 0) and torch.all(w[1] == 0)
    assert torch.all(w[0, ..., 1] == 0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_padding_nuclei_changes_nothing() -> None:
    torch.manual_seed(0)
    cfg, spots, genes = _model_inputs()
    model = AlignSTModel(cfg).eval()
    pred, aux = model(spots, genes)
    n, m, f = spots.nuclei.shape
    garbage = torch.randn(n, 3, f) * 100
    padded = dataclasses.replace(spots, nuclei=torch.cat([spots.nuclei, garbage], 1),
                                 nuclei_mask=torch.cat([spots.nuclei_mask,
                                                        torch.zeros(n, 3, dtype=torch.bool)], 1))
    pred2, aux2 = model(padded, genes)
    torch.testing.assert_close(pred2, pred, atol=1e-5, rtol=1e-5)
    assert torch.all(aux2["nuclei_attn"][..., m:] == 0)


def _nuclei_fusion_every_slot(fusion, h, nuclei, mask):
    """Reference: embed EVERY slot (padding too), attend with the mask."""
    tokens = fusion.token(nuclei)
    a, w = fusion.attn(fusion.query(h)[:, None, :], tokens, mask)
    count = mask.sum(-1, keepdim=True).to(h.dtype)
    a = a[:, 0] + fusion.count(torch.log1p(count))
    has = (count > 0).to(h.dtype)
    gate = torch.sigmoid(fusion.gate(torch.cat([h, a], -1)))
    return fusion.norm(h + has * gate * a), w[:, :, 0, :], gate * has


@pytest.mark.parametrize("prefix", [True, False])
def test_nuclei_fusion_real_slots_only_equals_every_slot(prefix) -> None:
    """Packing the real nuclei (scattered masks too) gives the every-slot values and grads."""
    from stbench.methods.alignst.model import NucleiFusion

    gen = torch.Generator().manual_seed(3)
    fusion = NucleiFusion(11, 32, 4, 0.0).eval()
    n, m = 40, 9
    counts = torch.randint(0, m + 1, (n,), generator=gen)
    counts[:3] = 0
    mask = torch.arange(m)[None] < counts[:, None]
    if not prefix:  # real slots anywhere in the row
        mask = mask[:, torch.randperm(m, generator=gen)]
    nuclei = torch.randn(n, m, 11, generator=gen) * mask[..., None]
    h = torch.randn(n, 32, generator=gen, requires_grad=True)
    got = fusion(h, nuclei, mask)
    want = _nuclei_fusion_every_slot(fusion, h, nuclei, mask)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(got[0].sum(), [h, *fusion.parameters()], allow_unused=True)
    g2 = torch.autograd.grad(want[0].sum(), [h, *fusion.parameters()], allow_unused=True)
    for a, b in zip(g1, g2):
        if a is not None and b is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_needs_for_follows_the_switches() -> None:
    full = AlignST.needs_for(AlignST.Config())
    assert full == AlignST.meta.needs and "nuclei" in full and "graph" in full
    assert AlignST.needs_for(None) == AlignST.meta.needs
    no_nuc = AlignST.needs_for(dataclasses.replace(AlignST.Config(), nuclei=False))
    assert no_nuc == AlignST.meta.needs - {"nuclei"}
    no_graph = AlignST.needs_for(dataclasses.replace(AlignST.Config(), graph=False))
    assert no_graph == AlignST.meta.needs - {"graph"}
    assert "graph" not in AlignST.needs_for(dataclasses.replace(AlignST.Config(), graph_layers=0))
    assert AlignST.needs_for({"nuclei": False}) == AlignST.meta.needs - {"nuclei"}


def test_eval_every_validates_every_k_epochs() -> None:
    m, _, _ = _fit(_cfg(max_epochs=5, min_epochs=0, patience=10, eval_every=2),
                   rich_problem(0))
    validated = [h["epoch"] for h in m.history if "val_pcc" in h]
    assert validated == [1, 3, 4]


def test_padding_genes_and_tokens_changes_nothing() -> None:
    torch.manual_seed(0)
    cfg, spots, genes = _model_inputs()
    model = AlignSTModel(cfg).eval()
    pred, _ = model(spots, genes)
    g, t, d = genes.tokens.shape
    # extra masked tokens in every gene, and three padding genes with garbage tokens
    tokens = torch.cat([genes.tokens, torch.randn(g, 2, d) * 50], 1)
    tmask = torch.cat([genes.token_mask, torch.zeros(g, 2, dtype=torch.bool)], 1)
    tokens = torch.cat([tokens, torch.randn(3, t + 2, d) * 50], 0)
    tmask = torch.cat([tmask, torch.ones(3, t + 2, dtype=torch.bool)], 0)
    pooled = torch.cat([genes.pooled, torch.randn(3, d) * 50], 0)
    gmask = torch.cat([genes.gene_mask, torch.zeros(3, dtype=torch.bool)])
    pred2, _ = model(spots, GeneBatch(tokens, tmask, pooled, gmask))
    torch.testing.assert_close(pred2[:, :g], pred, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    cfg, spots, genes = _model_inputs()
    assert set(spots.etype.tolist()) == {EDGE_SELF, EDGE_GRID, EDGE_KNN, EDGE_BOTH}
    model = AlignSTModel(cfg).train()
    pred, aux = model(spots, genes)
    y = torch.randn_like(pred)
    loss = ((pred - y) ** 2).mean() + (1 - pcc_per_gene(pred, y).mean()) \
        + 0.1 * alignment_loss(aux["z"], aux["w"], y)
    loss.backward()
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"


def test_gene_encoder_last_block_shortcut_equals_full_self_attention() -> None:
    from stbench.methods.alignst.model import GeneEncoder

    torch.manual_seed(0)
    for layers in (1, 2, 3):
        enc = GeneEncoder(8, 32, 4, layers, 3, 0.0).eval()
        raw = torch.randn(5, 7, 8)
        mask = torch.rand(5, 7) < 0.7
        mask[:, 0] = True
        x = torch.cat([enc.prompts.expand(5, -1, -1), enc.project(raw)], 1)
        full_mask = torch.cat([torch.ones(5, 3, dtype=torch.bool), mask], 1)
        for block in enc.blocks:
            x, _ = block(x, key_mask=full_mask)
        # prepared tokens (real tokens projected once, first block's K/V reused) give the
        # same embeddings as the full self-attention over the padded sequence
        torch.testing.assert_close(enc(enc.prepare(raw, mask)), x[:, 0], atol=1e-5, rtol=1e-5)
        prompts = torch.randn(3, 32)
        x = torch.cat([prompts.expand(5, -1, -1), enc.project(raw)], 1)
        for block in enc.blocks:
            x, _ = block(x, key_mask=full_mask)
        torch.testing.assert_close(enc(enc.prepare(raw, mask), prompts), x[:, 0],
                                   atol=1e-5, rtol=1e-5)


def test_spot_graph_union_types_and_self_loops() -> None:
    grid = np.array([[0, 1, 1, 2], [1, 0, 2, 1]])  # 0->1, 1->0, 1->2, 2->1
    knn = np.array([[0, 3, 2, 2], [1, 0, 2, 0]])  # 0->1 (also grid), 3->0, 2->2 (self), 2->0
    src, tgt, et = spot_graph(4, grid, knn)
    edges = {(s, t): e for s, t, e in zip(src.tolist(), tgt.tolist(), et.tolist())}
    assert edges[(0, 1)] == EDGE_BOTH and edges[(1, 0)] == EDGE_GRID
    assert edges[(3, 0)] == EDGE_KNN and edges[(2, 0)] == EDGE_KNN
    assert all(edges[(i, i)] == EDGE_SELF for i in range(4))
    assert len(edges) == len(src) == 6 + 4
    src, tgt, et = spot_graph(3, None, None)
    assert src.tolist() == [0, 1, 2] and set(et.tolist()) == {EDGE_SELF}
    with pytest.raises(ValueError):
        spot_graph(2, np.array([[0], [5]]), None)


# ----------------------------------------------------------------------------------------------
# Method-level tests
# ----------------------------------------------------------------------------------------------


def test_check_method_conformance() -> None:
    check_method(AlignST)


def _fit(cfg, prob, gene_text=None, seed=0, ctx_kw=None):
    train, val, test, unseen, val_genes = split(prob)
    ctx = FitContext(seed=seed, gene_text=gene_text or build_gene_text(prob["descriptions"]),
                     val_genes=val_genes, **(ctx_kw or {}))
    method = AlignST(cfg)
    method.fit(train, val, ctx)
    return method, test, unseen


def test_fit_predict_with_nuclei_graph_and_token_states_is_deterministic() -> None:
    prob = rich_problem(0)
    text = token_gene_text(prob["descriptions"])
    logged, progress = [], []

    def prog(desc, total):
        progress.append((desc, total))
        return lambda n=1: None

    cfg = _cfg(max_epochs=3)
    m1, test, unseen = _fit(cfg, prob, text, ctx_kw={
        "log_metric": lambda k, v, s: logged.append((k, s)), "progress": prog})
    assert m1._token_mode == "states"
    assert m1.model.nuclei is not None and len(m1.model.graph) == 2
    p1 = m1.predict(test, unseen)
    assert p1.shape == (test.n_spots, len(unseen)) and np.isfinite(p1).all()
    assert {k for k, _ in logged} == {"train_loss", "val_pcc"}
    assert [s for k, s in logged if k == "val_pcc"] == [0, 1, 2]
    assert progress == [("alignst epochs", 3)]
    m2, _, _ = _fit(cfg, prob, text)
    np.testing.assert_allclose(m2.predict(test, unseen), p1, atol=1e-6)
    m3, _, _ = _fit(cfg, prob, text, seed=1)
    assert not np.allclose(m3.predict(test, unseen), p1, atol=1e-4)


def test_recomputing_the_spot_encoder_changes_no_value() -> None:
    """Activation checkpointing of the nuclei stage and graph layers (every slide here:
    ``checkpoint_min_spots=1``) gives bitwise the same training as keeping activations,
    dropout included; the default leaves small slides alone."""
    from stbench.methods.alignst import model as model_module

    prob = rich_problem(0)
    text = token_gene_text(prob["descriptions"])
    calls = []
    real = model_module._recomputed

    def counting(module, *args):
        calls.append(type(module).__name__)
        return real(module, *args)

    model_module._recomputed = counting
    try:
        kept, test, unseen = _fit(_cfg(max_epochs=2, dropout=0.2, checkpoint_min_spots=0), prob, text)
        assert calls == []
        recomputed, _, _ = _fit(_cfg(max_epochs=2, dropout=0.2, checkpoint_min_spots=1), prob,
                                  text)
        assert {"NucleiFusion", "GraphAttentionLayer"} <= set(calls)
        n_calls = len(calls)
        assert AlignST.Config().checkpoint_min_spots > max(v.n_spots for v in prob["slides"])
        _fit(_cfg(max_epochs=2), prob, text)
        assert len(calls) == n_calls  # default: these slides are below the threshold
    finally:
        model_module._recomputed = real
    assert kept.config.dropout > 0
    for a, b in zip(kept.model.state_dict().values(), recomputed.model.state_dict().values()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(kept.predict(test, unseen), recomputed.predict(test, unseen))


class _Poisoned(SlideView):
    """A SlideView whose expression raises when read."""

    @property
    def expression(self):  # type: ignore[override]
        raise AssertionError("predict read expression")

    @expression.setter
    def expression(self, value) -> None:
        pass


def test_predict_never_reads_expression() -> None:
    prob = rich_problem(1)
    method, test, unseen = _fit(_cfg(), prob)
    v = test.slides[0]
    poisoned = _Poisoned(v.name, v.patient, v.features, v.spatial, v.grid, None,
                         v.microns_per_pixel)
    pred = method.predict(Bundle([poisoned], []), unseen)
    np.testing.assert_allclose(pred, method.predict(test, unseen), atol=1e-6)
    dup = method.predict(test, [unseen[0], unseen[0]])
    np.testing.assert_array_equal(dup[:, 0], dup[:, 1])
    assert method.predict(test, []).shape == (test.n_spots, 0)


@pytest.mark.parametrize("switch", [
    {"nuclei": False}, {"graph": False}, {"prompt_rounds": 0}, {"gene_interaction": False},
    {"lambda_align": 0.0}, {"lambda_pcc": 0.0}, {"similarity_bias": False},
    {"test_context": "seen+unseen"}, {"test_context": "unseen"}, {"threads": 1},
])
def test_ablation_switches_run(switch) -> None:
    prob = rich_problem(2, n_spots=24, n_genes=16)
    threads = torch.get_num_threads()
    method, test, unseen = _fit(_cfg(**switch), prob)
    pred = method.predict(test, unseen)
    assert torch.get_num_threads() == threads
    assert pred.shape == (test.n_spots, len(unseen)) and np.isfinite(pred).all()
    model = method.model
    if switch.get("nuclei") is False:
        assert model.nuclei is None
    if switch.get("graph") is False:
        assert len(model.graph) == 0
    if switch.get("prompt_rounds") == 0:
        assert len(model.rounds) == 0 and model.visual_prompts is None
    if switch.get("gene_interaction") is False:
        assert model.interaction is None


def test_gene_independence_without_set_stages() -> None:
    """With the set-level stages off, a gene's prediction does not depend on its batch."""
    prob = rich_problem(3, n_spots=24, n_genes=16)
    method, test, unseen = _fit(_cfg(gene_interaction=False, prompt_rounds=0), prob)
    full = method.predict(test, unseen)
    alone = method.predict(test, unseen[1:2])
    np.testing.assert_allclose(alone[:, 0], full[:, 1], atol=1e-5)


def test_seen_plus_unseen_context_uses_training_genes() -> None:
    prob = tiny_problem(4, n_spots=24, n_genes=16)
    method, test, unseen = _fit(_cfg(test_context="seen+unseen"), prob)
    assert method._context(unseen)[: len(unseen)] == unseen
    assert set(method._context(unseen)) == set(unseen) | set(method._train_genes)


def test_graceful_without_nuclei_graph_and_without_val() -> None:
    prob = tiny_problem(5, n_spots=24, n_genes=16)  # image features only
    train, _, test, unseen, _ = split(prob)
    method = AlignST(_cfg(max_epochs=3))
    method.fit(train, None, FitContext(seed=0, gene_text=build_gene_text(prob["descriptions"])))
    assert method.model.nuclei is None and len(method.model.graph) == 0
    assert method._token_mode == "pooled"
    assert len(method.history) == 3 and "val_pcc" not in method.history[-1]
    # trained with nuclei + graph, predicted on a slide without them: warns, still works
    rich = rich_problem(5, n_spots=24, n_genes=16)
    m2, test2, _ = _fit(_cfg(), rich)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = m2.predict(test, unseen)
    text = " ".join(str(w.message) for w in caught)
    assert "no nuclei features" in text and "no graph edges" in text
    assert np.isfinite(pred).all()


def test_bad_config_raises() -> None:
    prob = tiny_problem(6, n_spots=16, n_genes=8)
    with pytest.raises(ValueError, match="test_context"):
        _fit(_cfg(test_context="all"), prob)
    with pytest.raises(ValueError, match="divisible"):
        _fit(_cfg(dim=30, heads=4), prob)


def test_explain_writes_pngs(tmp_path) -> None:
    prob = rich_problem(7, n_spots=24, n_genes=16)
    method, test, unseen = _fit(_cfg(), prob)
    thumb = np.full((400, 900, 3), 200, np.uint8)
    paths = method.explain(test, unseen[0], tmp_path, context=unseen, thumbnails=thumb,
                           thumbnail_scale=0.5)
    assert [p.name for p in paths] == [f"{unseen[0]}_expression.png", f"{unseen[0]}_attention.png"]
    for p in paths:
        assert p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"
    # measured maps where the bundle carries the gene
    train, val, *_ = split(prob)
    paths = method.explain(val, val.genes[0], tmp_path / "val")
    assert all(p.exists() for p in paths)


def test_learns_unseen_genes_on_tiny_problem() -> None:
    """Zero-shot on the tiny problem: clearly above a constant and near the bilinear baseline."""
    from stbench.methods.bilinear import Bilinear

    prob = tiny_problem(0)
    train, val, test, unseen, val_genes = split(prob)
    gene_text = build_gene_text(prob["descriptions"])
    y = prob["slides"][-1].expression[:, [prob["genes"].index(g) for g in unseen]]
    method = AlignST()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="alignst")
        method.fit(train, val, FitContext(seed=0, gene_text=gene_text, val_genes=val_genes))
    ours = pcc(y, method.predict(test, unseen)).mean()
    base = Bilinear()
    base.fit(train, val, FitContext(seed=0, gene_text=gene_text, val_genes=val_genes))
    theirs = pcc(y, base.predict(test, unseen)).mean()
    assert ours > 0.6, ours
    assert ours > theirs - 0.15, (ours, theirs)


def test_shared_chunk_steps_is_one_step_per_chunk() -> None:
    """Default: one step per (slide, chunk); ``shared_chunk_steps``: one per chunk, all slides."""
    prob = rich_problem(0)
    per_slide, _, _ = _fit(_cfg(max_epochs=1, min_epochs=0, genes_per_step=4), prob)
    shared, test, unseen = _fit(_cfg(max_epochs=1, min_epochs=0, genes_per_step=4,
                                     shared_chunk_steps=True), prob)
    train = split(prob)[0]
    chunks = -(-len(train.genes) // 4)
    assert per_slide._steps_per_epoch == chunks * len(train.slides)
    assert shared._steps_per_epoch == chunks
    assert np.isfinite(shared.predict(test, unseen)).all()


def test_max_steps_caps_the_epochs_and_the_schedule() -> None:
    """The step budget bounds the epochs (ceil(max_steps / steps per epoch)); 0 = no budget."""
    from stbench.methods._training import epoch_budget

    assert epoch_budget(60, 144, 24) == 6 and epoch_budget(60, 144, 4) == 36
    assert epoch_budget(60, 145, 24) == 7 and epoch_budget(5, 144, 4) == 5
    assert epoch_budget(60, 0, 24) == 60 and epoch_budget(60, 1, 24) == 1
    prob = rich_problem(0)
    capped, _, _ = _fit(_cfg(max_epochs=50, min_epochs=50, genes_per_step=4, max_steps=10), prob)
    steps = capped._steps_per_epoch
    assert len(capped.history) == -(-10 // steps) < 50
    free, _, _ = _fit(_cfg(max_epochs=3, min_epochs=3, genes_per_step=4, max_steps=0), prob)
    assert len(free.history) == 3
