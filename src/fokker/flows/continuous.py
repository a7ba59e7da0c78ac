"""Continuous normalizing flow, FFJORD (Chen et al. 2018; Grathwohl et al. 2019).

Instantaneous change of variables (Chen et al. 2018, theorem 1; Grathwohl et al. 2019,
sec. 2; seed 002, eq. 17): a state moved by an ODE changes its log-density by the trace
of the Jacobian of the vector field,

.. math::

    \\frac{dx}{dt} = f(t, x), \\qquad
    \\frac{d}{dt}\\log\\left|\\det \\frac{\\partial x(t)}{\\partial x(0)}\\right| = \\operatorname{tr}\\frac{\\partial f}{\\partial x}(t, x(t))
    \\;\\Big(= \\mathbb{E}_{\\epsilon}\\big[\\epsilon^\\top \\tfrac{\\partial f}{\\partial x} \\epsilon\\big]\\Big).

The layer maps noise ``z = x(0)`` to data ``x(T)``; its log-det is
``int_0^T tr(df/dx) dt`` and the inverse integrates the same augmented ODE from ``T``
back to 0 (one solve gives both the preimage and the log-det, so ``log_prob`` costs
one solve).  For a linear field ``f = A x`` the log-det is exactly ``T tr(A)``.

* trace: ``"exact"`` (``D`` vector-Jacobian products per evaluation; exact up to the
  solver tolerance), ``"hutchinson"`` (Grathwohl et al. 2019, sec. 3.1: one probe ``eps`` per
  solve, Rademacher or Gaussian, held fixed along the trajectory; an unbiased estimate),
  or ``"auto"`` (the default: exact for ``D <= exact_trace_max_dim = 32``, Hutchinson
  above, where ``D`` VJPs per step cost too much).
* error control: ``torchdiffeq.odeint`` (``dopri5`` by default) on the augmented state
  ``(x, log-det)`` with the *max* norm, ``|error_i| <= atol + rtol max(|y0_i|, |y1_i|)``
  for every coordinate of every sample and the log-det, the norm of zuko's ODE solver.
  (torchdiffeq's default RMS norm averages the error over the batch, so single samples
  could be off by ``sqrt(batch size)`` times the tolerance.)  Forward and inverse solve
  the same ODE with the same ``rtol``/``atol``, in opposite directions, so a round trip
  is accurate to a small multiple of the tolerance.  With ``adjoint=True``,
  ``torchdiffeq.odeint_adjoint`` (memory O(1) in the number of steps; Chen et al. 2018, algorithm 1; seed 002 Alg. 1).
* ``layer.nfe`` is the number of function evaluations of the last solve, ``layer.total_nfe``
  the running total (adjoint backward passes included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from .. import _random
from .._args import check_int, check_last_dim, check_positive, check_tensor
from ..divergence import divergence_exact, divergence_hutchinson, rademacher
from ..errors import ParameterError
from ..nets import MLP, check_hidden
from .base import Bijection

__all__ = ["ContinuousFlow", "TimeMLP"]

_TRACES = ("auto", "exact", "hutchinson")
_NOISES = ("rademacher", "gaussian")
#: Largest event size for which ``trace="auto"`` uses the exact trace.
EXACT_TRACE_MAX_DIM = 32


def _max_norm(state: Sequence[Tensor]) -> Tensor:
    """Infinity norm over every entry of every tensor of the ODE state (zuko's error norm)."""
    return torch.stack([s.abs().max() for s in state]).max()


class TimeMLP(nn.Module):
    """Time-conditioned vector field ``f(t, x) = MLP([x, t])`` (the dynamics network of Grathwohl et al. 2019).

    A :class:`fokker.nets.MLP` on ``features + 1`` inputs with ``Softplus`` activations
    (smooth, so the second derivatives that training through the trace needs exist).
    Shapes: ``t`` a 0-d tensor, ``x`` ``(..., features)`` -> ``(..., features)``.

    Args:
        features: size of ``x``.
        hidden: hidden widths.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.features = check_int(features, "features")
        self.net = MLP(features + 1, features, check_hidden(hidden), activation=nn.Softplus)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        tt = t.to(x).expand(*x.shape[:-1], 1)
        return self.net(torch.cat([x, tt], dim=-1))


class _Dynamics(nn.Module):
    """Augmented right-hand side for torchdiffeq.

    State ``(x, l)`` -> ``(f(t, x), tr df/dx)`` (exact trace) or ``(x, l, eps)`` ->
    ``(f(t, x), eps^T (df/dx) eps, 0)`` (Hutchinson; the probe rides along the state with
    zero derivative so that the adjoint backward pass sees the same probe).
    """

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.nfe = 0

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = state[0]
        self.nfe += 1
        grad_on = torch.is_grad_enabled()
        with torch.enable_grad():
            if not (grad_on and x.requires_grad):
                x = x.detach().requires_grad_(True)
            dx = self.field(t, x)
            if len(state) == 2:
                div = divergence_exact(dx, x, create_graph=grad_on)
            else:
                div = divergence_hutchinson(dx, x, state[2], create_graph=grad_on)
        if not grad_on:
            dx, div = dx.detach(), div.detach()
        if len(state) == 2:
            return dx, div
        return dx, div, torch.zeros_like(state[2])


class ContinuousFlow(Bijection):
    """FFJORD layer (Grathwohl et al. 2019; Chen et al. 2018): noise ``x(0)`` -> data ``x(T)`` along ``dx/dt = f(t, x)``.

    ``log|det dx(T)/dx(0)| = int_0^T tr(df/dx)(t, x(t)) dt`` (Chen et al. 2018, theorem 1).

    Args:
        features: event size ``D``; inputs ``(..., D)``.
        vector_field: module ``f(t, x) -> dx/dt`` (``t`` a 0-d tensor, ``x`` of shape
            ``(..., D)``); default :class:`TimeMLP` with ``hidden``.
        hidden: widths of the default field.
        T: integration time ``T > 0``.
        trace: ``"auto"`` (exact for ``D <= exact_trace_max_dim``, else Hutchinson),
            ``"exact"`` or ``"hutchinson"``.
        exact_trace_max_dim: largest ``D`` for which ``"auto"`` uses the exact trace (32).
        noise: Hutchinson probe, ``"rademacher"`` or ``"gaussian"``.
        method, rtol, atol, options: passed to ``torchdiffeq.odeint`` (the error norm is the
            max norm unless ``options`` names another ``norm``); ``rtol`` and ``atol`` are
            floored at ``4 eps`` of the input dtype, which float32 can still meet.
        adjoint: use ``odeint_adjoint`` for gradients.

    The log-det is exact up to the ODE tolerance with the exact trace, and an unbiased
    estimate with Hutchinson's (then ``call_and_ladj`` / ``inverse_and_ladj`` take
    ``generator=`` for the probe; :attr:`stochastic_log_det` is True).

    Example:
        >>> cnf = ContinuousFlow(2, hidden=(16,), rtol=1e-6, atol=1e-6)
        >>> x, ladj = cnf.call_and_ladj(torch.randn(8, 2))
        >>> cnf.nfe > 0
        True
    """

    def __init__(
        self,
        features: int,
        vector_field: nn.Module | None = None,
        hidden: Sequence[int] = (64, 64),
        T: float = 1.0,
        trace: str = "auto",
        exact_trace_max_dim: int = EXACT_TRACE_MAX_DIM,
        noise: str = "rademacher",
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        options: dict[str, Any] | None = None,
        adjoint: bool = False,
    ) -> None:
        super().__init__(event_dim=1)
        self.features = check_int(features, "features")
        check_hidden(hidden)
        check_positive(T, "T")
        check_positive(rtol, "rtol")
        check_positive(atol, "atol")
        if trace not in _TRACES:
            raise ParameterError(f"trace must be one of {_TRACES}; got {trace!r}")
        if noise not in _NOISES:
            raise ParameterError(f"noise must be one of {_NOISES}; got {noise!r}")
        self.T = float(T)
        self.trace = trace
        self.exact_trace_max_dim = check_int(exact_trace_max_dim, "exact_trace_max_dim", minimum=0)
        self.noise = noise
        self.method = method
        self.rtol, self.atol = float(rtol), float(atol)
        self.options = dict(options or {})
        self.adjoint = bool(adjoint)
        self.dynamics = _Dynamics(vector_field if vector_field is not None else TimeMLP(features, hidden))
        self.nfe = 0

    @property
    def vector_field(self) -> nn.Module:
        return self.dynamics.field

    @property
    def total_nfe(self) -> int:
        """Function evaluations since construction (adjoint backward passes included)."""
        return self.dynamics.nfe

    @property
    def exact_trace(self) -> bool:
        """Whether the log-det uses the exact trace (else Hutchinson's estimate)."""
        return self.trace == "exact" or (self.trace == "auto" and self.features <= self.exact_trace_max_dim)

    @property
    def stochastic_log_det(self) -> bool:  # type: ignore[override]
        return not self.exact_trace

    def _solve(self, x0: Tensor, t0: float, t1: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Integrate ``(x, l)`` from ``t0`` to ``t1`` with ``l(t0) = 0``; returns ``(x(t1), l(t1))``."""
        check_tensor(x0, "x")
        check_last_dim(x0, self.features, "x")
        zeros = torch.zeros(x0.shape[:-1], dtype=x0.dtype, device=x0.device)
        if x0.numel() == 0:
            self.nfe = 0
            return x0.clone(), zeros
        dyn = self.dynamics
        t = torch.tensor([t0, t1], dtype=x0.dtype, device=x0.device)
        state: tuple[Tensor, ...] = (x0, zeros)
        if not self.exact_trace:
            probe = rademacher(x0, generator) if self.noise == "rademacher" else _random.randn_like(x0, generator)
            state = (*state, probe)
        start = dyn.nfe
        options = {"norm": _max_norm, **self.options}
        # a tolerance below the dtype's resolution cannot be met: floor both at 4 eps
        floor = 4 * torch.finfo(x0.dtype).eps
        rtol, atol = max(self.rtol, floor), max(self.atol, floor)
        kwargs: dict[str, Any] = dict(rtol=rtol, atol=atol, method=self.method, options=options)
        if self.method not in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"):
            kwargs["options"] = self.options or None  # fixed-step solvers take no norm
        if self.adjoint:
            params = tuple(p for p in dyn.parameters() if p.requires_grad)
            sol = odeint_adjoint(dyn, state, t, adjoint_params=params, **kwargs)
        else:
            sol = odeint(dyn, state, t, **kwargs)
        self.nfe = dyn.nfe - start
        return sol[0][-1], sol[1][-1]

    def call_and_ladj(
        self, z: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``x(T)`` from ``x(0) = z`` and ``int_0^T tr(df/dx) dt``."""
        self._check_context(context)
        return self._solve(z, 0.0, self.T, generator)

    def inverse_and_ladj(
        self, x: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``x(0)`` from ``x(T) = x`` and ``-int_0^T tr(df/dx) dt`` (one backward-in-time solve)."""
        self._check_context(context)
        return self._solve(x, self.T, 0.0, generator)

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, T={self.T}, trace={self.trace!r}, method={self.method!r}, "
            f"rtol={self.rtol}, atol={self.atol}, adjoint={self.adjoint}"
        )
