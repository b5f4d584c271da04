"""The one epoch loop of the trained method plugins: early stopping, logging, pruning reports.

Used by the zero-shot methods (``sgn``, ``genequery``, ``alignst``) directly and, through
:func:`stbench.methods._torch_utils.fit_with_early_stopping`, by the supervised references.

Semantics (the same for every method):

* an epoch is whatever ``run_epoch(epoch)`` does; it returns the epoch's mean training loss,
  logged as ``train_loss``;
* the validation score (higher is better) is computed after epochs ``k-1, 2k-1, ...``
  (``eval_every = k``) and after the last epoch, logged as ``val_pcc`` and handed to
  ``ctx.report`` (a tuning pruner may raise there to stop a bad trial);
* patience is counted in EPOCHS since the best one: training stops after an evaluation at
  which ``epoch - best_epoch >= patience`` and at least ``min_epochs`` epochs ran. With
  ``eval_every = 1`` this is the classic "``patience`` evaluations without improvement".
  ``patience_ratio = r > 0`` makes the patience grow with the best epoch:
  ``max(patience, ceil(r * (best_epoch + 1)))``, so a curve still rising late (a best at
  epoch 40 waits 20 more epochs with ``r = 0.5``) is not cut by a plateau that a short fixed
  patience would stop at;
* the best state (a copy of ``state_dict``) is restored at the end when there was validation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stbench.method import FitContext


def epoch_budget(max_epochs: int, max_steps: int, steps_per_epoch: int) -> int:
    """Epochs to run: ``max_epochs``, capped at ``ceil(max_steps / steps_per_epoch)`` when
    ``max_steps`` > 0 (a budget of optimiser steps that does not depend on the data size)."""
    if max_steps <= 0 or steps_per_epoch <= 0:
        return int(max_epochs)
    return int(max(1, min(max_epochs, math.ceil(max_steps / steps_per_epoch))))


class EarlyStopping:
    """Track a validation score (higher is better); keep a copy of the best state.

    ``step(score, module)`` returns True when training should stop: ``patience`` epochs (or
    evaluations, when ``epoch`` is not given) since the best score, or more with
    ``patience_ratio`` (:meth:`wait`), improvements counting only when larger than
    ``min_delta``. ``restore(module)`` loads the best state.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, patience_ratio: float = 0.0) -> None:
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.patience_ratio = float(patience_ratio)
        self.best_score = -math.inf
        self.best_step = -1
        self.best_state: dict[str, Any] | None = None
        self._n = 0

    def step(self, score: float, module: torch.nn.Module, epoch: int | None = None) -> bool:
        """Record the score of evaluation ``epoch`` (default: the count of calls so far)."""
        at = self._n if epoch is None else int(epoch)
        score = float(score) if np.isfinite(score) else -math.inf
        if self.best_state is None or score > self.best_score + self.min_delta:
            self.best_score, self.best_step = score, at
            self.best_state = copy.deepcopy(module.state_dict())
        self._n += 1
        return at - self.best_step >= self.wait()

    def wait(self) -> int:
        """Epochs to wait after the current best: ``max(patience, ceil(ratio * (best + 1)))``."""
        grown = math.ceil(self.patience_ratio * (self.best_step + 1)) if self.patience_ratio else 0
        return max(self.patience, grown)

    def restore(self, module: torch.nn.Module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


@dataclass
class LoopSpec:
    """How long to train and how to select the model.

    Attributes:
        name: Shown in the progress bar (``"{name} epochs"``).
        max_epochs: Epochs trained at most (all of them without validation).
        patience: Epochs since the best validation score before stopping.
        min_epochs: Never stop before this many epochs.
        min_delta: Smallest improvement that counts.
        eval_every: Validate every this many epochs (and after the last one).
        patience_ratio: Patience grows to ``ceil(ratio * (best epoch + 1))`` when that is
            larger (0 = fixed patience).
    """

    name: str
    max_epochs: int
    patience: int
    min_epochs: int = 0
    min_delta: float = 0.0
    eval_every: int = 1
    patience_ratio: float = 0.0


@dataclass
class LoopResult:
    """What the loop did: per-epoch records and the selected epoch."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None


def run_epochs(module: torch.nn.Module, run_epoch: Callable[[int], float],
               validate: Callable[[], float] | None, spec: LoopSpec, ctx: FitContext
               ) -> LoopResult:
    """Train ``module`` epoch by epoch with early stopping on ``validate()``.

    Args:
        module: Put in train mode before every epoch, eval mode before every validation and
            at the end; its best ``state_dict`` is kept and restored.
        run_epoch: Runs epoch ``epoch``; returns its mean training loss.
        validate: The validation score (higher is better), called under ``torch.no_grad``;
            ``None`` trains ``spec.max_epochs`` epochs without selection. Runs under
            ``torch.inference_mode`` (no autograd bookkeeping).
        spec: Epoch budget and stopping rule.
        ctx: Where ``train_loss`` / ``val_pcc`` are logged, pruning reports and progress go.
    """
    every = max(1, int(spec.eval_every))
    epochs = int(spec.max_epochs)
    stopper = EarlyStopping(spec.patience, spec.min_delta, spec.patience_ratio)
    advance = ctx.progress(f"{spec.name} epochs", epochs)
    out = LoopResult()
    for epoch in range(epochs):
        module.train()
        loss = float(run_epoch(epoch))
        record: dict[str, float] = {"epoch": epoch, "train_loss": loss}
        ctx.log_metric("train_loss", loss, epoch)
        stop = False
        if validate is not None and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            module.eval()
            with torch.inference_mode():
                score = float(validate())
            record["val_pcc"] = score
            ctx.log_metric("val_pcc", score, epoch)
            ctx.report(score, epoch)  # lets a tuning pruner stop a bad trial
            stop = stopper.step(score, module, epoch) and epoch + 1 >= spec.min_epochs
        out.history.append(record)
        advance()
        if stop:
            break
    if validate is not None:
        stopper.restore(module)
        out.best_epoch, out.best_score = stopper.best_step, stopper.best_score
    module.eval()
    return out
