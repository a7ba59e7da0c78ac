r"""Drift and diffusion modules for neural SDEs: ``net(x, t) -> (batch, d)``.

Every module here takes a state ``x`` of shape ``(batch, d)`` and a time ``t`` of shape
``(batch,)`` (the caller broadcasts a scalar time) and returns ``(batch, d)``; a drift of a
*posterior* SDE also takes a context ``(batch, context_dim)`` (:class:`DriftNet` with
``context_dim > 0``).

* :class:`DriftNet` -- an MLP on ``[x, t(, context)]`` (softplus activations: smooth, so the
  stochastic adjoint's second derivatives exist).
* :class:`DiffusionNet` -- ``g = softplus(MLP(x, t)) + min_diffusion``: positive by
  construction, with a floor that keeps the Euler transition density and the Girsanov ratio
  ``(f_p - f_q) / g`` finite.  ``coordinatewise=True`` makes ``g_i`` depend on ``x_i`` and ``t``
  only (one small MLP per coordinate, as in the latent SDE of Li et al. 2020), which the diagonal-noise
  Ito adjoint of torchsde assumes.
* Parametric modules for maximum likelihood with confidence intervals:
  :class:`LinearDrift` (Ornstein-Uhlenbeck), :class:`PolynomialDrift` (double-well Langevin),
  :class:`ConstantDiffusion`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .._args import check_int, check_positive
from ..errors import ParameterError

__all__ = ["DriftNet", "DiffusionNet", "LinearDrift", "PolynomialDrift", "ConstantDiffusion"]


def _mlp(inp: int, out: int, hidden: int, num_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = inp
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden), nn.Softplus()]
        width = hidden
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


def _per_dim(value: float | torch.Tensor, dim: int, name: str) -> torch.Tensor:
    v = torch.as_tensor(value, dtype=torch.get_default_dtype()).detach().clone()
    if v.dim() == 0:
        v = v.expand(dim).clone()
    if v.shape != (dim,):
        raise ParameterError(f"{name} must be a number or a tensor of shape ({dim},); got shape {tuple(v.shape)}")
    return v


class DriftNet(nn.Module):
    """Neural drift ``f(x, t[, context])``: an MLP on the concatenation ``[x, t(, context)]``.

    Args:
        dim: state dimension ``d``.
        hidden: width of the hidden layers.
        num_layers: number of hidden layers.
        context_dim: size of an extra context input (0: none), e.g. the encoder summary of a
            latent SDE's posterior drift.
    """

    def __init__(self, dim: int, hidden: int = 64, num_layers: int = 2, context_dim: int = 0) -> None:
        super().__init__()
        check_int(dim, "dim")
        check_int(hidden, "hidden")
        check_int(num_layers, "num_layers")
        check_int(context_dim, "context_dim", minimum=0)
        self.dim, self.context_dim = dim, context_dim
        self.net = _mlp(dim + 1 + context_dim, dim, hidden, num_layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        parts = [x, t.to(x.dtype)[:, None]]
        if self.context_dim:
            if context is None:
                raise ParameterError("this DriftNet was built with context_dim > 0 and needs a context")
            parts.append(context)
        return self.net(torch.cat(parts, dim=-1))


class DiffusionNet(nn.Module):
    """Neural diagonal diffusion ``g(x, t) = softplus(MLP(x, t)) + min_diffusion > 0``.

    Args:
        dim: state dimension ``d``.
        hidden: width of the hidden layers.
        num_layers: number of hidden layers (``coordinatewise=False``; the coordinatewise nets
            have one hidden layer each).
        min_diffusion: the floor added after the softplus (> 0).
        coordinatewise: ``g_i(x_i, t)``, one MLP per coordinate (as in Li et al. 2020): the
            diffusion's Jacobian is diagonal, as torchsde's diagonal-noise Ito adjoint assumes.
    """

    def __init__(
        self, dim: int, hidden: int = 32, num_layers: int = 2, min_diffusion: float = 1e-3, coordinatewise: bool = False
    ) -> None:
        super().__init__()
        check_int(dim, "dim")
        check_int(hidden, "hidden")
        check_int(num_layers, "num_layers")
        check_positive(min_diffusion, "min_diffusion")
        self.dim, self.min_diffusion, self.coordinatewise = dim, float(min_diffusion), bool(coordinatewise)
        if self.coordinatewise:
            bound = 1.0 / math.sqrt(2.0)
            self.w1 = nn.Parameter(torch.empty(dim, 2, hidden).uniform_(-bound, bound))
            self.b1 = nn.Parameter(torch.empty(dim, hidden).uniform_(-bound, bound))
            self.w2 = nn.Parameter(torch.empty(dim, hidden).uniform_(-1 / math.sqrt(hidden), 1 / math.sqrt(hidden)))
            self.b2 = nn.Parameter(torch.zeros(dim))
        else:
            self.net = _mlp(dim + 1, dim, hidden, num_layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x.dtype)
        if self.coordinatewise:
            # (batch, d, hidden): coordinate i sees only x_i and t
            h = F.softplus(x[..., None] * self.w1[:, 0] + t[:, None, None] * self.w1[:, 1] + self.b1)
            raw = (h * self.w2).sum(-1) + self.b2
        else:
            raw = self.net(torch.cat([x, t[:, None]], dim=-1))
        return F.softplus(raw) + self.min_diffusion


class LinearDrift(nn.Module):
    """Ornstein-Uhlenbeck drift ``f(x, t) = -theta * x + mu`` (elementwise; Uhlenbeck & Ornstein 1930).

    The stationary mean is ``mu / theta``.  ``theta`` and ``mu`` are ``(d,)`` parameters, so
    :meth:`NeuralSDE.confidence_intervals` reports intervals for each coordinate.

    Args:
        dim: state dimension ``d``.
        theta, mu: initial values (numbers or ``(d,)`` tensors).
    """

    def __init__(self, dim: int, theta: float | torch.Tensor = 1.0, mu: float | torch.Tensor = 0.0) -> None:
        super().__init__()
        check_int(dim, "dim")
        self.dim = dim
        self.theta = nn.Parameter(_per_dim(theta, dim, "theta"))
        self.mu = nn.Parameter(_per_dim(mu, dim, "mu"))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.mu - self.theta * x


class PolynomialDrift(nn.Module):
    """Double-well Langevin drift ``f(x, t) = a x - b x^3 = -U'(x)`` with ``U(x) = b x^4/4 - a x^2/2``.

    The overdamped Langevin dynamics of a symmetric double well (Kramers 1940): minima at
    ``x = +-sqrt(a / b)``.  ``a``, ``b`` are ``(d,)`` parameters (elementwise).

    Args:
        dim: state dimension ``d``.
        a, b: initial values (numbers or ``(d,)`` tensors).
    """

    def __init__(self, dim: int, a: float | torch.Tensor = 1.0, b: float | torch.Tensor = 1.0) -> None:
        super().__init__()
        check_int(dim, "dim")
        self.dim = dim
        self.a = nn.Parameter(_per_dim(a, dim, "a"))
        self.b = nn.Parameter(_per_dim(b, dim, "b"))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.a * x - self.b * x**3


class ConstantDiffusion(nn.Module):
    """State- and time-independent diagonal diffusion ``g = exp(log_sigma)`` (Kloeden & Platen 1992, sec. 4.4).

    Parameterised by ``log_sigma`` (``(d,)``) so it stays positive; intervals from
    :meth:`NeuralSDE.confidence_intervals` are for ``log_sigma`` (exponentiate the bounds for
    ``sigma``).

    Args:
        dim: state dimension ``d``.
        sigma: initial (or fixed) value, positive (number or ``(d,)`` tensor).
        learnable: ``False`` keeps ``sigma`` fixed (a buffer, not a parameter).
    """

    def __init__(self, dim: int, sigma: float | torch.Tensor = 1.0, learnable: bool = True) -> None:
        super().__init__()
        check_int(dim, "dim")
        s = _per_dim(sigma, dim, "sigma")
        if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
            raise ParameterError(f"sigma must be positive and finite; got {s.tolist()}")
        self.dim = dim
        if learnable:
            self.log_sigma = nn.Parameter(s.log())
        else:
            self.register_buffer("log_sigma", s.log())

    @property
    def sigma(self) -> torch.Tensor:
        """``exp(log_sigma)``, shape ``(d,)``."""
        return self.log_sigma.exp()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.log_sigma.exp().expand_as(x)
