"""``stnet``: ST-Net (He et al., Nat Biomed Eng 2020), a supervised reference.

ST-Net fine-tunes an ImageNet DenseNet-121 on 224 px spot patches with its classifier replaced
by ONE linear layer to the genes (weights zero-initialised, bias = the training spots' mean
expression), loss ``sum over the batch of the per-spot mean squared error over genes``, SGD
(momentum 0.9, batch 32, 50 epochs) and 8-fold rotation/reflection averaging at test time.

Here (CPU, frozen features): the harness's ``image`` feature of each spot (whatever encoder the
run uses; DenseNet-121 ImageNet weights are not shipped, so the default encoder stands in --
``encoder=timm encoder.model=densenet121 encoder.weights=<local file>`` gives ST-Net's backbone
when its weights are available) is centred and scaled with the training spots' statistics
(``scaling``) and goes through ST-Net's head: a linear layer to every panel gene, initialised
and trained as published, with a learning rate suited to a head on frozen features instead
of ST-Net's end-to-end 1e-6. Early stopping on the validation slides' mean per-gene PCC (the
best state is restored). ``methods/README.md`` lists what differs.

:func:`fit_with_early_stopping` and :func:`validation_target` are the epoch loop and the
validation-target helper shared by the four supervised references (``stnet``, ``histogene``,
``bleep``, ``hist2st``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stbench.method import Bundle, FitContext, Method, MethodConfig, MethodMeta
from stbench.methods._torch_utils import (
    FeatureScaler,
    fit_with_early_stopping,
    gene_columns,
    resolve_device,
    seed_all,
    validation_target,
)
from stbench.ranges import bounded

# ---------------------------------------------------------------------------------------------
# ST-Net
# ---------------------------------------------------------------------------------------------


class STNet(Method):
    """ST-Net's linear regression head on frozen spot image features."""

    meta = MethodMeta(
        name="stnet",
        kind="supervised",
        needs=frozenset({"image"}),
        citation=(
            "He, Bergenstrahle, Stenbeck, Abid, Andersson, Borg, Maaskola, Lundeberg, Zou. "
            "Integrating spatial gene expression and breast tumour morphology via deep "
            "learning. Nat Biomed Eng 4, 827-834 (2020)"
        ),
        version="1",
        trained_on="all",
    )

    @dataclass
    class Config(MethodConfig):
        """Hyperparameters (ST-Net's published values in brackets where they differ).

        Attributes:
            optimizer: ``sgd`` (ST-Net) or ``adam``.
            lr: Learning rate [1e-6, for end-to-end fine-tuning of DenseNet-121; a head on
                frozen, scaled features needs a larger step].
            momentum: SGD momentum (ST-Net: 0.9).
            weight_decay: Weight decay (ST-Net: 0).
            batch_size: Spots per step (ST-Net: 32).
            max_epochs: Upper bound on epochs (ST-Net trains 50 and keeps the last).
            patience: Epochs without a better validation PCC before stopping.
            epochs_no_val: Epochs trained when no validation slides are given.
            init_mean: Zero weights and bias = training mean expression at start (ST-Net).
            scaling: Image-feature scaling from the training spots: ``global`` (centre, one
                common scale), ``feature`` (per-dimension z-scores) or ``none``.
        """

        optimizer: str = "sgd"
        lr: float = bounded(1e-3, "> 0")
        momentum: float = bounded(0.9, "[0, 1)")
        weight_decay: float = bounded(0.0, ">= 0")
        batch_size: int = bounded(32, ">= 1")
        max_epochs: int = bounded(50, ">= 1")
        patience: int = bounded(10, ">= 1")
        epochs_no_val: int = bounded(50, ">= 1")
        init_mean: bool = True
        scaling: str = "global"

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [32, 16, 64]),
        }

    def _x(self, bundle: Bundle) -> torch.Tensor:
        return torch.as_tensor(self._scaler.transform(bundle.stack("image")), dtype=torch.float32,
                               device=self._device)

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        cfg = self.config
        if cfg.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use sgd or adam")
        gen = seed_all(ctx.seed)
        self._device = resolve_device(ctx.device)
        self._genes = list(train.genes)
        self._scaler = FeatureScaler(cfg.scaling).fit(train.stack("image"))
        x = self._x(train)
        y = torch.as_tensor(train.expression(), dtype=torch.float32, device=self._device)
        n, n_genes = y.shape
        self._head = nn.Linear(x.shape[1], n_genes).to(self._device)
        if cfg.init_mean:
            with torch.no_grad():
                self._head.weight.zero_()
                self._head.bias.copy_(y.mean(0))
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(self._head.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.Adam(self._head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        batch = max(1, int(cfg.batch_size))

        def train_epoch(epoch: int) -> float:
            losses = []
            for idx in torch.randperm(n, generator=gen).split(batch):
                idx = idx.to(self._device)
                # ST-Net: sum over the batch of each spot's mean squared error over genes
                loss = ((self._head(x[idx]) - y[idx]) ** 2).sum() / n_genes
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()) / len(idx))
            return float(np.mean(losses))

        target = validation_target(val, self._genes)
        x_val = self._x(val) if target is not None else None
        out = fit_with_early_stopping(self._head, train_epoch,
                                      (lambda: self._head(x_val).cpu().numpy()) if target else None,
                                      target, cfg.max_epochs, cfg.patience, cfg.epochs_no_val,
                                      ctx, "stnet")
        self.history_ = out["history"]
        self.best_epoch_ = out["best_epoch"]
        self.best_val_pcc_ = out["best_val_pcc"]

    @torch.no_grad()
    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        cols = gene_columns(self._genes, list(genes), "stnet")
        if bundle.n_spots == 0 or not cols:
            return np.zeros((bundle.n_spots, len(cols)), dtype=np.float32)
        self._head.eval()
        return self._head(self._x(bundle)).cpu().numpy()[:, cols].astype(np.float32)
