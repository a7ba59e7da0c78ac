"""Radial flow (Rezende & Mohamed 2015) with a closed-form inverse.

Seed 002, eq. (10) (the extracted formula drops a ``beta`` in the last factor;
this is the derivation):

.. math::

    f(z) = z + \\beta h(\\alpha, r)(z - z_0), \\quad r = \\|z - z_0\\|, \\quad h = 1/(\\alpha + r)

    \\log|\\det \\partial f/\\partial z| = (D - 1)\\log(1 + \\beta h) + \\log(1 + \\beta h + \\beta h'(\\alpha, r)\\, r)
                                      = (D - 1)\\log(1 + \\beta h) + \\log(1 + \\beta\\alpha/(\\alpha + r)^2)

with ``alpha = softplus(.) > 0`` and ``beta = -alpha + softplus(.) > -alpha`` (invertibility).

Inverse: ``y - z0 = (z - z0)(1 + beta/(alpha + r))`` with a positive factor, so
``r_y = ||y - z0||`` satisfies ``r^2 + (alpha + beta - r_y) r - alpha r_y = 0`` whose
unique non-negative root is taken with the cancellation-free quadratic formula;
then ``z = z0 + (y - z0) / (1 + beta/(alpha + r))``.  Exact for every ``y``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._args import check_int, check_last_dim, check_tensor
from .base import Bijection

__all__ = ["Radial"]


class Radial(Bijection):
    """Radial layer ``y = z + beta (z - z0) / (alpha + ||z - z0||)`` (noise -> data).

    Rezende & Mohamed (2015), sec. 4.1 and appendix A (``beta >= -alpha``); log-det as in the
    module docstring (seed 002 eq. 10, corrected).

    Args:
        features: event size ``D``; inputs have shape ``(..., D)``.

    Forward, inverse and log-det are closed form (exact).  At ``z == z0`` the norm
    is not differentiable (measure-zero set).

    Example:
        >>> t = Radial(2)
        >>> y = torch.randn(4, 2)
        >>> torch.allclose(t(t.inv(y)), y, atol=1e-5)
        True
    """

    def __init__(self, features: int) -> None:
        super().__init__(event_dim=1)
        self.features = dim = check_int(features, "features")
        self.z0 = nn.Parameter(torch.empty(dim))
        self.alpha_raw = nn.Parameter(torch.empty(()))
        self.beta_raw = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / self.features**0.5
        nn.init.uniform_(self.z0, -bound, bound)
        nn.init.uniform_(self.alpha_raw, -bound, bound)
        nn.init.uniform_(self.beta_raw, -bound, bound)

    def alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)`` with ``alpha > 0`` and ``beta > -alpha``."""
        alpha = F.softplus(self.alpha_raw)
        return alpha, -alpha + F.softplus(self.beta_raw)

    def _check(self, x: torch.Tensor, name: str) -> None:
        check_tensor(x, name)
        check_last_dim(x, self.features, name)

    def _ladj_at(self, r: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``(D-1) log(1 + beta h) + log(1 + beta alpha h^2)``, ``h = 1/(alpha + r)``, ``r = ||z - z0||``."""
        h = 1 / (alpha + r)
        return (self.features - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h * h)

    def call_and_ladj(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``y = z + beta (z - z0)/(alpha + r)`` and its exact log-det."""
        self._check_context(context)
        self._check(z, "z")
        alpha, beta = self.alpha_beta()
        diff = z - self.z0
        r = diff.norm(dim=-1, keepdim=True)
        return z + beta * diff / (alpha + r), self._ladj_at(r.squeeze(-1), alpha, beta)

    def inverse_and_ladj(self, y: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form inverse (radius from a quadratic) and ``-log|det|`` at the preimage."""
        self._check_context(context)
        self._check(y, "y")
        alpha, beta = self.alpha_beta()
        diff = y - self.z0
        r_y = diff.norm(dim=-1, keepdim=True)
        B = alpha + beta - r_y
        disc = torch.sqrt(B * B + 4 * alpha * r_y)
        # r = (-B + disc)/2, written as 2 alpha r_y/(B + disc) when B >= 0 (no cancellation)
        tiny = torch.finfo(y.dtype).tiny
        r_pos = 2 * alpha * r_y / (B + disc).clamp_min(tiny)
        r_neg = 0.5 * (disc - B)
        r = torch.where(B >= 0, r_pos, r_neg)
        z = self.z0 + diff / (1 + beta / (alpha + r))
        return z, -self._ladj_at(r.squeeze(-1), alpha, beta)

    def extra_repr(self) -> str:
        return f"features={self.features}"
