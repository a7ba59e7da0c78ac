"""Everything one optimizer step changes: model, optimizer, scheduler, EMA and batch order."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .data import BatchSource


@dataclass
class TrainState:
    """The mutable state of a run, with the two views :func:`fokker.train.fit` needs.

    * :meth:`weights` / :meth:`load_weights`: a deep copy of model, optimizer, scheduler and
      EMA, the "last good state" the NaN guard returns to;
    * :meth:`state_dict` / :meth:`load_state_dict`: the same plus the batch order, what a
      checkpoint stores.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    ema: AveragedModel | None
    batches: BatchSource

    def update(self) -> None:
        """Apply the gradients: optimizer step, then scheduler step and EMA update."""
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def _weights(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def weights(self) -> dict[str, Any]:
        """A deep copy of model, optimizer, scheduler and EMA state (later steps cannot alter it)."""
        return copy.deepcopy(self._weights())

    def load_weights(self, weights: dict[str, Any]) -> None:
        """Restore what :meth:`weights` returned (from a copy: the optimizer aliases loaded tensors)."""
        weights = copy.deepcopy(weights)
        self.model.load_state_dict(weights["model"])
        self.optimizer.load_state_dict(weights["optimizer"])
        if self.scheduler is not None and weights.get("scheduler") is not None:
            self.scheduler.load_state_dict(weights["scheduler"])
        if self.ema is not None and weights.get("ema") is not None:
            self.ema.load_state_dict(weights["ema"])

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, scheduler, EMA and batch order (references, for saving right away)."""
        return {**self._weights(), "data": self.batches.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_weights(state)
        self.batches.load_state_dict(state["data"])
