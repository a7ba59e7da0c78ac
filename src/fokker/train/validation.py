"""Validation loss and early stopping for :func:`fokker.train.fit`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .data import chunks, to_device

LossOf = Callable[[nn.Module, Any], torch.Tensor]


def heldout_loss(
    model: nn.Module, loss_of: LossOf, data: Any, kind: str, batch_size: int, device: torch.device
) -> float:
    """The loss on held-out ``data`` in eval mode without gradients.

    A tensor, tuple or Dataset is evaluated whole, in order, in chunks of ``batch_size``
    rows; the result is the row-weighted mean of the chunk losses (the mean over all rows
    for a loss that averages over its batch).  A callable is asked for one batch of
    ``batch_size``.
    """
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            if kind == "callable":
                return float(loss_of(model, to_device(data(batch_size), device)))
            total, rows = 0.0, 0
            for batch, k in chunks(data, kind, batch_size):
                total += float(loss_of(model, to_device(batch, device))) * k
                rows += k
            return total / rows
    finally:
        model.train(was)


class EarlyStopping:
    """Tracks the lowest validation loss; says stop after ``patience`` evaluations without a lower one.

    With ``patience=None`` it only records the best step (training never stops early and no
    weights are copied).  Otherwise a copy of the model's weights at the best evaluation is
    kept, and :meth:`restore_best` puts them back.
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best = math.inf
        self.best_step: int | None = None
        self.best_weights: dict[str, Any] | None = None
        self.since_best = 0

    def update(self, step: int, value: float, model: nn.Module) -> bool:
        """Record the validation loss ``value`` at ``step``; ``True`` means: stop now."""
        if value < self.best:
            self.best, self.best_step, self.since_best = value, step, 0
            if self.patience is not None:
                self.best_weights = copy.deepcopy(model.state_dict())
            return False
        self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience

    def restore_best(self, model: nn.Module) -> None:
        """Load the weights of the best evaluation into ``model`` (no-op if none was kept)."""
        if self.best_weights is not None:
            model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "best_weights": self.best_weights,
            "since_best": self.since_best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state["best"], state["best_step"]
        self.best_weights, self.since_best = state["best_weights"], state["since_best"]
