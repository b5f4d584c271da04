"""``histogene``: HisToGene (Pang, Su, Li, bioRxiv 2021), a supervised reference.

HisToGene treats the spots of ONE slide as the tokens of a Vision Transformer: each spot's
112 px patch is flattened (3 x 112 x 112 values) and projected linearly to ``dim``, learned
x / y position embeddings (``nn.Embedding(n_pos, dim)`` tables indexed by the spot's array
column / row) are added, a pre-LN transformer (``depth`` 4, 16 heads of 64, MLP ``2 * dim``,
GELU, dropout 0.1) runs over all spots of the slide, and a head ``LayerNorm -> Linear`` gives
every gene. Loss MSE, Adam, one slide per step.

Here (CPU, frozen features): the token input is the spot's frozen image feature (the harness's
``image`` feature, centred and scaled with the training spots' statistics) projected
linearly, instead of the flattened raw pixels; the default widths are smaller (``dim`` 128,
16 heads of 8) and the learning rate larger than the published ones so that a her2st fold
trains in about a minute on one CPU thread. Early stopping on the validation slides' mean per-gene PCC (best
state restored). ``methods/README.md`` lists what differs.

The transformer pieces (:class:`TransformerBlock`, :func:`grid_positions`) are shared with
``hist2st``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stbench.method import Bundle, FitContext, Method, MethodConfig, MethodMeta
from stbench.methods._torch_utils import (FeatureScaler, fit_with_early_stopping, gene_columns,
                                         resolve_device, seed_all, validation_target)
from stbench.ranges import bounded

# ---------------------------------------------------------------------------------------------
# Building blocks (vit-pytorch's pre-LN transformer, as vendored by HisToGene and Hist2ST)
# ---------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention over the spots: ``heads`` heads of ``dim_head``, no qkv bias,
    output projection + dropout (skipped when ``heads == 1`` and ``dim_head == dim``)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        project_out = not (heads == 1 and dim_head == dim)
        self.to_out = (nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project_out
                       else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (n_spots, dim) -> (n_spots, dim)."""
        n = x.shape[0]
        q, k, v = (t.reshape(n, self.heads, -1).transpose(0, 1) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_head)) v
        return self.to_out(out.transpose(0, 1).reshape(n, -1))


class TransformerBlock(nn.Module):
    """``x += Attn(LN(x))``; ``x += FF(LN(x))`` with ``FF = Linear, GELU, Dropout, Linear, Dropout``."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


def grid_positions(grid: np.ndarray, n_pos: int) -> np.ndarray:
    """Array (col, row) coordinates as embedding indices: rounded, clipped to ``[0, n_pos)``."""
    pos = np.rint(np.asarray(grid, dtype=np.float64)).astype(np.int64).reshape(-1, 2)
    return np.clip(pos, 0, int(n_pos) - 1)


class HisToGeneNet(nn.Module):
    """Linear token embedding + x/y embeddings -> transformer over a slide -> gene head."""

    def __init__(self, d_in: int, n_genes: int, dim: int, depth: int, heads: int, dim_head: int,
                 mlp_dim: int, dropout: float, n_pos: int) -> None:
        super().__init__()
        self.patch_embedding = nn.Linear(d_in, dim)
        self.x_embed = nn.Embedding(n_pos, dim)
        self.y_embed = nn.Embedding(n_pos, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, dim_head, mlp_dim, dropout)
                                      for _ in range(depth)])
        self.gene_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_genes))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``x`` (n_spots, d_in) features of ONE slide, ``pos`` (n_spots, 2) (col, row) indices."""
        h = self.patch_embedding(x) + self.x_embed(pos[:, 0]) + self.y_embed(pos[:, 1])
        return self.gene_head(self.blocks(self.dropout(h)))


# ---------------------------------------------------------------------------------------------
# The plugin
# ---------------------------------------------------------------------------------------------


