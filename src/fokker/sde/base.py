"""The :class:`SDE` base: an Ito SDE ``dX = f(X, t) dt + g(X, t) dW`` on ``[t_min, T]``.

The forward noising SDE of score-based models (Song et al. 2021, eq. 5; seed 001 eq. 15).  An ``SDE`` is an
``nn.Module`` that also satisfies torchsde's protocol (``f(t, y)``, ``g(t, y)``,
``noise_type``, ``sde_type``) so ``torchsde.sdeint(sde, x0, ts)`` runs on it
directly (torchsde wants ``y`` of shape ``(batch, d)``).

Shapes: states are ``(..., *event_shape)``; ``event_shape`` is fixed when given
at construction, else the event is the last dimension.  Time ``t`` is a float, a
0-d tensor or a tensor with the leading batch shape of ``x`` (see
:mod:`fokker.sde._time`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from .._args import check_event_shape, check_finite, check_tensor
from ..errors import ParameterError, ShapeError
from .times import TimeLike, check_time, protocol_time

if TYPE_CHECKING:  # pragma: no cover
    from .reverse import ProbabilityFlowODE, ReverseSDE

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["SDE", "ScoreFn"]


class SDE(nn.Module):
    """Base class of Ito SDEs ``dX_t = f(X_t, t) dt + g(X_t, t) dW_t`` for ``t`` in ``[t_min, T]``.

    Subclasses implement the unchecked hooks ``_drift(x, t64)`` and
    ``_diffusion(x, t64)`` (``t64``: float64 time tensor, 0-d or aligned with ``x``);
    the diffusion is *diagonal*: a tensor broadcastable to ``x`` (scalar ``g(t)``
    is the special case of a ``(B, 1, ..., 1)`` or 0-d tensor).

    Args:
        T: final time.
        t_min: first time of the domain (``0 <= t_min < T``).
        event_shape: fixed trailing shape of states, or ``None`` (any ``(..., d)``).
    """

    noise_type: str = "diagonal"  # torchsde protocol
    sde_type: str = "ito"
    #: True when the diffusion does not depend on the state (Ito = Stratonovich; Heun is valid).
    additive_noise: bool = False

    def __init__(self, T: float = 1.0, t_min: float = 0.0, event_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        for v, n in ((T, "T"), (t_min, "t_min")):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParameterError(f"{n} must be a number; got {v!r}")
        if not (0.0 <= float(t_min) < float(T)) or float(T) == float("inf"):
            raise ParameterError(f"need 0 <= t_min < T < inf; got t_min={t_min!r}, T={T!r}")
        self.T = float(T)
        self.t_min = float(t_min)
        self.event_shape = None if event_shape is None else tuple(int(s) for s in event_shape)

    # --------------------------------------------------------------- shapes
    @property
    def event_dim(self) -> int:
        """Number of trailing event dims (``len(event_shape)``; 1 when ``event_shape`` is None)."""
        return 1 if self.event_shape is None else len(self.event_shape)

    def check_x(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Validate a state tensor: floating point, trailing ``event_shape``, finite (while validating)."""
        check_tensor(x, name)
        if self.event_shape is not None:
            check_event_shape(x, self.event_shape, name)
        elif x.dim() < 1:
            raise ShapeError(f"{name} must have shape (..., d) with at least one dim; got a 0-d tensor")
        check_finite(x, name)
        return x

    def check_t(self, t: TimeLike, name: str = "t") -> None:
        """Raise :class:`~fokker.errors.DomainError` unless ``t`` lies in ``[t_min, T]``."""
        check_time(t, self.t_min, self.T, name)

    # ---------------------------------------------------------------- hooks
    def _drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _diffusion(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _t_aligned(self, t: TimeLike, x: torch.Tensor) -> torch.Tensor:
        from .times import align_time, as_time64

        return align_time(as_time64(t, x.device), x, self.event_dim, cast=False)

    # --------------------------------------------------------------- public
    def drift(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """``f(x, t)``; ``x``: ``(..., *event)``, returns the same shape."""
        self.check_x(x)
        self.check_t(t)
        return self._drift(x, self._t_aligned(t, x))

    def diffusion(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """``g(x, t)`` (diagonal), broadcastable to ``x`` (a scalar ``g(t)`` is 0-d or ``(B, 1, ...)``)."""
        self.check_x(x)
        self.check_t(t)
        return self._diffusion(x, self._t_aligned(t, x))

    # ----------------------------------------------------- torchsde protocol
    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """torchsde drift ``f(t, y)`` (``t`` 0-d, ``y`` ``(batch, d)``), unchecked."""
        return self._drift(y, protocol_time(t))

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """torchsde diagonal diffusion ``g(t, y)`` of shape ``y.shape``, unchecked."""
        return self._diffusion(y, protocol_time(t)).expand_as(y)

    # ---------------------------------------------------------- reversal
    def reverse(self, score_fn: ScoreFn) -> "ReverseSDE":
        """Time reversal with the score ``score_fn(x, t) ~ grad log p_t(x)`` (Anderson 1982; seed 001 eq. 59)."""
        from .reverse import ReverseSDE

        return ReverseSDE(self, score_fn)

    def probability_flow(self, score_fn: ScoreFn) -> "ProbabilityFlowODE":
        """Probability-flow ODE ``dx/dt = f - g^2/2 score`` (Song et al. 2021, eq. 13), a torchdiffeq right-hand side."""
        from .reverse import ProbabilityFlowODE

        return ProbabilityFlowODE(self, score_fn)

    def extra_repr(self) -> str:
        return f"T={self.T:g}, t_min={self.t_min:g}"
