"""``hist2st``: Hist2ST (Zeng et al., Brief Bioinform 2022), a supervised reference.

Hist2ST, on the spots of ONE slide at a time:

1. Convmixer: each 112 px patch -> ``Conv2d(3, 32, 7, stride 7)`` (16 x 16 x 32) -> 2 ConvMixer
   blocks (``x = x + [depthwise conv k=5, BN, GELU] x 2``; then ``pointwise conv, GELU, BN``)
   -> ``Conv2d(32, 4, 1)`` -> flatten to ``dim`` = 1024.
2. Transformer: learned x / y position embeddings (``nn.Embedding(n_pos, dim)``, array col /
   row) are added and 8 pre-LN blocks (16 heads of 64, MLP ``dim``) run over all spots.
3. GNN: 4 GraphSAGE-style layers over the spot grid (``relu(W mean_{j in N(i)} h_j)``,
   L2-normalised; ``N(i)``: the 4 nearest array neighbours within distance 2), with a
   jumping-knowledge read-out: a 2-layer LSTM over the 4 layer outputs, averaged.
4. Head ``LayerNorm -> Linear`` to the genes; loss MSE + ``zinb`` x ZINB negative
   log-likelihood of the counts (heads for mean / dispersion / dropout) + ``lamb`` x
   self-distillation (``bake`` augmented copies of the patches, their predictions
   softmax-weighted by a learned coefficient head, MSE to the main prediction). Adam
   (lr 1e-5, StepLR 50 epochs x 0.9), dropout 0.2, 350 epochs; published runs use
   ``zinb = 0.25``, ``bake = 5``, ``lamb = 0.5``.

Here (CPU, frozen features): the harness's ``image`` feature replaces the patch pixels, so
step 1 becomes a ConvMixer over a LEARNED 1-D token layout of that feature (``Linear(d,
channel x tokens)`` reshaped to ``channel`` channels x ``tokens`` positions, the same blocks
with 1-D convolutions, ``Conv1d(channel, channel // 8, 1)``, flatten: ``dim`` = channel / 8 x
tokens): it keeps the module's structure, not its meaning (there is no image grid). The
graph is the harness's grid graph (``slide_edges``). ZINB and self-distillation are options,
off by default (``zinb = 0``, ``bake = 0``): ZINB is fitted to ``expm1`` of the log-normalised
expression (the harness gives methods no raw counts; the mean head starts at each gene's
training mean), and distillation augments the frozen features (dropout + Gaussian noise)
instead of the images. Smaller widths, 2 transformer
blocks and a larger learning rate by default for CPU; early stopping on the validation slides'
mean per-gene PCC (best state restored). ``methods/README.md`` lists what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stbench.method import Bundle, FitContext, Method, MethodConfig, MethodMeta
from stbench.methods._torch_utils import (FeatureScaler, fit_with_early_stopping, gene_columns,
                                         resolve_device, seed_all, slide_edges,
                                         validation_target)
from stbench.methods.histogene import TransformerBlock, grid_positions
from stbench.ranges import bounded

# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


class ConvMixerBlock1d(nn.Module):
    """Hist2ST's ``convmixer_block`` with 1-D convolutions:
    ``x = x + [dwconv, BN, GELU, dwconv, BN, GELU](x)``; ``x = BN(GELU(pwconv(x)))``."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.dw = nn.Sequential(
            nn.Conv1d(channels, channels, kernel_size, groups=channels, padding="same"),
            nn.BatchNorm1d(channels), nn.GELU(),
            nn.Conv1d(channels, channels, kernel_size, groups=channels, padding="same"),
            nn.BatchNorm1d(channels), nn.GELU(),
        )
        self.pw = nn.Sequential(nn.Conv1d(channels, channels, 1), nn.GELU(), nn.BatchNorm1d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x) + x)


