"""The NaN guard of :func:`fokker.train.fit`: skip bad steps, return to the last good state.

A step whose loss or gradient norm is non-finite is skipped (no optimizer step).  The
guard gives up -- restores the last good state and raises
:class:`~fokker.errors.TrainingDivergedError` -- when

* more than ``max_bad_steps`` steps in a row were skipped, or
* the parameters themselves are non-finite: checked at every skipped step (skipping cannot
  repair them), at every checkpoint step before the state is declared good, and when the
  run ends, so no run returns with non-finite weights.

The *last good state* is a deep copy of model, optimizer, scheduler and EMA taken at
the last checkpoint step whose parameters were finite (the state at the start of the run
before the first one).  Parameter checks read one flag to the host; they run only at those
points, never on a good step in between.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..errors import TrainingDivergedError
from .state import TrainState


def parameters_finite(params: list[nn.Parameter]) -> bool:
    """Whether every entry of every parameter is finite (one host sync)."""
    if not params:
        return True
    return bool(torch.stack([torch.isfinite(p.detach()).all() for p in params]).all())


class NanGuard:
    """Counts skipped steps and keeps the last good state of a run (see the module docstring)."""

    def __init__(
        self, state: TrainState, max_bad_steps: int, step: int, checkpoint: Path | None = None, bad_steps: int = 0
    ) -> None:
        self.state = state
        self.params = [p for p in state.model.parameters() if p.requires_grad]
        self.max_bad_steps = max_bad_steps
        self.checkpoint = checkpoint
        self.consecutive = 0
        self.total = bad_steps  # skipped steps in the whole run (a resumed run continues the count)
        self.good = state.weights()
        self.good_step = step

    def check_step(self, step: int, loss: float, grad_norm: float) -> bool:
        """``True`` when step ``step`` may be applied; ``False`` to skip it; raises when the run diverged."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.total += 1
        if not parameters_finite(self.params):
            self._diverged(f"the parameters are non-finite at step {step}")
        if self.consecutive > self.max_bad_steps:
            self._diverged(f"{self.consecutive} consecutive non-finite losses/gradients at step {step}")
        return False

    @property
    def in_bad_streak(self) -> bool:
        """Whether the latest step was skipped (no checkpoint or validation is taken then)."""
        return self.consecutive > 0

    def check_parameters(self, step: int) -> None:
        """Raise (after restoring the last good state) unless every parameter is finite at ``step``."""
        if not parameters_finite(self.params):
            self._diverged(f"the parameters became non-finite by step {step}")

    def mark_good(self, step: int) -> None:
        """Declare the current state good (it becomes the state to return to); raises if its parameters are not finite."""
        self.check_parameters(step)
        self.good = self.state.weights()
        self.good_step = step

    def _diverged(self, why: str) -> None:
        self.state.load_weights(self.good)
        where = f"; {self.checkpoint} is never written from a bad state" if self.checkpoint is not None else ""
        raise TrainingDivergedError(
            f"training diverged: {why}; model, optimizer, scheduler and EMA restored to the last good state "
            f"(step {self.good_step}){where}"
        )
