"""Shared helpers for the MCMC tests (not a test module): a correlated Gaussian and moment checks."""

from __future__ import annotations

import math

import torch

from fokker.targets import Target
from fokker.tolerances import Z_SCORE


class CorrelatedGaussian(Target):
    """``N(mu, Sigma)`` with an AR(1)-style correlation ``Sigma_ij = s_i s_j rho^|i-j|`` (normalized)."""

    def __init__(self, dim: int = 10, rho: float = 0.7, dtype=torch.float64, device="cpu") -> None:
        super().__init__(dim, log_Z=0.0, name="corr_gauss")
        idx = torch.arange(dim, dtype=dtype, device=device)
        s = torch.linspace(0.5, 2.0, dim, dtype=dtype, device=device)
        cov = s[:, None] * s[None, :] * rho ** (idx[:, None] - idx[None, :]).abs()
        self.register_buffer("mu", torch.linspace(-1.0, 1.0, dim, dtype=dtype, device=device))
        self.register_buffer("cov", cov)
        self.register_buffer("prec", torch.linalg.inv(cov))
        self.register_buffer("chol", torch.linalg.cholesky(cov))

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r = x - self.mu
        quad = ((r @ self.prec) * r).sum(-1)
        return -0.5 * quad - 0.5 * self.dim * math.log(2 * math.pi) - torch.log(torch.diagonal(self.chol)).sum()

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return -(x - self.mu) @ self.prec

    def _sample(self, sample_shape: torch.Size) -> torch.Tensor:
        z = torch.randn(*sample_shape, self.dim, dtype=self.mu.dtype, device=self.mu.device)
        return self.mu + z @ self.chol.mT


def assert_moments_iid(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, z: float = Z_SCORE) -> None:
    """Independent draws ``x`` ``(n, d)``: sample mean and covariance within ``z`` standard errors.

    SE of the mean: ``sqrt(diag(cov) / n)``; SE of each covariance entry: the sample
    sd of the centred products ``(x_i - m_i)(x_j - m_j)`` over ``sqrt(n)``.
    """
    n = x.shape[0]
    m = x.mean(0)
    se_m = (torch.diagonal(cov) / n).sqrt()
    zm = ((m - mean) / se_m).abs().max()
    assert zm < z, f"mean off by {zm:.2f} SE: {m} vs {mean}"
    r = x - mean
    prod = r[:, :, None] * r[:, None, :]
    c = prod.mean(0)
    se_c = prod.std(0) / math.sqrt(n)
    zc = ((c - cov) / se_c).abs().max()
    assert zc < z, f"covariance off by {zc:.2f} SE"