class FeatureConvMixer(nn.Module):
    """Frozen feature -> (channel, tokens) layout -> ConvMixer blocks -> 1x1 down -> flatten."""

    def __init__(self, d_in: int, channel: int, tokens: int, kernel_size: int, depth: int) -> None:
        super().__init__()
        self.channel, self.tokens = channel, tokens
        self.embed = nn.Linear(d_in, channel * tokens)
        self.blocks = nn.Sequential(*[ConvMixerBlock1d(channel, kernel_size) for _ in range(depth)])
        self.down = nn.Conv1d(channel, channel // 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).reshape(x.shape[0], self.channel, self.tokens)
        return self.down(self.blocks(h)).flatten(1)


def mean_adjacency(edges: np.ndarray, n: int, self_loops: bool = False) -> torch.Tensor:
    """Sparse (n, n) row-normalised adjacency ``A[i, j] = 1 / deg(i)`` for every edge j -> i, so
    ``A @ h`` is the mean over each spot's in-neighbours (with ``self_loops``, the spot itself
    counts as one of them). A spot without neighbours gets zeros (Hist2ST's dense
    ``adj.div(num_neigh)`` would divide by zero there)."""
    src, dst = np.asarray(edges, dtype=np.int64).reshape(2, -1)
    if self_loops:
        keep = src != dst
        loop = np.arange(n, dtype=np.int64)
        src, dst = np.concatenate([src[keep], loop]), np.concatenate([dst[keep], loop])
    deg = np.bincount(dst, minlength=n).astype(np.float32)
    values = 1.0 / deg[dst] if len(dst) else np.zeros(0, np.float32)
    return torch.sparse_coo_tensor(np.stack([dst, src]), values, (n, n),
                                   check_invariants=True).coalesce()


class GSBlock(nn.Module):
    """Hist2ST's ``gs_block`` (gcn=True, mean policy): ``L2norm(relu(W mean_{j in N(i)} h_j))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """``adj``: :func:`mean_adjacency` of the slide."""
        return F.normalize(F.relu(torch.sparse.mm(adj, h) @ self.weight.T), p=2, dim=1)


class Hist2STNet(nn.Module):
    def __init__(self, d_in: int, n_genes: int, cfg: Any) -> None:
        super().__init__()
        if cfg.channel < 8 or cfg.channel % 8:
            raise ValueError(f"channel must be a positive multiple of 8, got {cfg.channel}")
        dim = cfg.channel // 8 * cfg.tokens
        self.dim = dim
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.mixer = FeatureConvMixer(d_in, cfg.channel, cfg.tokens, cfg.kernel_size, cfg.depth1)
        self.x_embed = nn.Embedding(cfg.n_pos, dim)
        self.y_embed = nn.Embedding(cfg.n_pos, dim)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, cfg.heads, cfg.dim_head, dim, cfg.dropout)
                                      for _ in range(cfg.depth2)])
        self.gnn = nn.ModuleList([GSBlock(dim) for _ in range(cfg.depth3)])
        self.jknet = nn.LSTM(dim, dim, 2)
        self.gene_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_genes))
        if cfg.zinb > 0:
            self.zinb_mean = nn.Linear(dim, n_genes)
            self.zinb_disp = nn.Linear(dim, n_genes)
            self.zinb_pi = nn.Linear(dim, n_genes)
        if cfg.bake > 0:
            self.coef = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def embed(self, x: torch.Tensor, pos: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Spot representations ``h`` (n_spots, dim) of ONE slide (``adj``: :func:`mean_adjacency`)."""
        g = self.mixer(self.input_dropout(x))
        g = self.blocks(g + self.x_embed(pos[:, 0]) + self.y_embed(pos[:, 1]))
        jk = []
        for layer in self.gnn:
            g = layer(g, adj)
            jk.append(g)
        out, _ = self.jknet(torch.stack(jk, 0))  # sequence = the GNN layers, batch = spots
        return out.mean(0)

    def zinb_params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hist2ST's MeanAct / DispAct / sigmoid heads."""
        mean = torch.clamp(torch.exp(self.zinb_mean(h)), min=1e-5, max=1e6)
        disp = torch.clamp(F.softplus(self.zinb_disp(h)), min=1e-4, max=1e4)
        return mean, disp, torch.sigmoid(self.zinb_pi(h))


def zinb_loss(x: torch.Tensor, mean: torch.Tensor, disp: torch.Tensor, pi: torch.Tensor,
              scale_factor: torch.Tensor | float = 1.0, ridge_lambda: float = 0.0) -> torch.Tensor:
    """Mean zero-inflated negative-binomial negative log-likelihood (Hist2ST's ``ZINB_loss``).

    Args:
        x: Non-negative observations (n_spots, n_genes).
        mean, disp, pi: NB mean, dispersion and zero-inflation probability, same shape.
        scale_factor: Per-spot size factor (n_spots,) or a scalar multiplying ``mean``.
    """
    eps = 1e-10
    if not torch.is_tensor(scale_factor):
        scale_factor = torch.full((mean.shape[0],), float(scale_factor), dtype=mean.dtype, device=mean.device)
    mean = mean * scale_factor[:, None]
    t1 = torch.lgamma(disp + eps) + torch.lgamma(x + 1.0) - torch.lgamma(x + disp + eps)
    t2 = ((disp + x) * torch.log(1.0 + (mean / (disp + eps)))
          + (x * (torch.log(disp + eps) - torch.log(mean + eps))))
    nb_case = t1 + t2 - torch.log(1.0 - pi + eps)
    zero_nb = torch.pow(disp / (disp + mean + eps), disp)
    zero_case = -torch.log(pi + ((1.0 - pi) * zero_nb) + eps)
    result = torch.where(torch.le(x, 1e-8), zero_case, nb_case)
    if ridge_lambda > 0:
        result = result + ridge_lambda * torch.square(pi)
    return torch.mean(result)


# ---------------------------------------------------------------------------------------------
# The plugin
# ---------------------------------------------------------------------------------------------


class Hist2ST(Method):
    """Hist2ST: (feature) ConvMixer -> transformer over the slide -> GraphSAGE -> gene head."""

    meta = MethodMeta(
        name="hist2st",
        kind="supervised",
        needs=frozenset({"image", "graph"}),
        citation=(
            "Zeng, Wei, Wei, Su, Lu, Yang. Spatial transcriptomics prediction from histology "
            "jointly through Transformer and graph neural networks. Brief Bioinform 23(5), "
            "bbac297 (2022)"
        ),
        version="1",
        trained_on="all",
    )

    @dataclass
    class Config(MethodConfig):
        """Hyperparameters (Hist2ST's published values in brackets where they differ).

        Attributes:
            channel: ConvMixer channels (Hist2ST: 32); a multiple of 8.
            tokens: Length of the learned 1-D layout of the feature [16 x 16 = 256 pixels of
                the patch-embedded image]; ``dim = channel // 8 * tokens`` [1024].
            kernel_size: Depthwise kernel (Hist2ST: 5).
            depth1: ConvMixer blocks (Hist2ST: 2).
            depth2: Transformer blocks [8].
            depth3: GraphSAGE layers (Hist2ST: 4).
            heads: Attention heads (Hist2ST: 16).
            dim_head: Width of each head [64].
            dropout: Dropout on the mixer input, attention output and feed-forward (0.2).
            n_pos: Size of the x / y position tables [64]; coordinates clipped to ``n_pos - 1``.
            grid_radius, grid_max_neighbours: Grid graph when the bundle carries no
                ``edges_grid`` (the harness's graph, ``features.grid_max_neighbors``, wins).
            gnn_self_loops: Let each spot count among its own neighbours in the GNN mean
                (GraphSAGE-GCN's convention). Hist2ST's code has no self-loops (False): a
                spot's own features reach its GNN output only through 2-hop paths.
            lr: Adam learning rate [1e-5].
            lr_step, lr_gamma: StepLR schedule in epochs (Hist2ST: every 50 epochs x 0.9).
            weight_decay: Adam weight decay (Hist2ST: 0).
            zinb: Weight of the ZINB term [0.25]; 0 = off (no ZINB heads).
            bake: Augmented views for self-distillation [5]; 0 = off.
            lamb: Weight of the self-distillation term (Hist2ST: 0.5).
            bake_dropout, bake_noise: Feature dropout and Gaussian noise (in scaled-feature
                units) that make an augmented view (replacing image augmentations).
            max_epochs: Upper bound on epochs (one step per training slide each) [350].
            patience: Epochs without a better validation PCC before stopping.
            epochs_no_val: Epochs trained when no validation slides are given.
            scaling: Image-feature scaling from the training spots: ``global`` (centre, one
                common scale), ``feature`` (per-dimension z-scores) or ``none``.
        """

        channel: int = bounded(32, ">= 1")
        tokens: int = bounded(32, ">= 1")
        kernel_size: int = bounded(5, ">= 1")
        depth1: int = bounded(2, ">= 1")
        depth2: int = bounded(2, ">= 1")
        depth3: int = bounded(4, ">= 1")
        heads: int = bounded(16, ">= 1")
        dim_head: int = bounded(8, ">= 1")
        dropout: float = bounded(0.2, "[0, 1)")
        n_pos: int = bounded(128, ">= 1")
        grid_radius: float = bounded(math.sqrt(2.0), "> 0")
        grid_max_neighbours: int = bounded(5, ">= 1")
        gnn_self_loops: bool = False
        lr: float = bounded(1e-3, "> 0")
        lr_step: int = bounded(50, ">= 1")
        lr_gamma: float = bounded(0.9, "(0, 1]")
        weight_decay: float = bounded(0.0, ">= 0")
        zinb: float = bounded(0.0, ">= 0")
        bake: int = bounded(0, ">= 0")
        lamb: float = bounded(0.5, ">= 0")
        bake_dropout: float = bounded(0.1, "[0, 1)")
        bake_noise: float = bounded(0.1, ">= 0")
        max_epochs: int = bounded(200, ">= 1")
        patience: int = bounded(20, ">= 1")
        epochs_no_val: int = bounded(100, ">= 1")
        scaling: str = "global"

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", 1e-5, 3e-3, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.4),
            "depth2": trial.suggest_categorical("depth2", [2, 4, 8]),
            "zinb": trial.suggest_categorical("zinb", [0.0, 0.25]),
        }

    def _slides(self, bundle: Bundle) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        cfg = self.config
        out = []
        for v in bundle.slides:
            eg, _ = slide_edges(v, cfg.grid_radius, cfg.grid_max_neighbours)
            out.append((torch.as_tensor(self._scaler.transform(v.features["image"]), dtype=torch.float32,
                                        device=self._device),
                        torch.as_tensor(grid_positions(v.grid, cfg.n_pos), device=self._device),
                        mean_adjacency(eg, v.n_spots, cfg.gnn_self_loops).to(self._device)))
        return out

    def _loss(self, x: torch.Tensor, pos: torch.Tensor, adj: torch.Tensor, y: torch.Tensor
              ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, net = self.config, self._net
        h = net.embed(x, pos, adj)
        pred = net.gene_head(h)
        loss = F.mse_loss(pred, y)
        parts = {"mse": float(loss.detach())}
        if cfg.zinb > 0:
            z = zinb_loss(torch.expm1(y).clamp(min=0.0), *net.zinb_params(h))
            loss = loss + cfg.zinb * z
            parts["zinb"] = float(z.detach())
        if cfg.bake > 0:
            views, coefs = [], []
            for _ in range(int(cfg.bake)):
                xa = F.dropout(x, cfg.bake_dropout, True) + cfg.bake_noise * torch.randn_like(x)
                ha = net.embed(xa, pos, adj)
                views.append(net.gene_head(ha))
                coefs.append(net.coef(ha))
            w = torch.softmax(torch.stack(coefs, 0), dim=0)
            distilled = (torch.stack(views, 0) * w).sum(0)
            b = F.mse_loss(distilled, pred)
            loss = loss + cfg.lamb * b
            parts["bake"] = float(b.detach())
        return loss, parts

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
        self._net = Hist2STNet(x_all.shape[1], len(self._genes), cfg).to(self._device)
        if cfg.zinb > 0:  # start the ZINB mean at each gene's training mean (see the README)
            with torch.no_grad():
                counts = torch.expm1(torch.cat(ys, 0)).clamp(min=0.0).mean(0)
                self._net.zinb_mean.bias.copy_(torch.log(counts.clamp(min=1e-5)))
        opt = torch.optim.Adam(self._net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(cfg.lr_step)), gamma=cfg.lr_gamma)
        self.loss_parts_: list[dict[str, float]] = []

        def train_epoch(epoch: int) -> float:
            losses, parts = [], []
            for i in torch.randperm(len(slides), generator=gen).tolist():
                loss, p = self._loss(*slides[i], ys[i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                parts.append(p)
            sched.step()
            self.loss_parts_.append({k: float(np.mean([p[k] for p in parts])) for k in parts[0]})
            return float(np.mean(losses))

        target = validation_target(val, self._genes)
        val_slides = self._slides(val) if target is not None else []
        out = fit_with_early_stopping(self._net, train_epoch, lambda: self._forward(val_slides),
                                      target, cfg.max_epochs, cfg.patience, cfg.epochs_no_val,
                                      ctx, "hist2st")
        self.history_ = out["history"]
        self.best_epoch_ = out["best_epoch"]
        self.best_val_pcc_ = out["best_val_pcc"]

    @torch.no_grad()
    def _forward(self, slides) -> np.ndarray:
        self._net.eval()
        preds = [self._net.gene_head(self._net.embed(x, pos, e)).cpu().numpy() for x, pos, e in slides]
        return np.concatenate(preds, axis=0) if preds else np.zeros((0, len(self._genes)), np.float32)

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        cols = gene_columns(self._genes, list(genes), "hist2st")
        return self._forward(self._slides(bundle))[:, cols].astype(np.float32)
