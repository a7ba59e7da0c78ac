"""Closed forms for a Gaussian EBM ``E(x) = 1/2 (x - mu)^T P (x - mu)`` under Gaussian data ``N(m, S)``.

Independent of fokker.ebm: plain linear algebra on tensors.
"""

from __future__ import annotations

import torch


def exact_sm_per_point(x: torch.Tensor, mu: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """``1/2 |P (x - mu)|^2 - tr P`` (score ``-P (x - mu)``, Hessian ``-P``)."""
    s = -(x - mu) @ P
    return 0.5 * s.pow(2).sum(-1) - torch.trace(P)


def expected_exact_sm(mu, P, m, S) -> torch.Tensor:
    """``E_{N(m,S)}[1/2 |P(x-mu)|^2] - tr P = 1/2 tr(P^2 (S + dd^T)) - tr P``, ``d = m - mu``."""
    d = (m - mu).unsqueeze(-1)
    return 0.5 * torch.trace(P @ P @ (S + d @ d.mT)) - torch.trace(P)


def sample_gaussian(m: torch.Tensor, S: torch.Tensor, n: int, generator=None) -> torch.Tensor:
    L = torch.linalg.cholesky(S)
    z = torch.randn(n, m.shape[0], dtype=m.dtype, device=m.device, generator=generator)
    return m + z @ L.mT


def problem(dim: int, dtype=torch.float64, device="cpu", seed: int = 1):
    """A random (mu, P) model and (m, S) data law, well conditioned."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    P = A @ A.T / dim + 0.5 * torch.eye(dim, dtype=torch.float64)
    B = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    S = B @ B.T / dim + 0.5 * torch.eye(dim, dtype=torch.float64)
    mu = torch.randn(dim, generator=g, dtype=torch.float64) * 0.5
    m = torch.randn(dim, generator=g, dtype=torch.float64) * 0.5
    return tuple(t.to(device, dtype) for t in (mu, P, m, S))
