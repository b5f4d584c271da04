"""The neural network of ALIGN-ST (plain PyTorch ``nn.Module``s, no graph library).

Shapes (one slide at a time): ``n`` spots, ``M`` nucleus slots per spot, ``F`` nucleus
features, ``E`` directed edges, ``G`` genes, ``T`` description tokens per gene, ``d`` the model
width, ``H`` attention heads.

Data flow of :class:`AlignSTModel` (each stage documented on its class):

1. :class:`SpotImageEncoder`   image embedding (n, d_img) -> h (n, d)
2. :class:`NucleiFusion`       h + nuclei tokens (n, M, F) -> h (n, d)       [``nuclei``]
3. :class:`GraphAttentionLayer` x L over grid + kNN edges + self loops       [``graph``]
4. :class:`GeneEncoder`        description tokens (G, T, d_text) + text prompts -> e (G, d)
5. :class:`PromptRound` x R    iterative vision-language prompt learning     [``prompt_rounds``]
6. :class:`GeneInteraction`    self-attention across the set of genes        [``gene_interaction``]
7. head                        y[s, g] = <z_s, w_g> / sqrt(d) + b(w_g)

Every attention is computed by :func:`masked_attention`, which gives exact zeros to masked
keys and returns zeros (never NaN) for a query whose keys are all masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from stbench.methods._torch_utils import pearson_per_column

# Edge types of the spot graph (one embedding each).
EDGE_SELF, EDGE_GRID, EDGE_KNN, EDGE_BOTH = 0, 1, 2, 3
N_EDGE_TYPES = 4


# ----------------------------------------------------------------------------------------------
# Attention primitives
# ----------------------------------------------------------------------------------------------


def masked_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None,
                     bias: Tensor | None = None, dropout: float = 0.0,
                     training: bool = False) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention with a key mask that is safe for all-masked rows.

    Args:
        q: (..., H, Nq, dh) queries.
        k, v: (..., H, Nk, dh) keys and values.
        key_mask: (..., Nk) bool, True = a real key. A query whose keys are all masked gets
            all-zero weights and a zero output.
        bias: Additive score bias broadcastable to (..., H, Nq, Nk).
        dropout: Dropout on the attention weights (training only).

    Returns:
        ``(out (..., H, Nq, dh), weights (..., H, Nq, Nk))``; weights of masked keys are 0.
    """
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    if key_mask is None:
        weights = scores.softmax(-1)
    else:
        keep = key_mask[..., None, None, :]
        any_key = key_mask.any(-1)[..., None, None, None]
        scores = scores.masked_fill(~keep, float("-inf"))
        scores = torch.where(any_key, scores, torch.zeros_like(scores))
        weights = scores.softmax(-1) * keep
    out = F.dropout(weights, dropout, training) @ v
    return out, weights


