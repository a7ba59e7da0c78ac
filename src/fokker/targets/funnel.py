"""Neal's funnel (Neal 2003, "Slice sampling"): a normalized target with a scale-varying neck.

.. math::

    x_0 \\sim \\mathcal N(0, \\sigma^2), \\qquad x_i \\mid x_0 \\sim \\mathcal N(0, e^{x_0}),\\ i = 1..d-1,

    \\log\\pi(x) = -\\frac{x_0^2}{2\\sigma^2} - \\tfrac12\\log(2\\pi\\sigma^2)
        - \\sum_{i\\ge1} \\Big(\\frac{x_i^2}{2} e^{-x_0} + \\frac{x_0}{2} + \\tfrac12\\log 2\\pi\\Big).

Benchmark setting (DDS, CMCD, "Beyond ELBOs"): ``dim = 10``, ``sigma = 3``.  ``log_Z = 0``
exactly; analytic score; exact ancestral samples.
"""

from __future__ import annotations

import math

import torch

from .._args import check_int, check_positive
from .._random import randn
from .base import LOG_2PI, Target

__all__ = ["Funnel"]


def _times_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * exp(b)`` with ``0 * exp(b) = 0`` even where ``exp(b)`` overflows (deep in the neck).

    ``b`` is zeroed where ``a == 0`` before the exponential, so neither value nor gradient
    sees ``0 * inf``.
    """
    zero = a == 0
    return torch.where(zero, 0.0, a * torch.exp(torch.where(zero, 0.0, b)))


class Funnel(Target):
    """Neal's funnel in ``R^dim``: ``x_0 ~ N(0, scale^2)``, ``x_{1:} | x_0 ~ N(0, e^{x_0} I)``.

    Neal (2003), "Slice sampling", Annals of Statistics 31(3), Sec. 8 (there ``dim = 10``,
    ``scale = 3``, the defaults here).

    Args:
        dim: event dimension ``>= 2``.
        scale: standard deviation ``sigma`` of ``x_0`` (``> 0``).

    Normalized (``log_Z = 0``).  A scalar buffer fixes dtype / device for ``sample``.
    """

    name = "funnel"

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        check_int(dim, "dim", minimum=2)
        check_positive(scale, "scale")
        super().__init__(dim, log_Z=0.0)
        self.scale = float(scale)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x0, xr = x[..., 0], x[..., 1:]
        s2 = self.scale**2
        lp0 = -0.5 * x0 * x0 / s2 - 0.5 * math.log(2 * math.pi * s2)
        k = self.dim - 1
        lpr = -0.5 * _times_exp((xr * xr).sum(-1), -x0) - 0.5 * k * x0 - 0.5 * k * LOG_2PI
        return lp0 + lpr

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        x0, xr = x[..., :1], x[..., 1:]
        g0 = -x0 / self.scale**2 + 0.5 * _times_exp((xr * xr).sum(-1, keepdim=True), -x0) - 0.5 * (self.dim - 1)
        return torch.cat([g0, -_times_exp(xr, -x0)], dim=-1)

    def _sample(self, sample_shape: torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = randn((*sample_shape, self.dim), generator=generator, dtype=self._ref.dtype, device=self._ref.device)
        x0 = self.scale * eps[..., :1]
        xr = torch.exp(0.5 * x0) * eps[..., 1:]
        return torch.cat([x0, xr], dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale:g}, log_Z=0"
