"""The discrete DDPM chain (Ho et al. 2020; seeds 003 and 004).

Forward chain ``q(x_k | x_{k-1}) = N(sqrt(1 - beta_k) x_{k-1}, beta_k I)`` for ``k = 1..N``, so

.. math::

    q(x_k | x_0) = \\mathcal N(\\sqrt{\\bar\\alpha_k} x_0, (1 - \\bar\\alpha_k) I), \\qquad
    \\bar\\alpha_k = \\prod_{j \\le k} (1 - \\beta_j),

the posterior (Ho et al. 2020, eqs. 6-7; seed 003 eq. 8)

.. math::

    q(x_{k-1} | x_k, x_0) = \\mathcal N\\Big(
      \\tfrac{\\sqrt{\\bar\\alpha_{k-1}}\\beta_k}{1 - \\bar\\alpha_k} x_0
      + \\tfrac{\\sqrt{\\alpha_k}(1 - \\bar\\alpha_{k-1})}{1 - \\bar\\alpha_k} x_k,\\;
      \\tilde\\beta_k I\\Big), \\quad
    \\tilde\\beta_k = \\tfrac{1 - \\bar\\alpha_{k-1}}{1 - \\bar\\alpha_k}\\beta_k,

and the eps-parameterized reverse mean (Ho et al. 2020, eq. 11; seed 003 eq. 9)
``mu(x_k, k) = (x_k - beta_k / sqrt(1 - alpha_bar_k) eps) / sqrt(alpha_k)``.
The ELBO ``-log p(x_0) <= L_N + sum_{k=2}^N L_{k-1} + L_0`` (Ho et al. 2020, eq. 5) is returned term by
term (:meth:`DDPM.elbo_terms`).  Step indices ``k`` run from 1 to N (``alpha_bar_0 = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from .._args import check_int, check_tensor
from ..errors import DomainError, ParameterError, ShapeError

__all__ = ["DDPM", "ELBOTerms"]

_LOG_2PI = math.log(2 * math.pi)


class ELBOTerms(NamedTuple):
    """Terms of the DDPM negative ELBO, each per data point (``x0``'s batch shape)."""

    L_N: torch.Tensor  #: KL(q(x_N | x_0) || N(0, I)) -- exact
    L_mid: torch.Tensor  #: L_{k-1}, k = 2..N, shape (..., N-1) -- one-sample Monte-Carlo in x_k
    L_0: torch.Tensor  #: -log p(x_0 | x_1) -- one-sample Monte-Carlo in x_1

    def total(self) -> torch.Tensor:
        """Negative ELBO (an unbiased estimate of an upper bound on ``-log p(x_0)``)."""
        return self.L_N + self.L_mid.sum(-1) + self.L_0


class DDPM(nn.Module):
    """DDPM chain (Ho, Jain & Abbeel 2020) with ``betas`` (``(N,)``, in ``(0, 1)``); buffers in float64.

    Example:
        >>> ddpm = DDPM.linear(N=1000)
        >>> round(float(ddpm.betas[-1]), 6), ddpm.N
        (0.02, 1000)
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_bar: torch.Tensor
    alphas_bar_prev: torch.Tensor

    def __init__(self, betas: torch.Tensor, T: float = 1.0) -> None:
        super().__init__()
        betas = torch.as_tensor(betas).detach().to(torch.float64)
        if betas.dim() != 1 or betas.numel() < 1:
            raise ShapeError(f"betas must be a non-empty 1-d tensor (N,); got shape {tuple(betas.shape)}")
        if not bool(torch.isfinite(betas).all()) or not bool(((betas > 0) & (betas < 1)).all()):
            raise ParameterError("betas must lie in (0, 1)")
        self.T = float(T)
        self.register_buffer("betas", betas.clone())
        self.register_buffer("alphas", 1.0 - betas)
        ab = torch.cumprod(1.0 - betas, 0)
        self.register_buffer("alphas_bar", ab)
        self.register_buffer("alphas_bar_prev", torch.cat([ab.new_ones(1), ab[:-1]]))

    @property
    def N(self) -> int:
        return int(self.betas.numel())

    # ------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, N: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DDPM":
        """Ho et al. (2020): ``beta_k`` linear from ``beta_start`` to ``beta_end``."""
        check_int(N, "N")
        if not (0 < beta_start <= beta_end < 1):
            raise ParameterError(f"need 0 < beta_start <= beta_end < 1; got {beta_start!r}, {beta_end!r}")
        return cls(torch.linspace(beta_start, beta_end, N, dtype=torch.float64))

    @classmethod
    def cosine(cls, N: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "DDPM":
        """Nichol & Dhariwal (2021): ``alpha_bar_k = f(k/N)/f(0)``, ``f(u) = cos^2((u+s)/(1+s) pi/2)``,
        ``beta_k = min(1 - alpha_bar_k/alpha_bar_{k-1}, max_beta)``."""
        check_int(N, "N")
        u = torch.arange(N + 1, dtype=torch.float64) / N
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        ab = f / f[0]
        betas = (1 - ab[1:] / ab[:-1]).clamp(max=max_beta)
        return cls(betas)

    @classmethod
    def from_sde(cls, sde, N: int, exact: bool = False) -> "DDPM":
        """Discretize a VP SDE into ``N`` steps on ``t_k = k T / N``.

        ``exact=False`` (Song et al. 2021's correspondence): ``beta_k = beta(t'_k) T / N`` with
        ``t'_k = (k-1) T/(N-1)`` -- for ``VPSDE(0.1, 20)`` and ``N = 1000`` this is Ho et al.'s
        ``linspace(1e-4, 0.02, 1000)``; the chain's marginals converge to the SDE's as ``N``
        grows.  ``exact=True``: ``beta_k = 1 - alpha(t_k)^2 / alpha(t_{k-1})^2``, the chain
        matches the SDE's marginals exactly at ``t_k``.
        """
        from .vp import SubVPSDE, VPSDE

        if not isinstance(sde, VPSDE) or isinstance(sde, SubVPSDE):
            raise ParameterError(f"from_sde needs a variance-preserving VPSDE; got {type(sde).__name__}")
        check_int(N, "N", 2)
        T = sde.T
        if exact:
            t = torch.arange(N + 1, dtype=torch.float64) * (T / N)
            la = sde._log_alpha(t)
            betas = -torch.expm1(2.0 * (la[1:] - la[:-1]))
        else:
            tp = torch.arange(N, dtype=torch.float64) * (T / (N - 1))
            betas = sde._beta(tp) * (T / N)
        return cls(betas.clamp(max=0.999), T=T)

    def to_sde(self, t_min: float = 0.0):
        """The VP SDE with piecewise-constant ``beta(t) = -N/T log(1 - beta_k)`` on bin ``k``:
        ``alpha(k T/N)^2 = alpha_bar_k`` exactly, and its limit for fine steps is the usual VP SDE."""
        from .vp import PiecewiseVPSDE

        rates = -torch.log1p(-self.betas.detach().cpu()) * (self.N / self.T)
        return PiecewiseVPSDE(rates, T=self.T, t_min=t_min)

    def time(self, k: int | torch.Tensor) -> torch.Tensor:
        """SDE time ``t_k = k T / N`` of step ``k``."""
        return torch.as_tensor(k, dtype=torch.float64) * (self.T / self.N)

    # ------------------------------------------------------------ helpers
    def _k(self, k: int | torch.Tensor, x: torch.Tensor, lo: int = 1) -> torch.Tensor:
        """Validate step ``k`` (int or LongTensor with ``x``'s leading batch shape), 0-based index."""
        if isinstance(k, torch.Tensor):
            if k.dtype not in (torch.int64, torch.int32):
                raise ParameterError(f"k must be an integer tensor; got dtype {k.dtype}")
            if k.dim() > 0 and (k.dim() >= x.dim() or tuple(k.shape) != tuple(x.shape[: k.dim()])):
                raise ShapeError(f"k must be an int, 0-d or have x's leading batch shape; got shape {tuple(k.shape)}")
            from .._args import argument_checks_enabled

            if argument_checks_enabled() and k.numel() and (int(k.min()) < lo or int(k.max()) > self.N):
                raise DomainError(f"k must lie in [{lo}, {self.N}]")
            return (k.to(self.betas.device) - 1).long()
        if isinstance(k, bool) or not isinstance(k, int) or not (lo <= k <= self.N):
            raise DomainError(f"k must be an integer in [{lo}, {self.N}]; got {k!r}")
        return torch.tensor(k - 1, device=self.betas.device)

    @staticmethod
    def _at(buf: torch.Tensor, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        v = buf[idx].to(device=x.device, dtype=x.dtype)
        return v.reshape(v.shape + (1,) * (x.dim() - v.dim())) if v.dim() else v

    # ------------------------------------------------------------ chain
    def q_sample(self, x0: torch.Tensor, k: int | torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``x_k = sqrt(alpha_bar_k) x0 + sqrt(1 - alpha_bar_k) noise`` (exact sample of ``q(x_k | x0)``)."""
        check_tensor(x0, "x0")
        idx = self._k(k, x0)
        if noise is None:
            noise = torch.randn_like(x0)
        elif noise.shape != x0.shape:
            raise ShapeError(f"noise must have the shape of x0 {tuple(x0.shape)}; got {tuple(noise.shape)}")
        ab = self._at(self.alphas_bar, idx, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def q_posterior(
        self, x_k: torch.Tensor, x0: torch.Tensor, k: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of ``q(x_{k-1} | x_k, x_0)`` (Ho et al. 2020, eq. 7); variance broadcastable."""
        check_tensor(x_k, "x_k")
        check_tensor(x0, "x0")
        if x_k.shape != x0.shape:
            raise ShapeError(f"x_k and x0 must have the same shape; got {tuple(x_k.shape)} and {tuple(x0.shape)}")
        idx = self._k(k, x0)
        b, a = self._at(self.betas, idx, x0), self._at(self.alphas, idx, x0)
        ab, abp = self._at(self.alphas_bar, idx, x0), self._at(self.alphas_bar_prev, idx, x0)
        mean = (abp.sqrt() * b / (1 - ab)) * x0 + (a.sqrt() * (1 - abp) / (1 - ab)) * x_k
        return mean, (1 - abp) / (1 - ab) * b

    def p_mean(self, x_k: torch.Tensor, k: int | torch.Tensor, eps_pred: torch.Tensor) -> torch.Tensor:
        """``mu(x_k, k) = (x_k - beta_k / sqrt(1 - alpha_bar_k) eps_pred) / sqrt(alpha_k)`` (Ho et al. 2020, eq. 11)."""
        check_tensor(x_k, "x_k")
        if eps_pred.shape != x_k.shape:
            raise ShapeError(f"eps_pred must have the shape of x_k {tuple(x_k.shape)}; got {tuple(eps_pred.shape)}")
        idx = self._k(k, x_k)
        b, a, ab = (self._at(buf, idx, x_k) for buf in (self.betas, self.alphas, self.alphas_bar))
        return (x_k - b / (1 - ab).sqrt() * eps_pred) / a.sqrt()

    def p_variance(self, k: int | torch.Tensor, kind: str = "beta") -> torch.Tensor:
        """Reverse variance ``sigma_k^2``: ``beta_k`` (``"beta"``) or ``tilde beta_k`` (``"beta_tilde"``)."""
        idx = self._k(k, self.betas.new_zeros(1, 1))
        if kind == "beta":
            return self.betas[idx]
        if kind == "beta_tilde":
            return ((1 - self.alphas_bar_prev) / (1 - self.alphas_bar) * self.betas)[idx]
        raise ParameterError(f"kind must be 'beta' or 'beta_tilde'; got {kind!r}")

    def elbo_terms(
        self,
        x0: torch.Tensor,
        eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        variance: str = "beta",
    ) -> ELBOTerms:
        """Terms of the negative ELBO of ``x0`` (``(B, d)``) under ``p(x_{k-1}|x_k) = N(mu, sigma_k^2 I)``.

        ``eps_model(x_k, k)`` gets ``k`` as a ``(B,)`` LongTensor.  ``L_N`` is exact; the Gaussian
        KLs ``L_{k-1}`` are exact given ``x_k`` and Monte-Carlo (one draw per ``k``) in ``x_k``;
        ``L_0 = -log N(x_0; mu(x_1, 1), beta_1 I)`` (continuous decoder).
        """
        check_tensor(x0, "x0")
        if x0.dim() != 2:
            raise ShapeError(f"x0 must have shape (B, d); got {tuple(x0.shape)}")
        B, d = x0.shape
        sig2_all = self.betas if variance == "beta" else None
        if variance not in ("beta", "beta_tilde"):
            raise ParameterError(f"variance must be 'beta' or 'beta_tilde'; got {variance!r}")
        ab_N = float(self.alphas_bar[-1])
        # KL(N(m, v I) || N(0, I)) = 0.5 sum(v + m^2 - 1 - log v)
        m = math.sqrt(ab_N) * x0
        L_N = 0.5 * ((1 - ab_N) + m * m - 1 - math.log(1 - ab_N)).sum(-1)
        mids = []
        for k in range(2, self.N + 1):
            kk = torch.full((B,), k, dtype=torch.long, device=x0.device)
            x_k = self.q_sample(x0, k)
            mu_q, var_q = self.q_posterior(x_k, x0, k)
            mu_p = self.p_mean(x_k, k, eps_model(x_k, kk))
            var_p = float(sig2_all[k - 1]) if sig2_all is not None else float(var_q)
            vq = float(var_q)
            mids.append(0.5 * (vq / var_p + (mu_p - mu_q) ** 2 / var_p - 1 + math.log(var_p / vq)).sum(-1))
        L_mid = torch.stack(mids, -1) if mids else x0.new_zeros(B, 0)
        x1 = self.q_sample(x0, 1)
        mu1 = self.p_mean(x1, 1, eps_model(x1, torch.ones(B, dtype=torch.long, device=x0.device)))
        v1 = float(self.betas[0])
        L_0 = 0.5 * (((x0 - mu1) ** 2) / v1 + math.log(v1) + _LOG_2PI).sum(-1)
        return ELBOTerms(L_N, L_mid, L_0)

    def extra_repr(self) -> str:
        return f"N={self.N}, beta_1={float(self.betas[0]):.3g}, beta_N={float(self.betas[-1]):.3g}"
