"""Test-local closed forms, independent of fokker.sde / fokker.analytic.

``VP``: the linear VP SDE with beta(t) = b0 + (b1 - b0) t written directly as
alpha(t) = exp(-int beta / 2), sigma^2 = 1 - alpha^2.  ``IsoGMM``: a mixture of
isotropic Gaussians pushed through it, whose diffused density is again a mixture
``sum_k w_k N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)`` (exact score and samples).
"""

from __future__ import annotations

import math

import torch


class VP:
    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, t_min: float = 1e-3):
        self.b0, self.b1, self.T, self.t_min = beta_min, beta_max, T, t_min

    def _int_beta(self, t):
        return self.b0 * t + 0.5 * (self.b1 - self.b0) * t**2

    def beta(self, t):
        return self.b0 + (self.b1 - self.b0) * t

    def alpha(self, t):
        return torch.exp(-0.5 * self._int_beta(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self._int_beta(t)))


class VE:
    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0, T: float = 1.0, t_min: float = 1e-3):
        self.smin, self.smax, self.T, self.t_min = sigma_min, sigma_max, T, t_min

    def alpha(self, t):
        return torch.ones_like(torch.as_tensor(t))

    def sigma(self, t):
        return self.smin * (self.smax / self.smin) ** t


class IsoGMM:
    def __init__(self, means: torch.Tensor, scales: torch.Tensor, weights: torch.Tensor, sde):
        self.mu, self.s, self.w, self.sde = means, scales, weights / weights.sum(), sde

    def _params(self, t):
        a = self.sde.alpha(t.to(torch.float64)).to(self.mu.dtype)
        sg = self.sde.sigma(t.to(torch.float64)).to(self.mu.dtype)
        var = a[:, None] ** 2 * self.s[None] ** 2 + sg[:, None] ** 2  # (B, K)
        return a, sg, var

    def log_prob(self, x, t):
        a, _, var = self._params(t)
        d = x.shape[-1]
        diff = x[:, None, :] - a[:, None, None] * self.mu[None]
        lp = -0.5 * (diff**2).sum(-1) / var - 0.5 * d * torch.log(2 * math.pi * var) + torch.log(self.w)
        return torch.logsumexp(lp, -1)

    def score(self, x, t):
        a, _, var = self._params(t)
        d = x.shape[-1]
        diff = x[:, None, :] - a[:, None, None] * self.mu[None]
        lp = -0.5 * (diff**2).sum(-1) / var - 0.5 * d * torch.log(2 * math.pi * var) + torch.log(self.w)
        r = torch.softmax(lp, -1)
        return -(r[..., None] * diff / var[..., None]).sum(1)

    def sample(self, n, t, generator=None):
        tt = torch.full((n,), float(t), dtype=self.mu.dtype)
        a, _, var = self._params(tt)
        k = torch.multinomial(self.w, n, replacement=True, generator=generator)
        z = torch.randn(n, self.mu.shape[-1], dtype=self.mu.dtype, generator=generator)
        return a[:, None] * self.mu[k] + var[torch.arange(n), k].sqrt()[:, None] * z


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| with U-statistics for the within-sample terms.

    Same estimator as ``fokker.metrics.energy_distance`` (checked in test_oracle_helpers), via
    ``torch.cdist``, which is ~4x faster on the 2-core CI machine.
    """
    n, m = x.shape[0], y.shape[0]
    exx = torch.cdist(x, x).sum() / (n * (n - 1))
    eyy = torch.cdist(y, y).sum() / (m * (m - 1))
    return 2 * torch.cdist(x, y).mean() - exx - eyy


class OracleNet(torch.nn.Module):
    """A 'network' returning the exact prediction of type ``kind`` for the data ``gmm`` (float64 math)."""

    def __init__(self, gmm: IsoGMM, kind: str = "eps"):
        super().__init__()
        self.gmm, self.kind = gmm, kind
        self.dim = gmm.mu.shape[-1]
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=gmm.mu.dtype))

    def forward(self, x, t):
        from fokker.diffusion.parameterization import convert

        t64 = t.to(torch.float64)
        a = self.gmm.sde.alpha(t64)[:, None].to(x.dtype)
        s = self.gmm.sde.sigma(t64)[:, None].to(x.dtype)
        return convert(x, self.gmm.score(x, t), "score", self.kind, a, s) + 0 * self.dummy


class GaussEpsNet(torch.nn.Module):
    """eps-prediction of N(m, s^2 I) data with learnable (m, log s): exact at the true values.

    eps_hat = sigma (x - alpha m) / (alpha^2 s^2 + sigma^2)  (Tweedie, -sigma * score)."""

    def __init__(self, m: torch.Tensor, log_s: float, sde):
        super().__init__()
        self.m = torch.nn.Parameter(m.clone())
        self.log_s = torch.nn.Parameter(torch.tensor(float(log_s), dtype=m.dtype))
        self.sde, self.dim = sde, m.shape[-1]

    def forward(self, x, t):
        a = self.sde.alpha(t.to(torch.float64))[:, None].to(x.dtype)
        sg = self.sde.sigma(t.to(torch.float64))[:, None].to(x.dtype)
        return sg * (x - a * self.m) / (a**2 * torch.exp(2 * self.log_s) + sg**2)
