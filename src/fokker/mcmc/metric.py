"""Mass matrices (metrics) for HMC and preconditioned Langevin kernels.

The kinetic energy of HMC is ``K(p) = p^T S p / 2`` with ``S = M^{-1}`` the
*inverse* mass matrix, momenta ``p ~ N(0, M)`` and velocity ``dx/dt = S p``
(Neal 2011, "MCMC using Hamiltonian dynamics", eq. 5.2).  Preconditioned
Langevin (ULA/MALA) uses the same ``S`` as its diffusion matrix.  Good choices
of ``S`` approximate the target covariance; :func:`regularized_covariance`
gives Stan's shrunk estimate from warm-up draws.

``S`` is diagonal (``(dim,)``) or dense (``(dim, dim)``, with its Cholesky
factor ``L``, ``S = L L^T``).
"""

from __future__ import annotations

import torch

from .. import _random
from ..errors import ShapeError

__all__ = ["Metric", "regularized_covariance"]


class Metric:
    """An inverse mass matrix ``S`` (diagonal ``(dim,)`` or dense ``(dim, dim)``); Neal (2011), eq. 5.2."""

    def __init__(self, inv_mass: torch.Tensor) -> None:
        if not isinstance(inv_mass, torch.Tensor) or inv_mass.dim() not in (1, 2):
            raise ShapeError(f"inv_mass must have shape (dim,) or (dim, dim); got {tuple(inv_mass.shape) if isinstance(inv_mass, torch.Tensor) else type(inv_mass).__name__}")
        self.inv_mass = inv_mass
        self.dense = inv_mass.dim() == 2
        self._chol = torch.linalg.cholesky(inv_mass) if self.dense else None

    @classmethod
    def identity(cls, dim: int, dense: bool, like: torch.Tensor) -> "Metric":
        eye = torch.ones(dim, dtype=like.dtype, device=like.device)
        return cls(torch.diag(eye) if dense else eye)

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        """``S p`` for ``p`` of shape ``(..., dim)``."""
        return p @ self.inv_mass if self.dense else p * self.inv_mass

    def kinetic(self, p: torch.Tensor) -> torch.Tensor:
        """``p^T S p / 2``; ``(..., dim) -> (...)``."""
        return 0.5 * (p * self.velocity(p)).sum(-1)

    def sample_momentum(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``p ~ N(0, M)``, ``M = S^{-1}``: ``p = L^{-T} z`` (dense) or ``z / sqrt(S)`` (diagonal)."""
        z = _random.randn_like(like, generator)
        if self.dense:
            return torch.linalg.solve_triangular(self._chol.mT, z.unsqueeze(-1), upper=True).squeeze(-1)
        return z * self.inv_mass.rsqrt()

    def sqrt_times(self, z: torch.Tensor) -> torch.Tensor:
        """``S^{1/2} z`` (the Cholesky factor ``L z`` when dense): a draw of ``N(0, S)`` from ``z ~ N(0, I)``."""
        return z @ self._chol.mT if self.dense else z * self.inv_mass.sqrt()

    def inv_quad(self, r: torch.Tensor) -> torch.Tensor:
        """``r^T S^{-1} r``; ``(..., dim) -> (...)``."""
        if self.dense:
            w = torch.linalg.solve_triangular(self._chol, r.unsqueeze(-1), upper=False).squeeze(-1)
            return (w * w).sum(-1)
        return (r * r / self.inv_mass).sum(-1)


def regularized_covariance(x: torch.Tensor, dense: bool) -> torch.Tensor:
    """Stan's shrunk warm-up estimate of the target (co)variance.

    ``S = n/(n+5) * Cov + 1e-3 * 5/(n+5) * I`` (Stan reference manual, "HMC
    algorithm parameters": windowed adaptation), with the diagonal only when
    ``dense`` is False.  ``x`` is ``(n, dim)`` draws, or ``(draws, chains, dim)``:
    then ``Cov`` is the mean of the per-chain covariances (within-chain
    variance), so chains that have not yet met do not inflate the metric, and
    ``n`` is the total number of draws.
    """
    if x.dim() == 2:
        x = x.unsqueeze(1)
    t, c, d = x.shape
    n = t * c
    xc = x - x.mean(0, keepdim=True)
    denom = max(t - 1, 1) * c
    if dense:
        cov = torch.einsum("tci,tcj->ij", xc, xc) / denom
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        return (n / (n + 5.0)) * cov + 1e-3 * (5.0 / (n + 5.0)) * eye
    var = (xc * xc).sum((0, 1)) / denom
    return (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
