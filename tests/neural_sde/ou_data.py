"""Ornstein-Uhlenbeck paths from the exact transition density, and the closed-form Euler MLE.

The independent computations the neural-SDE tests compare against.
"""

from __future__ import annotations

import torch


def ou_paths(
    theta: torch.Tensor, mu: torch.Tensor, sigma: float, num_paths: int, times: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Paths ``(num_paths, K, d)`` of ``dX = (mu - theta X) dt + sigma dW`` from ``X_0 = 0``, exact transitions:
    ``X_{k+1} = m + (X_k - m) e^{-theta h} + sigma sqrt((1 - e^{-2 theta h}) / (2 theta)) N(0, 1)``, ``m = mu / theta``."""
    d = theta.numel()
    x = torch.zeros(num_paths, d, dtype=times.dtype)
    out = [x]
    for h in torch.diff(times).tolist():
        decay = torch.exp(-theta * h)
        sd = sigma * torch.sqrt((1 - torch.exp(-2 * theta * h)) / (2 * theta))
        x = mu / theta + (x - mu / theta) * decay + sd * torch.randn(num_paths, d, generator=gen, dtype=times.dtype)
        out.append(x)
    return torch.stack(out, 1)


def euler_mle(paths: torch.Tensor, h: float) -> dict[str, torch.Tensor]:
    """Closed-form Euler MLE of ``f = -theta x + mu``, constant ``sigma``, per coordinate (uniform step ``h``).

    Least squares of ``dx / h`` on ``[-x, 1]``; ``sigma^2 = mean(h r^2)`` with ``r = dx/h - fit``.
    Also the inverse observed information: ``cov(theta, mu) = sigma^2 (A^T A)^{-1} / h`` and
    ``var(log sigma) = 1 / (2 N)`` for ``N`` transitions.
    """
    x, dx = paths[:, :-1], paths[:, 1:] - paths[:, :-1]
    out: dict[str, list[torch.Tensor]] = {"theta": [], "mu": [], "sigma": [], "se_theta": [], "se_mu": [],
                                          "se_log_sigma": []}
    for j in range(paths.shape[-1]):
        xj, yj = x[..., j].reshape(-1), dx[..., j].reshape(-1) / h
        A = torch.stack([-xj, torch.ones_like(xj)], 1)
        beta = torch.linalg.solve(A.T @ A, A.T @ yj)
        r = yj - A @ beta
        s2 = h * (r * r).mean()
        cov = s2 * torch.linalg.inv(A.T @ A) / h
        out["theta"].append(beta[0])
        out["mu"].append(beta[1])
        out["sigma"].append(s2.sqrt())
        out["se_theta"].append(cov[0, 0].sqrt())
        out["se_mu"].append(cov[1, 1].sqrt())
        out["se_log_sigma"].append(torch.tensor(1.0 / (2 * len(xj)), dtype=paths.dtype).sqrt())
    return {k: torch.stack(v) for k, v in out.items()}
