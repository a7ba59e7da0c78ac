"""The linear-Gaussian VAE and probabilistic PCA, where ``log p(x)`` is exact.

Probabilistic PCA (Tipping & Bishop 1999, eqs. 2-8): ``z ~ N(0, I_q)``, ``x = W z + mu + s eps`` so

.. math::  x \\sim N(\\mu, C), \\quad C = W W^\\top + s^2 I, \\qquad
           q(z | x) = N\\big(M^{-1} W^\\top (x - \\mu),\\; s^2 M^{-1}\\big), \\quad M = W^\\top W + s^2 I,

and the maximum-likelihood fit is closed form: ``mu`` the sample mean, ``s^2`` the mean of the
``d - q`` smallest eigenvalues of the sample covariance ``S``, ``W = U_q (Lambda_q - s^2 I)^{1/2}``
(eqs. 7-8; any rotation ``W R`` too).  A VAE with a linear decoder ``GaussianDecoder(hidden=(),
scale="shared")`` *is* this model; with a linear encoder whose covariance is diagonal its ELBO is
tight at the maximum-likelihood ``W`` (its columns are orthogonal, so ``M`` is diagonal; Lucas,
Tucker, Grosse & Norouzi 2019, sec. 4), so training it reaches the closed-form likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from .._args import check_int, check_tensor
from ..errors import ParameterError, ShapeError
from .conditionals import GaussianDecoder, GaussianEncoder
from .model import VAE

__all__ = ["ProbabilisticPCA", "linear_vae"]

_SCALE_FLOOR = 1e-6  # the floor fokker.vae.conditionals adds to every learned scale


def linear_vae(features: int, latent_dim: int, dtype: torch.dtype | None = None, **kwargs: object) -> VAE:
    """A VAE with linear encoder (diagonal covariance, the same for every ``x``) and linear-Gaussian decoder.

    ``q(z|x) = N(A x + a, diag(v))``, ``p(x|z) = N(W z + b, s^2 I)``: probabilistic PCA
    (Tipping & Bishop 1999) trained by its ELBO.  ``kwargs`` go to :class:`VAE` (``objective``,
    ``num_particles``, ...).
    """
    check_int(features, "features")
    check_int(latent_dim, "latent_dim")
    if latent_dim >= features:
        raise ParameterError(f"probabilistic PCA needs latent_dim < features; got {latent_dim} >= {features}")
    enc = GaussianEncoder(features, latent_dim, hidden=(), scale="per_dim")
    dec = GaussianDecoder(latent_dim, features, hidden=(), scale="shared")
    if dtype is not None:
        enc, dec = enc.to(dtype), dec.to(dtype)
    return VAE(enc, dec, **kwargs)  # type: ignore[arg-type]


def _inverse_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


def _linear(module: nn.Module, what: str) -> nn.Linear:
    net = getattr(module, "net", None)
    if not (isinstance(net, nn.Sequential) and len(net) == 1 and isinstance(net[0], nn.Linear)):
        raise ParameterError(f"the {what} is not linear (build the VAE with fokker.vae.linear_vae)")
    return net[0]


@dataclass
class ProbabilisticPCA:
    """Probabilistic PCA ``x = W z + mu + s eps`` (Tipping & Bishop 1999, "Probabilistic principal
    component analysis", JRSS B 61(3), eqs. 2-8; module docstring).

    Attributes:
        loc: ``mu`` ``(d,)``; weight: ``W`` ``(d, q)``; noise_variance: ``s^2`` (0-d tensor).
    """

    loc: Tensor
    weight: Tensor
    noise_variance: Tensor

    def __post_init__(self) -> None:
        check_tensor(self.loc, "loc")
        check_tensor(self.weight, "weight")
        self.noise_variance = torch.as_tensor(self.noise_variance, dtype=self.loc.dtype, device=self.loc.device)
        if self.loc.dim() != 1 or self.weight.dim() != 2 or self.weight.shape[0] != self.loc.shape[0]:
            raise ShapeError(f"loc must be (d,) and weight (d, q); got {tuple(self.loc.shape)} and {tuple(self.weight.shape)}")
        if not bool(self.noise_variance > 0):
            raise ParameterError(f"noise_variance must be positive; got {float(self.noise_variance)}")

    @property
    def covariance(self) -> Tensor:
        """``C = W W^T + s^2 I``."""
        eye = torch.eye(self.loc.shape[0], dtype=self.loc.dtype, device=self.loc.device)
        return self.weight @ self.weight.T + self.noise_variance * eye

    def marginal(self) -> MultivariateNormal:
        """``p(x) = N(mu, C)`` (exact)."""
        return MultivariateNormal(self.loc, self.covariance)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)``: ``(..., d) -> (...)``."""
        return self.marginal().log_prob(x)

    def posterior(self, x: Tensor) -> MultivariateNormal:
        """Exact ``p(z | x) = N(M^{-1} W^T (x - mu), s^2 M^{-1})``."""
        W, s2 = self.weight, self.noise_variance
        M = W.T @ W + s2 * torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
        Minv = torch.linalg.inv(M)
        return MultivariateNormal((x - self.loc) @ (Minv @ W.T).T, s2 * Minv)

    @classmethod
    def maximum_likelihood(cls, data: Tensor, latent_dim: int) -> "ProbabilisticPCA":
        """The closed-form maximum-likelihood fit (Tipping & Bishop 1999, eqs. 7-8) to ``data`` ``(N, d)``."""
        check_tensor(data, "data")
        check_int(latent_dim, "latent_dim")
        if data.dim() != 2 or latent_dim >= data.shape[1]:
            raise ShapeError(f"data must be (N, d) with d > latent_dim={latent_dim}; got {tuple(data.shape)}")
        mu = data.mean(0)
        xc = data - mu
        S = xc.T @ xc / data.shape[0]
        evals, evecs = torch.linalg.eigh(S)  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        s2 = evals[latent_dim:].mean()
        W = evecs[:, :latent_dim] * (evals[:latent_dim] - s2).clamp_min(0).sqrt()
        return cls(mu, W, s2)

    @classmethod
    def from_vae(cls, model: VAE) -> "ProbabilisticPCA":
        """The pPCA model a :func:`linear_vae` defines (its decoder's ``W``, ``b``, ``s^2``; detached)."""
        lin = _linear(model.decoder, "decoder")
        s = model.decoder.scale(None).detach().reshape(())
        return cls(lin.bias.detach().clone(), lin.weight.detach().clone(), s * s)

    def to_vae(self, **kwargs: object) -> VAE:
        """A :func:`linear_vae` with this decoder and the exact posterior's mean map and marginal variances.

        The posterior is exact (and the ELBO equals ``log p(x)`` for every draw) when ``W^T W`` is
        diagonal, as for :meth:`maximum_likelihood`; otherwise its covariance is replaced by its diagonal.
        """
        d, q = self.weight.shape
        model = linear_vae(d, q, dtype=self.loc.dtype, **kwargs).to(self.loc.device)
        W, s2 = self.weight, self.noise_variance
        M = W.T @ W + s2 * torch.eye(q, dtype=W.dtype, device=W.device)
        A = torch.linalg.solve(M, W.T)  # M^{-1} W^T
        var = s2 * torch.diagonal(torch.linalg.inv(M))
        enc, dec = _linear(model.encoder, "encoder"), _linear(model.decoder, "decoder")
        with torch.no_grad():
            dec.weight.copy_(W)
            dec.bias.copy_(self.loc)
            model.decoder.scale.raw.copy_(_inverse_softplus(s2.sqrt() - _SCALE_FLOOR).reshape(1))
            enc.weight.copy_(A)
            enc.bias.copy_(-A @ self.loc)
            model.encoder.scale.raw.copy_(_inverse_softplus(var.sqrt() - _SCALE_FLOOR))
        return model
