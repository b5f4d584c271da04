"""``bleep``: BLEEP (Xie et al., NeurIPS 2023), a supervised reference.

BLEEP learns a joint embedding of spot images and spot expression profiles CLIP-style, then
predicts a query spot's expression by retrieval:

* Image branch: an image encoder (ResNet-50, fine-tuned) then a projection head; expression
  branch: the spot's expression vector then another projection head. Each head is
  ``projected = Linear(d, 256); x = Linear(GELU(projected)); x = Dropout(x) + projected;
  LayerNorm(x)`` (dropout 0.1).
* Loss (for a batch of spots, embeddings ``I`` and ``S``): ``logits = S I^T / T``;
  ``targets = softmax((I I^T + S S^T) / 2 * T)`` row-wise; the mean of the two soft-target
  cross-entropies ``CE(logits, targets)`` and ``CE(logits^T, targets^T)``; temperature
  ``T = 1``; AdamW (lr 1e-3, weight decay 1e-3), batch 256.
* Query ("average" strategy): the query spot's image embedding and the expression
  embeddings of all reference (training) spots are L2-normalised; the ``k = 50`` reference
  spots with the highest cosine similarity are retrieved and their measured expression
  profiles averaged. ``weighted_average`` and ``simple`` (k = 1) are BLEEP's other two
  strategies.

Here (CPU, frozen features): the image branch's input is the harness's frozen ``image``
feature (centred and scaled with the training spots' statistics) instead of a fine-tuned
ResNet-50; the expression branch reads the training bundle's log-normalised expression of
every panel gene (BLEEP used Harmony-corrected HVG profiles). Early stopping on the
validation slides' mean per-gene PCC of the retrieval predictions (BLEEP keeps the epoch with
the lowest held-out contrastive loss). ``methods/README.md`` lists what differs.
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

QUERIES = ("average", "weighted_average", "simple")


class ProjectionHead(nn.Module):
    """BLEEP's projection head: ``LN(Dropout(fc(GELU(p))) + p)`` with ``p = Linear(x)``."""

    def __init__(self, d_in: int, projection_dim: int, dropout: float) -> None:
        super().__init__()
        self.projection = nn.Linear(d_in, projection_dim)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(projection_dim, projection_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(projection_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.projection(x)
        x = self.dropout(self.fc(self.gelu(projected)))
        return self.layer_norm(x + projected)


class BLEEPNet(nn.Module):
    def __init__(self, d_image: int, d_expression: int, projection_dim: int, dropout: float) -> None:
        super().__init__()
        self.image_projection = ProjectionHead(d_image, projection_dim, dropout)
        self.spot_projection = ProjectionHead(d_expression, projection_dim, dropout)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row ``-sum(targets * log_softmax(logits))``."""
    return (-targets * F.log_softmax(logits, dim=-1)).sum(1)


def bleep_loss(image_emb: torch.Tensor, spot_emb: torch.Tensor, temperature: float) -> torch.Tensor:
    """BLEEP's symmetric contrastive loss with similarity-smoothed targets (as its code)."""
    logits = spot_emb @ image_emb.T / temperature
    targets = F.softmax((image_emb @ image_emb.T + spot_emb @ spot_emb.T) / 2 * temperature, dim=-1)
    spots_loss = soft_cross_entropy(logits, targets)
    images_loss = soft_cross_entropy(logits.T, targets.T)
    return ((images_loss + spots_loss) / 2.0).mean()


def find_matches(keys: torch.Tensor, queries: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (n_queries, k) of the ``top_k`` keys by cosine similarity, best first, and the
    similarities. Ties go to the lower key index (stable sort), so the result is deterministic."""
    sim = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T
    k = max(1, min(int(top_k), keys.shape[0]))
    order = torch.sort(sim, dim=1, descending=True, stable=True)
    return order.indices[:, :k], order.values[:, :k]


def aggregate(expression: torch.Tensor, keys: torch.Tensor, queries: torch.Tensor, top_k: int,
              query: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted expression (n_queries, n_genes) and the neighbour indices, by BLEEP's strategy.

    * ``average``: plain mean of the ``top_k`` retrieved spots' expression;
    * ``weighted_average``: weights ``exp(-(d_j - d_min + 1))`` with ``d_j`` the squared
      Euclidean distance between the query and the j-th retrieved key (unnormalised
      embeddings), as BLEEP's inference code;
    * ``simple``: the single best match.
    """
    if query not in QUERIES:
        raise ValueError(f"unknown query strategy {query!r}: use one of {', '.join(QUERIES)}")
    idx, _ = find_matches(keys, queries, 1 if query == "simple" else top_k)
    picked = expression[idx]  # (n_queries, k, n_genes)
    if query == "weighted_average":
        d = ((keys[idx] - queries[:, None, :]) ** 2).sum(-1)
        w = torch.exp(-(d - d[:, :1] + 1.0))
        return (picked * w[..., None]).sum(1) / w.sum(1, keepdim=True), idx
    return picked.mean(1), idx


class BLEEP(Method):
    """BLEEP: contrastive image/expression embedding, prediction by top-k retrieval."""

    meta = MethodMeta(
        name="bleep",
        kind="supervised",
        needs=frozenset({"image"}),
        citation=(
            "Xie, Yang, Cai, Gao, Zhang, Dai, Wang, Lu, Li, Ren, Yang, Xu, Zhang, Wang. "
            "Spatially Resolved Gene Expression Prediction from Histology Images via Bi-modal "
            "Contrastive Learning. NeurIPS 2023 (arXiv 2306.01859)"
        ),
        version="1",
        trained_on="all",
    )

    @dataclass
    class Config(MethodConfig):
        """Hyperparameters (BLEEP's published values in brackets where they differ).

        Attributes:
            projection_dim: Joint embedding width (BLEEP: 256).
            dropout: Dropout in the projection heads (BLEEP: 0.1).
            temperature: Contrastive temperature (BLEEP: 1.0).
            lr: AdamW learning rate (BLEEP: 1e-3).
            weight_decay: AdamW weight decay (BLEEP: 1e-3).
            batch_size: Spots per contrastive batch (BLEEP: 256).
            top_k: Reference spots retrieved per query (BLEEP: 50).
            query: ``average`` (BLEEP's reported strategy), ``weighted_average`` or ``simple``.
            max_epochs: Upper bound on epochs [BLEEP: fixed count, best held-out loss kept].
            patience: Epochs without a better validation PCC before stopping.
            epochs_no_val: Epochs trained when no validation slides are given.
            scaling: Image-feature scaling from the training spots: ``global`` (centre, one
                common scale), ``feature`` (per-dimension z-scores) or ``none``.
        """

        projection_dim: int = bounded(256, ">= 1")
        dropout: float = bounded(0.1, "[0, 1)")
        temperature: float = bounded(1.0, "> 0")
        lr: float = bounded(1e-3, "> 0")
        weight_decay: float = bounded(1e-3, ">= 0")
        batch_size: int = bounded(256, ">= 1")
        top_k: int = bounded(50, ">= 1")
        query: str = "average"
        max_epochs: int = bounded(100, ">= 1")
        patience: int = bounded(15, ">= 1")
        epochs_no_val: int = bounded(50, ">= 1")
        scaling: str = "global"

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
            "top_k": trial.suggest_categorical("top_k", [50, 10, 25, 100]),
            "temperature": trial.suggest_float("temperature", 0.1, 1.0, log=True),
        }

    def _x(self, bundle: Bundle) -> torch.Tensor:
        return torch.as_tensor(self._scaler.transform(bundle.stack("image")), dtype=torch.float32,
                               device=self._device)

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        cfg = self.config
        if cfg.query not in QUERIES:
            raise ValueError(f"unknown query strategy {cfg.query!r}: use one of {', '.join(QUERIES)}")
        gen = seed_all(ctx.seed)
        self._device = resolve_device(ctx.device)
        self._genes = list(train.genes)
        self._scaler = FeatureScaler(cfg.scaling).fit(train.stack("image"))
        x = self._x(train)
        y = torch.as_tensor(train.expression(), dtype=torch.float32, device=self._device)
        self._reference = y
        n = x.shape[0]
        self._net = BLEEPNet(x.shape[1], y.shape[1], cfg.projection_dim, cfg.dropout).to(self._device)
        opt = torch.optim.AdamW(self._net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        batch = max(2, int(cfg.batch_size))

        def train_epoch(epoch: int) -> float:
            losses = []
            perm = torch.randperm(n, generator=gen)
            chunks = list(perm.split(batch))
            if len(chunks) > 1 and len(chunks[-1]) < 2:  # a 1-spot batch has no contrast
                chunks = chunks[:-1]
            for idx in chunks:
                idx = idx.to(self._device)
                loss = bleep_loss(self._net.image_projection(x[idx]),
                                  self._net.spot_projection(y[idx]), cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            return float(np.mean(losses))

        target = validation_target(val, self._genes)
        x_val = self._x(val) if target is not None else None

        def val_predict() -> np.ndarray:
            keys = self._net.spot_projection(y)
            pred, _ = aggregate(y, keys, self._net.image_projection(x_val), cfg.top_k, cfg.query)
            return pred.cpu().numpy()

        out = fit_with_early_stopping(self._net, train_epoch, val_predict, target, cfg.max_epochs,
                                      cfg.patience, cfg.epochs_no_val, ctx, "bleep")
        self.history_ = out["history"]
        self.best_epoch_ = out["best_epoch"]
        self.best_val_pcc_ = out["best_val_pcc"]
        with torch.no_grad():
            self._keys = self._net.spot_projection(y)

    @torch.no_grad()
    def neighbours(self, bundle: Bundle) -> np.ndarray:
        """Indices (n_spots, k) of the reference (training) spots each spot's prediction averages,
        in the order of the training bundle's stacked spots."""
        self._net.eval()
        k = 1 if self.config.query == "simple" else self.config.top_k
        idx, _ = find_matches(self._keys, self._net.image_projection(self._x(bundle)), k)
        return idx.cpu().numpy()

    @torch.no_grad()
    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        cols = gene_columns(self._genes, list(genes), "bleep")
        if bundle.n_spots == 0:
            return np.zeros((0, len(cols)), dtype=np.float32)
        self._net.eval()
        pred, _ = aggregate(self._reference, self._keys, self._net.image_projection(self._x(bundle)),
                            self.config.top_k, self.config.query)
        return pred.cpu().numpy()[:, cols].astype(np.float32)
