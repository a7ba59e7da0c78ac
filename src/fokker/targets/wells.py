"""Multi-well targets: products of 1-D quartic wells and Gaussians (exact log Z, exact samples).

``ManyWell`` (Noé et al. 2019's double well, repeated; Midgley et al. 2023, FAB; used by
DDS / PIS benchmarks): ``dim / 2`` independent pairs ``(x, y)`` with

.. math::  \\log\\gamma(x, y) = -x^4 + 6 x^2 + \\tfrac12 x - \\tfrac12 y^2 ,

pairs laid out as ``(x_0, y_0, x_1, y_1, ...)`` (quartic at even indices), as in FAB's
``ManyWellEnergy``.  ``log Z = (dim/2) (log Z_x + log sqrt(2 pi))`` with
``Z_x = int exp(-x^4 + 6x^2 + x/2) dx ~= 11784.50927`` by 1-D quadrature; for
``dim = 32``: ``log Z = 164.695675``.  ``2^(dim/2)`` modes.

``DoubleWell`` (the "dimension-separable" well of the diffusion-sampler literature: the
``ManyWell2`` target of Blessing et al. 2024, "Beyond ELBOs", whose ``many_well_554``
configuration is ``dim = 5, m = 5, delta = 4`` -- ``catalogue()["doublewell"]``):

.. math::  \\log\\gamma(x) = -\\sum_{i<m} (x_i^2 - \\delta)^2 - \\tfrac12 \\sum_{i \\ge m} x_i^2 ,

``2^m`` modes at ``x_i = \\pm\\sqrt\\delta``; ``log Z = m log Z_1 + (d-m)/2 log 2 pi``,
``Z_1 = int exp(-(x^2-delta)^2) dx`` by quadrature.

Both: analytic score; exact samples by rejection for the quartic coordinates
(:mod:`fokker.targets._univariate`) and ``N(0, 1)`` for the Gaussian ones.  ``log_Z`` is
exact up to quadrature error (< 1e-10 relative).
"""

from __future__ import annotations

import math

import torch

from .._args import check_int, check_positive
from .._random import randn
from ..errors import ParameterError
from ._univariate import Univariate
from .base import Target

__all__ = ["ManyWell", "DoubleWell"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _manywell_x(x: torch.Tensor) -> torch.Tensor:
    return -(x**4) + 6 * x**2 + 0.5 * x


class ManyWell(Target):
    """``dim/2`` copies of the 2-D double well ``-x^4 + 6x^2 + x/2 - y^2/2`` (unnormalized).

    The double well of Noé, Olsson, Köhler & Wu (2019), "Boltzmann generators", Science 365,
    repeated as in Midgley et al. (2023), "Flow annealed importance sampling bootstrap" (FAB), ICLR.

    Args:
        dim: even event dimension (default 32, the benchmark; ``log_Z = 164.695675``).

    The only buffer is a scalar ``_ref`` fixing dtype / device (``.to()`` moves it).
    """

    name = "manywell"

    def __init__(self, dim: int = 32) -> None:
        check_int(dim, "dim", minimum=2)
        if dim % 2:
            raise ParameterError(f"dim must be even (pairs of coordinates); got {dim}")
        self.num_pairs = dim // 2
        self._x = Univariate(_manywell_x, -6.0, 6.0)
        log_z = self.num_pairs * (self._x.log_Z + _HALF_LOG_2PI)
        super().__init__(dim, log_Z=log_z)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[..., 0::2], x[..., 1::2]
        return (_manywell_x(a) - 0.5 * b * b).sum(-1)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[..., 0::2], x[..., 1::2]
        ga = -4 * a**3 + 12 * a + 0.5
        return torch.stack([ga, -b], dim=-1).reshape(x.shape)

    def _sample(self, sample_shape: torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        n, k = math.prod(sample_shape), self.num_pairs
        dt, dev = self._ref.dtype, self._ref.device
        a = self._x.sample((n, k), dt, dev, generator=generator)
        b = randn((n, k), generator=generator, dtype=dt, device=dev)
        return torch.stack([a, b], dim=-1).reshape(*sample_shape, self.dim)


class DoubleWell(Target):
    """Separable well: ``m`` quartic coordinates ``-(x_i^2 - delta)^2`` and ``dim - m`` Gaussian ones.

    The ``ManyWell2`` target of Blessing, Jia, Esslinger, Vargas & Neumann (2024), "Beyond
    ELBOs: a large-scale evaluation of variational methods for sampling", ICML.

    Args:
        dim: event dimension.
        num_wells: ``m``, the number of leading quartic coordinates (default ``dim``); ``2^m`` modes.
        delta: squared position of the wells (``> 0``; larger = higher barrier ``delta^2``).
    """

    name = "doublewell"

    def __init__(self, dim: int = 2, num_wells: int | None = None, delta: float = 4.0) -> None:
        check_int(dim, "dim")
        m = dim if num_wells is None else check_int(num_wells, "num_wells", minimum=0)
        if m > dim:
            raise ParameterError(f"num_wells must be <= dim = {dim}; got {m}")
        check_positive(delta, "delta")
        self.num_wells = m
        self.delta = float(delta)
        self._x = Univariate(self._quartic, -math.sqrt(delta) - 6.0, math.sqrt(delta) + 6.0)
        log_z = m * self._x.log_Z + (dim - m) * _HALF_LOG_2PI
        super().__init__(dim, log_Z=log_z)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)

    def _quartic(self, x: torch.Tensor) -> torch.Tensor:
        return -((x * x - self.delta) ** 2)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        m = self.num_wells
        q, g = x[..., :m], x[..., m:]
        return self._quartic(q).sum(-1) - 0.5 * (g * g).sum(-1)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        m = self.num_wells
        q, g = x[..., :m], x[..., m:]
        return torch.cat([-4 * q * (q * q - self.delta), -g], dim=-1)

    def _sample(self, sample_shape: torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        n, m = math.prod(sample_shape), self.num_wells
        dt, dev = self._ref.dtype, self._ref.device
        q = self._x.sample((n, m), dt, dev, generator=generator)
        g = randn((n, self.dim - m), generator=generator, dtype=dt, device=dev)
        return torch.cat([q, g], dim=-1).reshape(*sample_shape, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_wells={self.num_wells}, delta={self.delta:g}, log_Z={self.log_Z:.6g}"
