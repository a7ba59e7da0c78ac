"""Concentric rings: a multimodal 2-D target with closed-form log Z and exact samples.

.. math::

    \\gamma(x) = \\sum_{k=1}^K \\exp\\Big(-\\frac{(\\lVert x\\rVert - r_k)^2}{2\\sigma^2}\\Big),
    \\qquad
    Z = 2\\pi \\sum_k \\int_0^\\infty \\rho\\, e^{-(\\rho - r_k)^2 / 2\\sigma^2} d\\rho
      = 2\\pi \\sum_k \\Big(\\sigma^2 e^{-r_k^2/2\\sigma^2} + r_k \\sigma\\sqrt{2\\pi}\\,\\Phi(r_k/\\sigma)\\Big)

(polar coordinates; the radial integral is elementary).  Exact samples: the radius has
density ``~ rho * gamma(rho)`` on ``rho > 0`` (drawn by rejection,
:mod:`fokker.targets._univariate`), the angle is uniform.  Score:
``grad log gamma = (d/d rho log gamma) x / |x|`` (set to 0 at the origin, where it is undefined).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._args import check_positive
from .._random import rand
from ..errors import ParameterError
from ._univariate import Univariate
from .base import Target

__all__ = ["Rings"]


class Rings(Target):
    """Unnormalized mixture of Gaussian rings of radii ``radii`` and width ``sigma`` in ``R^2``.

    The density version of the "rings" toy data of Grathwohl, Chen, Bettencourt, Sutskever &
    Duvenaud (2019), "FFJORD", ICLR (concentric circles of radii 1, 2, 3, 4): ``log Z`` in
    closed form (module docstring) and exact samples (radius by rejection, uniform angle).
    """

    name = "rings"

    def __init__(self, radii: Sequence[float] = (1.0, 2.0, 3.0, 4.0), sigma: float = 0.15) -> None:
        radii = [float(r) for r in radii]
        if not radii or any(not math.isfinite(r) or r < 0 for r in radii):
            raise ParameterError(f"radii must be a non-empty sequence of non-negative numbers; got {radii}")
        check_positive(sigma, "sigma")
        self.radii = tuple(radii)
        self.sigma = float(sigma)
        s = self.sigma
        z = sum(s * s * math.exp(-r * r / (2 * s * s)) + r * s * math.sqrt(2 * math.pi) * _Phi(r / s) for r in radii)
        super().__init__(2, log_Z=math.log(2 * math.pi * z))
        self.register_buffer("_ref", torch.zeros(()), persistent=False)
        self._radii_cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self._radius = Univariate(self._log_radial, 0.0, max(radii) + 12 * s)

    def _r(self, like: torch.Tensor) -> torch.Tensor:
        """The radii as a tensor like ``like``, made once per (dtype, device) from the exact Python floats."""
        key = (like.dtype, like.device)
        r = self._radii_cache.get(key)
        if r is None:
            r = self._radii_cache[key] = torch.tensor(self.radii, dtype=like.dtype, device=like.device)
        return r

    def _ring_terms(self, rho: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return -((rho.unsqueeze(-1) - r) ** 2) / (2 * self.sigma**2)

    def _log_radial(self, rho: torch.Tensor) -> torch.Tensor:
        """``log(rho * gamma(rho))`` for ``rho > 0``, ``-inf`` otherwise (radial log-density)."""
        pos = rho > 0
        r = self._r(rho)
        val = torch.log(torch.where(pos, rho, torch.ones_like(rho))) + torch.logsumexp(self._ring_terms(rho, r), -1)
        return torch.where(pos, val, torch.full_like(rho, -math.inf))

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        rho = torch.linalg.vector_norm(x, dim=-1)
        return torch.logsumexp(self._ring_terms(rho, self._r(x)), -1)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        rho = torch.linalg.vector_norm(x, dim=-1)
        r = self._r(x)
        w = torch.softmax(self._ring_terms(rho, r), -1)
        drho = -(w * (rho.unsqueeze(-1) - r)).sum(-1) / self.sigma**2
        safe = torch.where(rho > 0, rho, torch.ones_like(rho))
        return torch.where((rho > 0).unsqueeze(-1), (drho / safe).unsqueeze(-1) * x, torch.zeros_like(x))

    def _sample(self, sample_shape: torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        dt, dev = self._ref.dtype, self._ref.device
        n = math.prod(sample_shape)
        rho = self._radius.sample((n,), dt, dev, generator=generator)
        theta = 2 * math.pi * rand((n,), generator=generator, dtype=dt, device=dev)
        x = torch.stack([rho * torch.cos(theta), rho * torch.sin(theta)], dim=-1)
        return x.reshape(*sample_shape, 2)

    def extra_repr(self) -> str:
        return f"radii={self.radii}, sigma={self.sigma:g}, log_Z={self.log_Z:.6g}"


def _Phi(t: float) -> float:
    return 0.5 * math.erfc(-t / math.sqrt(2))