class MultiHeadAttention(nn.Module):
    """Multi-head attention of ``xq`` (..., Nq, d) over ``xkv`` (..., Nk, d)."""

    def __init__(self, d: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"dim {d} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q, self.kv, self.o = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)

    def _split(self, x: Tensor) -> Tensor:
        *lead, n, d = x.shape
        return x.reshape(*lead, n, self.heads, d // self.heads).transpose(-2, -3)

    def forward(self, xq: Tensor, xkv: Tensor, key_mask: Tensor | None = None,
                bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        k, v = self.kv(xkv).chunk(2, -1)
        return self.attend(self.q(xq), k, v, key_mask, bias)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None,
               bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Attention from already projected ``q`` (..., Nq, d), ``k``, ``v`` (..., Nk, d)."""
        out, w = masked_attention(self._split(q), self._split(k), self._split(v),
                                  key_mask, bias, self.dropout, self.training)
        out = out.transpose(-2, -3).reshape(*q.shape)
        return self.o(out), w


def _ffn(d: int, dropout: float, mult: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, mult * d), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(mult * d, d))


class AttentionBlock(nn.Module):
    """Post-norm transformer block: ``x = LN(x + attn(x, kv)); x = LN(x + FFN(x))``.

    Self-attention when ``kv`` is None; cross-attention otherwise.
    """

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d, heads, dropout)
        self.ffn = _ffn(d, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, kv: Tensor | None = None, key_mask: Tensor | None = None,
                bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a, w = self.attn(x, x if kv is None else kv, key_mask, bias)
        return self._finish(x, a), w

    def forward_projected(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor,
                          key_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The block with its attention's projections given: ``q = attn.q(x)``, ``k`` /
        ``v`` the halves of ``attn.kv(kv)`` (lets a caller reuse projections of fixed keys)."""
        a, w = self.attn.attend(q, k, v, key_mask)
        return self._finish(x, a), w

    def _finish(self, x: Tensor, a: Tensor) -> Tensor:
        x = self.norm1(x + self.drop(a))
        return self.norm2(x + self.drop(self.ffn(x)))


# ----------------------------------------------------------------------------------------------
# Spot side
# ----------------------------------------------------------------------------------------------


class SpotImageEncoder(nn.Module):
    """Standardised image embedding (n, d_img) -> (n, d): MLP + LayerNorm."""

    def __init__(self, d_img: int, d: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_img, d), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(d, d), nn.LayerNorm(d))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class NucleiFusion(nn.Module):
    """Nuclei-aware spot encoding (stage 1).

    Each nucleus (F standardised features) becomes a token through an MLP. A spot query,
    projected from the spot's image embedding ``h``, attends over its own nuclei tokens
    (padding slots masked). The attended summary plus an embedding of ``log1p(#nuclei)`` is
    fused into ``h`` by a gated residual::

        g = sigmoid(W_g [h, a]);   h' = LN(h + 1[#nuclei > 0] * g * a)

    so a spot with no nucleus keeps ``LN(h)`` exactly (no NaN).
    """

    def __init__(self, n_features: int, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.token = nn.Sequential(nn.Linear(n_features, d), nn.GELU(), nn.Dropout(dropout),
                                   nn.Linear(d, d), nn.LayerNorm(d))
        self.query = nn.Linear(d, d)
        self.attn = MultiHeadAttention(d, heads, dropout)
        self.count = nn.Linear(1, d)
        self.gate = nn.Linear(2 * d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, h: Tensor, nuclei: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns ``(h' (n, d), attention (n, H, M), gate (n, d))``.

        Only REAL nuclei are embedded: the token MLP and the key/value projection run on the
        ``mask``-selected rows, which are then placed in a (n, M', 2d) layout of the first
        ``M' = max #nuclei`` slots (padding slots zero and masked). Masked keys get exactly
        zero weight, so this equals embedding every slot (tested); the attention map is
        returned in the input's slot order (n, H, M).
        """
        packed, pmask, slot = _pack_slots(mask)
        kv = self.attn.kv(self.token(nuclei[mask]))  # (n_real, 2d)
        kv = kv.new_zeros(*pmask.shape, kv.shape[-1]).index_put((pmask,), kv)
        k, v = kv.chunk(2, -1)
        q = self.attn.q(self.query(h)[:, None, :])
        a, wp = self.attn.attend(q, k, v, pmask)  # (n, 1, d), (n, H, 1, M')
        w = wp[:, :, 0]
        if packed:  # back to the input's slot order
            real = w.transpose(1, 2)[pmask]  # (n_real, H)
            w = real.new_zeros(mask.shape[0], mask.shape[1], real.shape[1])
            w = w.index_put(slot, real).transpose(1, 2)
        count = mask.sum(-1, keepdim=True).to(h.dtype)
        a = a[:, 0] + self.count(torch.log1p(count))
        has = (count > 0).to(h.dtype)
        gate = torch.sigmoid(self.gate(torch.cat([h, a], -1)))
        return self.norm(h + has * gate * a), w, gate * has


def _pack_slots(mask: Tensor) -> tuple[bool, Tensor, Tensor | None]:
    """Real slots of ``mask`` (n, M) moved to the front: ``(moved, packed mask (n, M'),
    (spot, slot) indices of the real slots in the input order or None)``.

    ``M'`` is the largest count of real slots; when the mask is already a prefix of
    length ``M`` in every row (nothing to move, nothing to trim) the mask is returned as is.
    """
    count = mask.sum(-1)
    m_max = max(int(count.max()) if count.numel() else 0, 1)
    pmask = torch.arange(m_max, device=mask.device)[None, :] < count[:, None]
    if m_max == mask.shape[1] and bool((pmask == mask).all()):
        return False, mask, None
    return True, pmask, mask.nonzero(as_tuple=True)


class GraphAttentionLayer(nn.Module):
    """Attention message passing over the spot graph (stage 2).

    For an edge ``j -> i`` of type ``t`` (self / grid / kNN / both) and head ``h``::

        s_ij = <q_i, k_j + Ek_t> / sqrt(dh) + b_t,h
        a_ij = softmax over the incoming edges of i (scatter softmax, index_add_)
        m_i  = sum_j a_ij (v_j + Ev_t)
        h_i' = LN(h_i + W_o m_i);   h_i'' = LN(h_i' + FFN(h_i'))

    Every node must have a self loop (the caller adds them), so no softmax is empty.
    """

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q, self.kv, self.o = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.type_k = nn.Embedding(N_EDGE_TYPES, d)
        self.type_v = nn.Embedding(N_EDGE_TYPES, d)
        self.type_bias = nn.Embedding(N_EDGE_TYPES, heads)
        nn.init.normal_(self.type_k.weight, std=0.02)
        nn.init.normal_(self.type_v.weight, std=0.02)
        nn.init.zeros_(self.type_bias.weight)
        self.ffn = _ffn(d, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, src: Tensor, tgt: Tensor, etype: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(h (n, d), edge attention (E, H))``."""
        n, d = h.shape
        heads, dh = self.heads, d // self.heads
        q = self.q(h).view(n, heads, dh)[tgt]
        k, v = self.kv(h)[src].chunk(2, -1)
        k = (k + self.type_k(etype)).view(-1, heads, dh)
        v = (v + self.type_v(etype)).view(-1, heads, dh)
        s = (q * k).sum(-1) / math.sqrt(dh) + self.type_bias(etype)  # (E, H)
        top = torch.full((n, heads), float("-inf"), dtype=s.dtype, device=s.device)
        top = top.scatter_reduce(0, tgt[:, None].expand(-1, heads), s.detach(), "amax")
        e = torch.exp(s - top[tgt])
        den = torch.zeros((n, heads), dtype=s.dtype, device=s.device).index_add(0, tgt, e)
        att = e / den[tgt]
        msg = F.dropout(att, self.dropout, self.training)[..., None] * v
        out = torch.zeros((n, heads, dh), dtype=h.dtype, device=h.device).index_add(0, tgt, msg)
        h = self.norm1(h + self.drop(self.o(out.reshape(n, d))))
        h = self.norm2(h + self.drop(self.ffn(h)))
        return h, att


# ----------------------------------------------------------------------------------------------
# Gene side
# ----------------------------------------------------------------------------------------------


@dataclass
class GeneTokens:
    """A gene set's description tokens, projected once and shared by slides and rounds.

    ``k`` / ``v`` (and ``q`` when the encoder has more than one block) are the first block's
    projections of the token positions: they do not depend on the prompts, so every prompt
    round and every slide of a step reuses them. Padding positions hold zeros (masked).
    """

    tok: Tensor  # (G, T, d) projected tokens
    mask: Tensor  # (G, T) bool, True = real token
    k: Tensor  # (G, T, d)
    v: Tensor  # (G, T, d)
    q: Tensor | None = None  # (G, T, d), only with more than one block


def _scatter_rows(values: Tensor, mask: Tensor) -> Tensor:
    """Rows of ``values`` (n_real, c) placed at the True positions of ``mask`` (G, T), zeros
    elsewhere: (G, T, c)."""
    out = values.new_zeros(*mask.shape, values.shape[-1])
    return out.index_put((mask,), values)


class GeneEncoder(nn.Module):
    """Gene semantics (stage 3): frozen description tokens + learnable text prompts.

    Token states (G, T, d_text) of the frozen text encoder are projected to ``d``; ``P``
    prompt tokens are prepended to every gene's sequence; a small transformer (``layers``
    self-attention blocks, padding tokens masked) runs over ``[prompts, tokens]``; the gene
    embedding is the output at the first prompt position (the last block therefore computes
    that position only: the same result at a fraction of the cost). The prompts are either the
    module's own learnable ``prompts`` or refined ones handed in by :class:`PromptRound`.

    Cost: :meth:`prepare` projects the REAL tokens only (padding skipped) and computes the
    first block's token keys/values once; :meth:`forward` then only adds the prompts, so a
    step's prompt rounds and slides share the token work (same values as projecting per call).
    """

    def __init__(self, d_text: int, d: int, heads: int, layers: int, n_prompts: int,
                 dropout: float) -> None:
        super().__init__()
        if n_prompts < 1:
            raise ValueError("n_text_prompts must be >= 1 (the gene embedding is read there)")
        if layers < 1:
            raise ValueError("text_layers must be >= 1")
        self.project = nn.Sequential(nn.Linear(d_text, d), nn.LayerNorm(d))
        self.prompts = nn.Parameter(torch.randn(n_prompts, d) * 0.02)
        self.blocks = nn.ModuleList(AttentionBlock(d, heads, dropout) for _ in range(layers))

    def prepare(self, tokens: Tensor, token_mask: Tensor) -> GeneTokens:
        """Raw token states (G, T, d_text) + mask (G, T) -> :class:`GeneTokens`."""
        flat = self.project(tokens[token_mask])  # (n_real, d)
        attn = self.blocks[0].attn
        k, v = attn.kv(flat).chunk(2, -1)
        q = _scatter_rows(attn.q(flat), token_mask) if len(self.blocks) > 1 else None
        return GeneTokens(_scatter_rows(flat, token_mask), token_mask,
                          _scatter_rows(k, token_mask), _scatter_rows(v, token_mask), q)

    def forward(self, genes: GeneTokens, prompts: Tensor | None = None) -> Tensor:
        """Gene embeddings (G, d) from prepared tokens and the (P, d) text prompts."""
        prompts = self.prompts if prompts is None else prompts
        g, n_p = genes.tok.shape[0], prompts.shape[0]
        first = self.blocks[0]
        kp, vp = first.attn.kv(prompts).chunk(2, -1)
        k = torch.cat([kp.expand(g, -1, -1), genes.k], 1)
        v = torch.cat([vp.expand(g, -1, -1), genes.v], 1)
        mask = torch.cat([torch.ones(g, n_p, dtype=torch.bool, device=genes.mask.device),
                          genes.mask], 1)
        if len(self.blocks) == 1:  # only position 0 is read: query it alone
            q0 = first.attn.q(prompts[:1]).expand(g, 1, -1)
            x, _ = first.forward_projected(prompts[:1].expand(g, 1, -1), q0, k, v, mask)
            return x[:, 0]
        x = torch.cat([prompts.expand(g, -1, -1), genes.tok], 1)
        q = torch.cat([first.attn.q(prompts).expand(g, -1, -1), genes.q], 1)
        x, _ = first.forward_projected(x, q, k, v, mask)
        for i, block in enumerate(self.blocks[1:], start=2):
            if i == len(self.blocks):
                x, _ = block(x[:, :1], kv=x, key_mask=mask)
            else:
                x, _ = block(x, key_mask=mask)
        return x[:, 0]


class AttentionPool(nn.Module):
    """``k`` learnable queries attend over a set (n, d) -> (k, d) summary tokens."""

    def __init__(self, d: int, heads: int, k: int, dropout: float) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(k, d) * 0.02)
        self.attn = MultiHeadAttention(d, heads, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        a, _ = self.attn(self.queries, x, mask)
        return self.norm(self.queries + a)


class PromptRound(nn.Module):
    """One round of iterative vision-language prompt learning (stage 4).

    Given the current spot embeddings ``z`` (n, d), text prompts ``P_t`` (Pt, d) and visual
    prompts ``P_v`` (Pv, d):

    1. visual context ``C = AttentionPool(z)`` (K, d) summarises the slide;
    2. text prompts read the image: ``P_t <- Block(P_t, C)`` (cross-attention);
    3. genes are re-encoded with the new text prompts: ``e = GeneEncoder(tokens, P_t)``;
    4. visual prompts read the genes: ``P_v <- Block(P_v, e)`` (padding genes masked);
    5. spots read the visual prompts: ``z <- Block(z, P_v)``.
    """

    def __init__(self, d: int, heads: int, n_context: int, dropout: float) -> None:
        super().__init__()
        self.pool = AttentionPool(d, heads, n_context, dropout)
        self.text_from_vision = AttentionBlock(d, heads, dropout)
        self.vision_from_text = AttentionBlock(d, heads, dropout)
        self.spots_from_prompts = AttentionBlock(d, heads, dropout)

    def forward(self, z: Tensor, text_prompts: Tensor, visual_prompts: Tensor,
                tokens: GeneTokens, gene_mask: Tensor, gene_encoder: GeneEncoder
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        context = self.pool(z)
        text_prompts, _ = self.text_from_vision(text_prompts, context)
        e = gene_encoder(tokens, text_prompts)
        visual_prompts, _ = self.vision_from_text(visual_prompts, e, gene_mask)
        z, _ = self.spots_from_prompts(z, visual_prompts)
        return z, text_prompts, visual_prompts, e


class GeneInteraction(nn.Module):
    """Gene interaction (stage 5): self-attention across the SET of gene embeddings.

    Optionally biased by the cosine similarity ``S`` of the genes' pooled description
    embeddings: score_h(i, j) += beta_{layer,h} * S_ij (beta learnable, initialised to 1).
    Padding genes are masked as keys, so they never change a real gene's output.
    """

    def __init__(self, d: int, heads: int, layers: int, dropout: float,
                 similarity_bias: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(AttentionBlock(d, heads, dropout) for _ in range(layers))
        self.beta = nn.Parameter(torch.ones(layers, heads)) if similarity_bias else None

    def forward(self, e: Tensor, similarity: Tensor | None, gene_mask: Tensor
                ) -> tuple[Tensor, Tensor | None]:
        """Returns ``(w (G, d), last layer's attention (H, G, G) or None)``."""
        w = None
        for i, block in enumerate(self.blocks):
            bias = None
            if self.beta is not None and similarity is not None:
                bias = self.beta[i][:, None, None] * similarity[None]
            e, w = block(e, key_mask=gene_mask, bias=bias)
        return e, w


# ----------------------------------------------------------------------------------------------
# The whole model
# ----------------------------------------------------------------------------------------------


@dataclass
class SpotBatch:
    """One slide's inputs. ``nuclei``/``edges`` are None when absent or switched off."""

    x: Tensor  # (n, d_img) standardised image features
    nuclei: Tensor | None = None  # (n, M, F) standardised
    nuclei_mask: Tensor | None = None  # (n, M) bool
    src: Tensor | None = None  # (E,) int64, self loops included
    tgt: Tensor | None = None
    etype: Tensor | None = None
    y: Tensor | None = None  # (n, G_train) expression (training / validation only)


@dataclass
class GeneBatch:
    """A set of genes: frozen description tokens, their mask, pooled embeddings, gene mask."""

    tokens: Tensor  # (G, T, d_text)
    token_mask: Tensor  # (G, T) bool
    pooled: Tensor  # (G, d_text) for the similarity bias
    gene_mask: Tensor  # (G,) bool, False = padding gene


@dataclass
class ModelConfig:
    """Architecture switches and sizes (a subset of ``AlignST.Config``)."""

    d_img: int
    d_text: int
    n_nuclei_features: int = 0  # 0 = no nuclei module
    dim: int = 128
    heads: int = 4
    graph_layers: int = 2  # 0 = no graph module
    prompt_rounds: int = 2
    n_text_prompts: int = 4
    n_visual_prompts: int = 4
    n_visual_context: int = 4
    text_layers: int = 1
    interaction_layers: int = 1  # 0 = no gene interaction
    similarity_bias: bool = True
    dropout: float = 0.1
    checkpoint_min_spots: int = 0  # 0 = never recompute the spot encoder in backward


def _direct(module: nn.Module, *args: Tensor) -> tuple[Tensor, ...]:
    return module(*args)


def _recomputed(module: nn.Module, *args: Tensor) -> tuple[Tensor, ...]:
    return checkpoint(module, *args, use_reentrant=False, preserve_rng_state=True)


class AlignSTModel(nn.Module):
    """ALIGN-ST: spots and genes mapped into one space; ``y = <z_s, w_g>/sqrt(d) + b(w_g)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, heads, p = cfg.dim, cfg.heads, cfg.dropout
        self.image = SpotImageEncoder(cfg.d_img, d, p)
        self.nuclei = (NucleiFusion(cfg.n_nuclei_features, d, heads, p)
                       if cfg.n_nuclei_features > 0 else None)
        self.graph = nn.ModuleList(GraphAttentionLayer(d, heads, p)
                                   for _ in range(cfg.graph_layers))
        self.genes = GeneEncoder(cfg.d_text, d, heads, cfg.text_layers, cfg.n_text_prompts, p)
        self.rounds = nn.ModuleList(PromptRound(d, heads, cfg.n_visual_context, p)
                                    for _ in range(cfg.prompt_rounds))
        self.visual_prompts = (nn.Parameter(torch.randn(cfg.n_visual_prompts, d) * 0.02)
                               if cfg.prompt_rounds > 0 else None)
        self.interaction = (
            GeneInteraction(d, heads, cfg.interaction_layers, p, cfg.similarity_bias)
            if cfg.interaction_layers > 0 else None)
        self.spot_out = nn.Linear(d, d)
        self.gene_out = nn.Linear(d, d)
        self.gene_bias = nn.Linear(d, 1)

    def encode_spots(self, s: SpotBatch) -> tuple[Tensor, dict]:
        """Stages 1-2: (n, d) spot embeddings before prompt learning.

        When gradients are taken on a slide of more than ``cfg.checkpoint_min_spots`` spots,
        the nuclei stage and each graph layer keep only their inputs and are recomputed in
        the backward pass (activation checkpointing, random state replayed: the same values
        and gradients), so the memory of a step stops growing with those stages' activations.
        """
        aux: dict = {}
        h = self.image(s.x)
        limit = self.cfg.checkpoint_min_spots
        stage = (_recomputed if limit > 0 and h.shape[0] > limit and torch.is_grad_enabled()
                 else _direct)
        if self.nuclei is not None and s.nuclei is not None and s.nuclei_mask is not None:
            h, aux["nuclei_attn"], aux["nuclei_gate"] = stage(self.nuclei, h, s.nuclei,
                                                              s.nuclei_mask)
        if len(self.graph) and s.src is not None:
            for layer in self.graph:
                h, aux["graph_attn"] = stage(layer, h, s.src, s.tgt, s.etype)
        return h, aux

    def prepare_genes(self, g: GeneBatch) -> GeneTokens:
        """The gene set's token work, shared by every slide of a step (see :class:`GeneTokens`)."""
        return self.genes.prepare(g.tokens, g.token_mask)

    def forward(self, s: SpotBatch, g: GeneBatch, tokens: GeneTokens | None = None
                ) -> tuple[Tensor, dict]:
        """Returns ``(predictions (n, G), aux)``; aux holds ``z`` (n, d), ``w`` (G, d) in the
        aligned space and attention maps (``nuclei_attn`` (n, H, M), ``nuclei_gate`` (n, d),
        ``graph_attn`` (E, H), ``interaction_attn`` (H, G, G)) where the stage ran.
        ``tokens``: :meth:`prepare_genes` of ``g`` when the caller shares it across slides."""
        z, aux = self.encode_spots(s)
        tokens = self.prepare_genes(g) if tokens is None else tokens
        if self.visual_prompts is None:
            e = self.genes(tokens)
        else:
            text_p, vis_p = self.genes.prompts, self.visual_prompts
            for rnd in self.rounds:
                z, text_p, vis_p, e = rnd(z, text_p, vis_p, tokens, g.gene_mask, self.genes)
        if self.interaction is not None:
            pooled = F.normalize(g.pooled, dim=-1)
            e, aux["interaction_attn"] = self.interaction(e, pooled @ pooled.T, g.gene_mask)
        zs, wg = self.spot_out(z), self.gene_out(e)
        pred = zs @ wg.T / math.sqrt(zs.shape[-1]) + self.gene_bias(e).T
        aux["z"], aux["w"] = zs, wg
        return pred, aux


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


#: Pearson r per column over rows (spots); a constant column gives 0, never NaN (the one
#: torch PCC of the methods, :func:`stbench.methods._torch_utils.pearson_per_column`).
pcc_per_gene = pearson_per_column


def alignment_loss(z: Tensor, w: Tensor, y: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE between spots and their expression-weighted gene embeddings.

    For spot ``s``, ``u_s = sum_g softmax_g(ytilde_s) w_g`` with ``ytilde`` the expression
    standardised per gene over the given spots; spot ``s``'s ``z_s`` must be closer (cosine /
    ``temperature``) to its own ``u_s`` than to other spots' ``u``, and vice versa.
    """
    if z.shape[0] < 2:
        return z.sum() * 0.0
    yt = (y - y.mean(0)) / (y.std(0, unbiased=False) + 1e-6)
    u = yt.softmax(-1) @ w
    logits = F.normalize(z, dim=-1) @ F.normalize(u, dim=-1).T / temperature
    target = torch.arange(z.shape[0], device=z.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
