"""The banana: Haario, Saksman & Tamminen's (1999) twisted Gaussian (normalized, exact samples).

With ``C = diag(sigma^2, 1, ..., 1)`` and the volume-preserving twist
``phi(x) = (x_1, x_2 + b (x_1^2 - sigma^2), x_3, ..., x_d)`` (unit Jacobian determinant),

.. math::   \\pi(x) = \\mathcal N(\\phi(x);\\, 0,\\, C), \\qquad \\log Z = 0 .

Exact samples: ``z ~ N(0, C)``, ``x = phi^{-1}(z) = (z_1, z_2 - b (z_1^2 - sigma^2), z_3, ...)``.
Haario et al. use ``sigma = 10`` (variance 100) with ``b = 0.03`` ("moderately twisted") or
``b = 0.1`` ("strongly twisted", the default here).  Score (chain rule, ``u = phi(x)``):
``d/dx_1 = -u_1 / sigma^2 - 2 b x_1 u_2``, ``d/dx_2 = -u_2``, ``d/dx_i = -x_i``.
"""

from __future__ import annotations

import math

import torch

from .._args import check_int, check_positive
from .._random import randn
from ..errors import ParameterError
from .base import LOG_2PI, Target

__all__ = ["Banana"]


class Banana(Target):
    """Twisted Gaussian in ``R^dim`` (``dim >= 2``); ``curvature`` ``b`` and ``scale`` ``sigma`` of ``x_1``.

    Haario, Saksman & Tamminen (1999), "Adaptive proposal distribution for random walk
    Metropolis algorithm", Computational Statistics 14: the banana-shaped test density
    ``N(phi(x); 0, diag(sigma^2, 1, ..., 1))`` (module docstring).

    Normalized (``log_Z = 0``); analytic score; exact samples.
    """

    name = "banana"

    def __init__(self, dim: int = 2, curvature: float = 0.1, scale: float = 10.0) -> None:
        check_int(dim, "dim", minimum=2)
        check_positive(scale, "scale")
        if not isinstance(curvature, (int, float)) or not math.isfinite(curvature):
            raise ParameterError(f"curvature must be a finite number; got {curvature!r}")
        super().__init__(dim, log_Z=0.0)
        self.curvature = float(curvature)
        self.scale = float(scale)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)

    def twist(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)``: banana coordinates to Gaussian ones, ``(..., dim) -> (..., dim)``."""
        u2 = x[..., 1:2] + self.curvature * (x[..., :1] ** 2 - self.scale**2)
        return torch.cat([x[..., :1], u2, x[..., 2:]], dim=-1)

    def untwist(self, z: torch.Tensor) -> torch.Tensor:
        """``phi^{-1}(z)``: Gaussian coordinates to banana ones."""
        x2 = z[..., 1:2] - self.curvature * (z[..., :1] ** 2 - self.scale**2)
        return torch.cat([z[..., :1], x2, z[..., 2:]], dim=-1)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        u = self.twist(x)
        q = u[..., 0] ** 2 / self.scale**2 + (u[..., 1:] ** 2).sum(-1)
        return -0.5 * q - math.log(self.scale) - 0.5 * self.dim * LOG_2PI

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        u = self.twist(x)
        g1 = -u[..., :1] / self.scale**2 - 2 * self.curvature * x[..., :1] * u[..., 1:2]
        return torch.cat([g1, -u[..., 1:]], dim=-1)

    def _sample(self, sample_shape: torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        z = randn((*sample_shape, self.dim), generator=generator, dtype=self._ref.dtype, device=self._ref.device)
        z = torch.cat([self.scale * z[..., :1], z[..., 1:]], dim=-1)
        return self.untwist(z)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, curvature={self.curvature:g}, scale={self.scale:g}, log_Z=0"