class HisToGene(Method):
    """HisToGene: a ViT whose tokens are the spots of a slide (frozen features as input)."""

    meta = MethodMeta(
        name="histogene",
        kind="supervised",
        needs=frozenset({"image"}),
        citation=(
            "Pang, Su, Li. Leveraging information in spatial transcriptomics to predict "
            "super-resolution gene expression from histology images in tumors. bioRxiv "
            "2021.11.28.470212 (2021)"
        ),
        version="1",
        trained_on="all",
    )

    @dataclass
    class Config(MethodConfig):
        """Hyperparameters (HisToGene's published values in brackets where they differ).

        Attributes:
            dim: Token width [1024].
            depth: Transformer blocks (HisToGene: 4).
            heads: Attention heads (HisToGene: 16).
            dim_head: Width of each head [64].
            mlp_ratio: Feed-forward width as a multiple of ``dim`` (HisToGene: 2).
            dropout: Dropout on the embeddings, attention output and feed-forward (0.1).
            n_pos: Size of the x / y position tables [64]; array coordinates are clipped to
                ``n_pos - 1`` (128 also covers Visium's 128 x 78 array).
            lr: Adam learning rate [1e-5, 100 epochs on a GPU].
            weight_decay: Adam weight decay (HisToGene: 0).
            max_epochs: Upper bound on epochs (one step per training slide each) [100].
            patience: Epochs without a better validation PCC before stopping.
            epochs_no_val: Epochs trained when no validation slides are given.
            scaling: Image-feature scaling from the training spots: ``global`` (centre, one
                common scale), ``feature`` (per-dimension z-scores) or ``none``.
        """

        dim: int = bounded(128, ">= 1")
        depth: int = bounded(4, ">= 1")
        heads: int = bounded(16, ">= 1")
        dim_head: int = bounded(8, ">= 1")
        mlp_ratio: int = bounded(2, ">= 1")
        dropout: float = bounded(0.1, "[0, 1)")
        n_pos: int = bounded(128, ">= 1")
        lr: float = bounded(1e-3, "> 0")
        weight_decay: float = bounded(0.0, ">= 0")
        max_epochs: int = bounded(200, ">= 1")
        patience: int = bounded(20, ">= 1")
        epochs_no_val: int = bounded(100, ">= 1")
        scaling: str = "global"

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", 1e-5, 3e-3, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "depth": trial.suggest_categorical("depth", [4, 2, 8]),
        }

    def _slides(self, bundle: Bundle) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.as_tensor(self._scaler.transform(v.features["image"]), dtype=torch.float32,
                                 device=self._device),
                 torch.as_tensor(grid_positions(v.grid, self.config.n_pos), device=self._device))
                for v in bundle.slides]

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        cfg = self.config
        gen = seed_all(ctx.seed)
        self._device = resolve_device(ctx.device)
        self._genes = list(train.genes)
        x_all = train.stack("image")
        self._scaler = FeatureScaler(cfg.scaling).fit(x_all)
        slides = self._slides(train)
        ys = [torch.as_tensor(np.asarray(v.expression), dtype=torch.float32, device=self._device)
              for v in train.slides]
        self._net = HisToGeneNet(x_all.shape[1], len(self._genes), cfg.dim, cfg.depth, cfg.heads,
                                 cfg.dim_head, cfg.mlp_ratio * cfg.dim, cfg.dropout,
                                 cfg.n_pos).to(self._device)
        opt = torch.optim.Adam(self._net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def train_epoch(epoch: int) -> float:
            losses = []
            for i in torch.randperm(len(slides), generator=gen).tolist():
                loss = F.mse_loss(self._net(*slides[i]), ys[i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            return float(np.mean(losses))

        target = validation_target(val, self._genes)
        val_slides = self._slides(val) if target is not None else []
        out = fit_with_early_stopping(self._net, train_epoch,
                                      lambda: self._forward(val_slides), target, cfg.max_epochs,
                                      cfg.patience, cfg.epochs_no_val, ctx, "histogene")
        self.history_ = out["history"]
        self.best_epoch_ = out["best_epoch"]
        self.best_val_pcc_ = out["best_val_pcc"]

    @torch.no_grad()
    def _forward(self, slides: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
        self._net.eval()
        preds = [self._net(x, pos).cpu().numpy() for x, pos in slides]
        return np.concatenate(preds, axis=0) if preds else np.zeros((0, len(self._genes)), np.float32)

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        cols = gene_columns(self._genes, list(genes), "histogene")
        return self._forward(self._slides(bundle))[:, cols].astype(np.float32)
