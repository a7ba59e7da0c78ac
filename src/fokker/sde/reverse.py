"""Time reversal of an SDE and its probability-flow ODE (seed 001 eqs. 39, 59; seed 004).

For ``dX = f(X, t) dt + g(t) dW`` with marginals ``p_t``, the process
``Y_s = X_{T - s}`` solves (Anderson 1982; seed 001 eq. 59)

.. math::

    dY_s = \\big[-f(Y_s, T - s) + g(T - s)^2\\, \\nabla \\log p_{T-s}(Y_s)\\big]\\, ds
           + g(T - s)\\, d\\bar W_s, \\qquad s \\in [0,\\, T - t_{\\min}],

and the deterministic probability-flow ODE (seed 004; Song et al. 2021 eq. 13)

.. math::

    \\frac{dx}{dt} = f(x, t) - \\tfrac12 g(t)^2\\, \\nabla \\log p_t(x)

has the same marginals ``p_t`` (integrate it backwards, ``t`` from ``T`` to ``t_min``).
Both are exact given the exact score; ``score_fn(x, t)`` is any callable, called with
``t`` a tensor in ``x``'s dtype/device, either 0-d or with ``x``'s leading batch shape.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import SDE, ScoreFn
from .times import TimeLike, align_time, as_time64, check_time, protocol_time

__all__ = ["ReverseSDE", "ProbabilityFlowODE"]


def _score_time(t: torch.Tensor, x: torch.Tensor, event_dim: int) -> torch.Tensor:
    """Aligned float64 time -> the ``t`` handed to ``score_fn`` (0-d or leading batch shape)."""
    if t.dim() > 0:
        t = t.reshape(t.shape[: x.dim() - event_dim])
    return t.to(dtype=x.dtype)


class ReverseSDE(SDE):
    """The time-reversed SDE in reversed time ``s = T - t``, torchsde-compatible.

    ``drift(y, s) = -f(y, T - s) + g(T - s)^2 score_fn(y, T - s)``, ``diffusion = g(T - s)``;
    domain ``s`` in ``[0, T - t_min]`` of the forward SDE.

    Example:
        >>> from fokker.sde import VPSDE
        >>> vp = VPSDE()
        >>> rev = vp.reverse(lambda x, t: -x)      # the score of N(0, I) = p_t for x0 = 0
        >>> rev.drift(torch.ones(3, 2), 0.0).shape
        torch.Size([3, 2])
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn) -> None:
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a fokker.sde.SDE; got {type(sde).__name__}")
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable (x, t) -> score; got {type(score_fn).__name__}")
        super().__init__(T=sde.T - sde.t_min, t_min=0.0, event_shape=sde.event_shape)
        self.forward_sde = sde
        self.score_fn = score_fn
        self.noise_type = sde.noise_type
        self.additive_noise = sde.additive_noise

    @property
    def event_dim(self) -> int:  # type: ignore[override]
        return self.forward_sde.event_dim

    def forward_time(self, s: TimeLike) -> torch.Tensor:
        """``t = T - s`` (float64) for reversed time ``s``."""
        return self.forward_sde.T - as_time64(s)

    def _drift(self, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        fwd = self.forward_sde
        t = fwd.T - s
        g = fwd._diffusion(y, t)
        score = self.score_fn(y, _score_time(t, y, self.event_dim))
        return -fwd._drift(y, t) + (g * g) * score

    def _diffusion(self, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.forward_sde._diffusion(y, self.forward_sde.T - s)

    def extra_repr(self) -> str:
        return f"forward={type(self.forward_sde).__name__}, s in [0, {self.T:g}]"


class ProbabilityFlowODE(nn.Module):
    """Right-hand side ``dx/dt = f(x, t) - g(t)^2 / 2 * score_fn(x, t)`` in forward time.

    Call it as ``ode(t, x)`` (torchdiffeq's ``func(t, y)``): ``torchdiffeq.odeint(ode, x_T, ts)``
    with ``ts`` decreasing from ``T`` to ``t_min`` transports ``p_T`` to ``p_{t_min}``.
    """

    is_ode = True

    def __init__(self, sde: SDE, score_fn: ScoreFn) -> None:
        super().__init__()
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a fokker.sde.SDE; got {type(sde).__name__}")
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable (x, t) -> score; got {type(score_fn).__name__}")
        self.sde = sde
        self.score_fn = score_fn
        self.T = sde.T
        self.t_min = sde.t_min

    @property
    def event_dim(self) -> int:
        return self.sde.event_dim

    def _drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = self.sde._diffusion(x, t)
        score = self.score_fn(x, _score_time(t, x, self.event_dim))
        return self.sde._drift(x, t) - 0.5 * (g * g) * score

    def drift(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """``f(x, t) - g(t)^2/2 score(x, t)``; ``x`` ``(..., *event)``, ``t`` in ``[t_min, T]``."""
        self.sde.check_x(x)
        check_time(t, self.t_min, self.T)
        return self._drift(x, align_time(as_time64(t, x.device), x, self.event_dim, cast=False))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """torchdiffeq protocol ``func(t, y)``, unchecked."""
        return self._drift(x, protocol_time(t))

    def extra_repr(self) -> str:
        return f"sde={type(self.sde).__name__}, t in [{self.t_min:g}, {self.T:g}]"
