"""Gaussian mixtures: a normalized :class:`Target` with analytic score and exact samples.

.. math::

    \\pi(x) = \\sum_{k=1}^K w_k \\, \\mathcal N(x;\\, \\mu_k,\\, L_k L_k^\\top),
    \\qquad
    \\nabla_x \\log \\pi(x) = -\\sum_k r_k(x)\\, (L_k L_k^\\top)^{-1} (x - \\mu_k),

with responsibilities :math:`r_k(x) = w_k \\mathcal N(x; \\mu_k, \\Sigma_k) / \\pi(x)`.
Everything here is exact (no estimate): ``log_Z = 0``.

``mog40()`` is the 40-mode 2-D benchmark of Midgley et al. (2023), "Flow Annealed
Importance Sampling Bootstrap" (FAB, ICLR 2023), built exactly as their code
(``fab.target_distributions.gmm.GMM`` with the ``experiments/config/gmm.yaml``
values, constructed right after ``torch.manual_seed(0)`` in ``experiments/gmm/run.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from .._args import check_tensor
from .._random import randn
from ..errors import DeviceDtypeError, ParameterError, ShapeError
from ..tolerances import tolerance
from .base import LOG_2PI, Target, categorical

__all__ = ["GaussianMixture", "mog40"]


def _check_same(t: torch.Tensor, ref: torch.Tensor, name: str) -> None:
    if t.device != ref.device:
        raise DeviceDtypeError(f"{name} is on device {t.device} but loc is on {ref.device}")
    if t.dtype != ref.dtype:
        raise DeviceDtypeError(f"{name} has dtype {t.dtype} but loc has dtype {ref.dtype}")


def _check_finite_param(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ParameterError(f"{name} must be finite; it contains NaN or inf")


class GaussianMixture(Target):
    """Mixture of ``K`` full-covariance Gaussians in ``R^d`` (normalized, ``log_Z = 0``).

    The finite Gaussian mixture of Bishop (2006), "Pattern Recognition and Machine Learning",
    Sec. 9.2, eq. 9.7; the 40-mode benchmark instance is :func:`mog40` (Midgley et al., 2023).

    Args:
        loc: component means, shape ``(K, d)``.
        scale_tril: lower-triangular Cholesky factors ``L_k`` with positive diagonal,
            ``Sigma_k = L_k L_k^T``, shape ``(K, d, d)``.
        weights: mixture weights, shape ``(K,)``, non-negative and summing to 1 (up to
            ``tolerance(dtype, loose=True)``; they are renormalized exactly).  ``None``:
            uniform.

    Buffers ``loc``, ``scale_tril``, ``weights`` and ``log_weights`` follow ``.to()``.
    ``log_prob`` and ``score`` are exact (whitening by the triangular inverses ``L_k^{-1}``);
    ``sample`` is exact (ancestral: component, then ``mu_k + L_k eps``).

    Example:
        >>> gm = GaussianMixture.isotropic(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.5)
        >>> gm.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    name = "gaussian_mixture"

    loc: torch.Tensor
    scale_tril: torch.Tensor
    weights: torch.Tensor
    log_weights: torch.Tensor

    def __init__(
        self,
        loc: torch.Tensor,
        scale_tril: torch.Tensor,
        weights: torch.Tensor | None = None,
        name: str | None = None,
    ) -> None:
        check_tensor(loc, "loc")
        if loc.dim() != 2 or loc.shape[0] < 1 or loc.shape[1] < 1:
            raise ShapeError(f"loc must have shape (K, d) with K, d >= 1; got shape {tuple(loc.shape)}")
        K, d = loc.shape
        check_tensor(scale_tril, "scale_tril")
        if tuple(scale_tril.shape) != (K, d, d):
            raise ShapeError(f"scale_tril must have shape ({K}, {d}, {d}) to match loc; got {tuple(scale_tril.shape)}")
        _check_same(scale_tril, loc, "scale_tril")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=loc.dtype, device=loc.device)
        check_tensor(weights, "weights")
        if tuple(weights.shape) != (K,):
            raise ShapeError(f"weights must have shape ({K},) to match loc; got {tuple(weights.shape)}")
        _check_same(weights, loc, "weights")
        _check_finite_param(loc, "loc")
        _check_finite_param(scale_tril, "scale_tril")
        _check_finite_param(weights, "weights")
        if bool((torch.triu(scale_tril, diagonal=1) != 0).any()):
            raise ParameterError("scale_tril must be lower-triangular (entries above the diagonal must be 0)")
        if not bool((torch.diagonal(scale_tril, dim1=-2, dim2=-1) > 0).all()):
            raise ParameterError("scale_tril must have a positive diagonal")
        if bool((weights < 0).any()):
            raise ParameterError(f"weights must be non-negative; got {weights.tolist()}")
        total = float(weights.sum())
        tol = tolerance(loc.dtype, loose=True).atol
        if abs(total - 1.0) > tol:
            raise ParameterError(f"weights must sum to 1 (tolerance {tol:g}); they sum to {total!r}")
        super().__init__(d, log_Z=0.0, name=name)
        w = weights / weights.sum()
        self.register_buffer("loc", loc.detach().clone())
        self.register_buffer("scale_tril", scale_tril.detach().clone())
        self.register_buffer("weights", w.detach().clone())
        self.register_buffer("log_weights", torch.log(w).detach().clone())

    # ------------------------------------------------------------ builders
    @classmethod
    def isotropic(
        cls,
        loc: torch.Tensor,
        scale: float | torch.Tensor,
        weights: torch.Tensor | None = None,
        name: str | None = None,
    ) -> "GaussianMixture":
        """Mixture with ``Sigma_k = scale_k^2 I``; ``scale`` a positive number or a ``(K,)`` tensor."""
        check_tensor(loc, "loc")
        if loc.dim() != 2:
            raise ShapeError(f"loc must have shape (K, d); got shape {tuple(loc.shape)}")
        K, d = loc.shape
        s = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        if s.dim() == 0:
            s = s.expand(K)
        if tuple(s.shape) != (K,):
            raise ShapeError(f"scale must be a number or have shape ({K},); got shape {tuple(s.shape)}")
        if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise ParameterError(f"scale must be positive and finite; got {s.tolist()}")
        eye = torch.eye(d, dtype=loc.dtype, device=loc.device)
        return cls(loc, s[:, None, None] * eye, weights, name=name)

    @classmethod
    def diagonal(
        cls,
        loc: torch.Tensor,
        scale: torch.Tensor,
        weights: torch.Tensor | None = None,
        name: str | None = None,
    ) -> "GaussianMixture":
        """Mixture with diagonal ``Sigma_k = diag(scale_k)^2``; ``scale`` of shape ``(K, d)``."""
        check_tensor(loc, "loc")
        check_tensor(scale, "scale")
        if scale.shape != loc.shape:
            raise ShapeError(f"scale must have the shape of loc {tuple(loc.shape)}; got {tuple(scale.shape)}")
        if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
            raise ParameterError("scale must be positive and finite")
        return cls(loc, torch.diag_embed(scale), weights, name=name)

    # ---------------------------------------------------------- properties
    @property
    def num_components(self) -> int:
        return int(self.loc.shape[0])

    @property
    def covariance_matrix(self) -> torch.Tensor:
        """``Sigma_k = L_k L_k^T``, shape ``(K, d, d)``."""
        return self.scale_tril @ self.scale_tril.mT

    def component_distribution(self) -> MultivariateNormal:
        """The components as a batched torch ``MultivariateNormal`` (batch shape ``(K,)``)."""
        return MultivariateNormal(self.loc, scale_tril=self.scale_tril, validate_args=False)

    def distribution(self) -> MixtureSameFamily:
        """The mixture as a torch ``MixtureSameFamily`` (for pyro / torch code)."""
        return MixtureSameFamily(
            Categorical(probs=self.weights, validate_args=False), self.component_distribution(), validate_args=False
        )

    def mean(self) -> torch.Tensor:
        """Exact mean ``sum_k w_k mu_k``, shape ``(d,)``."""
        return self.weights @ self.loc

    def covariance(self) -> torch.Tensor:
        """Exact covariance ``sum_k w_k (Sigma_k + mu_k mu_k^T) - m m^T``, shape ``(d, d)``."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covariance_matrix + self.loc[:, :, None] * self.loc[:, None, :])
        return second - m[:, None] * m[None, :]

    # --------------------------------------------------------------- math
    def _inv_tril(self) -> torch.Tensor:
        """``L_k^{-1}`` (lower-triangular), ``(K, d, d)``: one small solve per call, then batched matmuls
        (much faster than a broadcast triangular solve over every point)."""
        eye = torch.eye(self.dim, dtype=self.scale_tril.dtype, device=self.scale_tril.device)
        return torch.linalg.solve_triangular(self.scale_tril, eye.expand_as(self.scale_tril), upper=False)

    def _whiten(self, x: torch.Tensor, inv: torch.Tensor | None = None) -> torch.Tensor:
        """``z_k = L_k^{-1} (x - mu_k)``: ``(..., d) -> (..., K, d)``."""
        inv = self._inv_tril() if inv is None else inv
        diff = x.unsqueeze(-2) - self.loc
        return torch.einsum("kij,...kj->...ki", inv, diff)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x; mu_k, Sigma_k)`` per component: ``(..., d) -> (..., K)``."""
        z = self._whiten(x)
        half_logdet = torch.log(torch.diagonal(self.scale_tril, dim1=-2, dim2=-1)).sum(-1)
        return self.log_weights - 0.5 * (z * z).sum(-1) - half_logdet - 0.5 * self.dim * LOG_2PI

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities ``r_k(x)``: ``(..., d) -> (..., K)``."""
        return torch.softmax(self.component_log_prob(self.check_input(x)), dim=-1)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(x), dim=-1)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        inv = self._inv_tril()
        z = self._whiten(x, inv)
        half_logdet = torch.log(torch.diagonal(self.scale_tril, dim1=-2, dim2=-1)).sum(-1)
        comp = self.log_weights - 0.5 * (z * z).sum(-1) - half_logdet
        r = torch.softmax(comp, dim=-1)  # (..., K)
        # Sigma_k^{-1} (x - mu_k) = L_k^{-T} z_k
        prec_diff = torch.einsum("kji,...kj->...ki", inv, z)
        return -(r.unsqueeze(-1) * prec_diff).sum(-2)

    def _sample(self, sample_shape: torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        n = math.prod(sample_shape)
        idx = categorical(self.weights, n, generator)
        eps = randn((n, self.dim), generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        x = self.loc[idx] + (self.scale_tril[idx] @ eps.unsqueeze(-1)).squeeze(-1)
        return x.reshape(*sample_shape, self.dim)

    def extra_repr(self) -> str:
        return f"K={self.num_components}, dim={self.dim}, log_Z=0"


def mog40(
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    num_components: int = 40,
    loc_scaling: float = 40.0,
    log_var_scaling: float = 1.0,
) -> GaussianMixture:
    """The 40-mode 2-D Gaussian mixture of Midgley et al. (2023, FAB).

    Construction (reproduced from the FAB code, ``lollcat/fab-torch``):

    1. ``torch.manual_seed(0)`` (``experiments/gmm/run.py``; seed 0 "for GMM problem");
    2. ``loc = (torch.rand(40, 2) - 0.5) * 2 * 40`` -- the first draw after seeding, in
       float32 (so means are ``U[-40, 40]^2``);
    3. ``scale_tril = diag(softplus(log_var))`` with ``log_var = 1.0 * ones(40, 2)``: the
       per-coordinate *standard deviation* is ``softplus(1) = log(1 + e) ~= 1.3133``
       (despite the name "log_var", softplus is applied and the result used as scale);
    4. uniform weights ``1/40``.

    ``seed`` *defines the target* (its means), it is not a sampling stream: ``mog40(seed=0)``
    is the benchmark; other seeds give other 40-mode mixtures.  The draw uses a private
    ``torch.Generator`` seeded with ``seed`` (identical to the CPU global generator after
    ``torch.manual_seed(seed)``), so building the target does not touch the global RNG.
    Samples of the target take their own ``generator=`` (:meth:`Target.sample`).  Parameters are made in float32 as FAB does and then
    cast to ``dtype`` (default: ``torch.get_default_dtype()``), matching FAB's
    ``target.double()`` for its 64-bit runs.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    loc = (torch.rand((num_components, 2), generator=gen, dtype=torch.float32) - 0.5) * 2 * loc_scaling
    log_var = torch.ones((num_components, 2), dtype=torch.float32) * log_var_scaling
    scale_tril = torch.diag_embed(F.softplus(log_var))
    dtype = dtype or torch.get_default_dtype()
    loc = loc.to(device=device, dtype=dtype)
    scale_tril = scale_tril.to(device=device, dtype=dtype)
    return GaussianMixture(loc, scale_tril, None, name="mog40")
