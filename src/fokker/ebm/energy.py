"""Energy models: an unnormalized density ``p(x) = exp(-E(x)) / Z``.

LeCun, Chopra, Hadsell, Ranzato & Huang (2006), "A tutorial on energy-based learning",
eq. (1) (the Gibbs distribution); seed 002 eq. 18 and seed 000, "energy-based models":

.. math::  p_\\theta(x) = \\exp(-E_\\theta(x)) / Z_\\theta,
           \\quad Z_\\theta = \\int \\exp(-E_\\theta(x))\\,dx .

:class:`EnergyModel` wraps any network ``net: (..., dim) -> (...)`` (or
``(..., 1)``) as a :class:`fokker.targets.Target` whose ``log_prob`` is
``-E(x)`` (unnormalized: ``log_Z`` is unknown).  :class:`GaussianEnergy` is the
quadratic energy of a Gaussian, with a closed-form ``log_Z``; it is the model
the tests and validation checks fit with every objective.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import softplus

from .._args import check_int
from ..errors import ParameterError, ShapeError
from ..targets.base import Target


class EnergyModel(Target):
    """An energy network as an unnormalized target: ``log_prob(x) = -E(x)`` (the Gibbs density of LeCun et al. 2006, eq. 1).

    Args:
        net: module mapping ``(..., dim)`` to energies of shape ``(...)`` or
            ``(..., 1)``; it must act on each point independently (no batch
            norm), because score matching differentiates per point.
        dim: event dimension ``d``.
        name: optional name.

    ``log_prob`` is unnormalized (``log_Z`` is ``None``: estimate it with NCE or
    AIS); ``score`` is ``-grad E`` by autograd and keeps the graph when ``x``
    requires grad (score matching differentiates through it).

    Example::

        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1))
        >>> model = EnergyModel(net, dim=2)
        >>> model.log_prob(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    name = "energy_model"

    def __init__(self, net: nn.Module, dim: int, name: str | None = None) -> None:
        super().__init__(check_int(dim, "dim"), None, name)
        if not callable(net):
            raise TypeError(f"net must be a callable module (..., dim) -> (...); got {type(net).__name__}")
        self.net = net

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x)``: ``(..., dim) -> (...)`` (a trailing singleton output dim is squeezed)."""
        e = self.net(x)
        if e.dim() == x.dim() and e.shape[-1] == 1:
            e = e.squeeze(-1)
        if e.shape != x.shape[:-1]:
            raise ShapeError(
                f"net must map x of shape {tuple(x.shape)} to energies of shape {tuple(x.shape[:-1])} "
                f"(or with a trailing 1); got {tuple(e.shape)}"
            )
        return e

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -self.energy(x)


class GaussianEnergy(EnergyModel):
    """Quadratic energy ``E(x) = 1/2 (x - mu)^T P (x - mu)`` of a Gaussian ``N(mu, P^{-1})``.

    The model of Hyvarinen (2005), Sec. 3 ("multivariate Gaussian density"), where score matching
    has a closed-form minimizer; the tests and validation fit it with every objective.

    The precision is ``P = L L^T`` with ``L`` lower triangular and a positive
    diagonal ``softplus(raw)`` (so every parameter value is valid).  The
    normalizer is exact:

    .. math::  \\log Z = \\tfrac{d}{2}\\log 2\\pi - \\tfrac12 \\log\\det P
                       = \\tfrac{d}{2}\\log 2\\pi - \\textstyle\\sum_i \\log L_{ii}.

    Args:
        dim: event dimension.
        loc: initial mean ``(dim,)`` (default zeros).
        precision: initial precision ``(dim, dim)``, symmetric positive definite
            (default identity).
        dtype, device: of the parameters (default: those of ``loc``, else ``precision``).
    """

    name = "gaussian_energy"

    def __init__(
        self,
        dim: int,
        loc: torch.Tensor | None = None,
        precision: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        check_int(dim, "dim")
        Target.__init__(self, dim, None, None)  # no net: the energy is written out below
        if dtype is None:
            given = loc if loc is not None else precision
            dtype = given.dtype if given is not None else torch.get_default_dtype()
        if device is None and (loc is not None or precision is not None):
            device = (loc if loc is not None else precision).device
        if loc is None:
            loc = torch.zeros(dim, dtype=dtype, device=device)
        loc = loc.to(device, dtype)
        if loc.shape != (dim,):
            raise ShapeError(f"loc must have shape ({dim},); got {tuple(loc.shape)}")
        if precision is None:
            precision = torch.eye(dim, dtype=dtype, device=device)
        if precision.shape != (dim, dim):
            raise ShapeError(f"precision must have shape ({dim}, {dim}); got {tuple(precision.shape)}")
        precision = precision.to(loc.device, dtype)
        chol, info = torch.linalg.cholesky_ex(precision)
        if bool(info != 0) or not torch.allclose(precision, precision.mT):
            raise ParameterError("precision must be symmetric positive definite")
        diag = torch.diagonal(chol)
        raw_diag = diag + torch.log(-torch.expm1(-diag))  # inverse softplus
        self.loc = nn.Parameter(loc.to(dtype).clone())
        self.raw_tril = nn.Parameter(torch.tril(chol, -1) + torch.diag(raw_diag))

    # --------------------------------------------------------------- params
    @property
    def scale_tril_precision(self) -> torch.Tensor:
        """``L`` with ``P = L L^T`` (lower triangular, positive diagonal)."""
        raw = self.raw_tril
        return torch.tril(raw, -1) + torch.diag_embed(softplus(torch.diagonal(raw)))

    @property
    def precision(self) -> torch.Tensor:
        L = self.scale_tril_precision
        return L @ L.mT

    @property
    def covariance(self) -> torch.Tensor:
        return torch.cholesky_inverse(self.scale_tril_precision)

    @property
    def log_Z(self) -> float:
        """Exact ``log Z`` (a float; see :meth:`log_normalizer` for a differentiable tensor)."""
        return float(self.log_normalizer().detach())

    def log_normalizer(self) -> torch.Tensor:
        """``d/2 log(2 pi) - sum_i log L_ii`` as a differentiable 0-d tensor."""
        L = self.scale_tril_precision
        return 0.5 * self.dim * math.log(2 * math.pi) - torch.log(torch.diagonal(L)).sum()

    # --------------------------------------------------------------- energy
    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``1/2 (x - mu)^T P (x - mu)``: ``(..., dim) -> (...)``."""
        z = (x - self.loc) @ self.scale_tril_precision  # (..., d): rows z = (x - mu)^T L
        return 0.5 * z.pow(2).sum(-1)

    def _sample(self, sample_shape: torch.Size) -> torch.Tensor:
        L = self.scale_tril_precision.detach()
        eps = torch.randn(*sample_shape, self.dim, dtype=L.dtype, device=L.device)
        # x = mu + L^{-T} eps has covariance (L L^T)^{-1}
        y = torch.linalg.solve_triangular(L.mT, eps.reshape(-1, self.dim).mT, upper=True).mT
        return self.loc.detach() + y.reshape(eps.shape)


__all__ = ["EnergyModel", "GaussianEnergy"]
