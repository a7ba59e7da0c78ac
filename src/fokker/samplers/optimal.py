"""Closed-form optimal controls for Gaussian targets ``pi = N(mu, diag(v))``.

Plugging :class:`GaussianOptimalControl` in as a sampler's network gives log
weights whose variance vanishes as the step size goes to 0 (the learned kernel has
the reference's fixed covariance, so in discrete time it is optimal only up to the
discretization).  It also serves as the ground truth that a trained control is
compared with.  Formulas (``t`` is the sampler's generative time):

* DDS: the target path measure has marginals ``p*_t = N(c mu, c^2 v + (1 - c^2) sigma^2)``,
  ``c = exp(-beta (T - t))`` (exact at the grid points), and the optimal network output
  is ``f* = grad log p*_t(x) + x / sigma^2`` (the optimal control of Vargas, Grathwohl & Doucet
  2023, sec. 3, divided by ``g``; seed 001 eq. 82).
* PIS: ``f* = grad log h_t`` with ``h_t(x) = E[pi(X_T) / N(X_T; 0, sigma^2 T) | X_t = x]``:
  ``f*(x) = [x (v / T^2 - sigma^2 / T) / sigma^2 + mu / T] / w(t)``,
  ``w(t) = t v / T^2 + sigma^2 (T - t) / T`` (finite at ``t = 0``).
* DIS: the score of the VP-noised target at ``tau = T - t``:
  ``N(a mu, a^2 v + (1 - a^2) sigma^2)``, ``a = exp(-1/2 int_0^tau beta)``.
* CMCD: a transport field of the geometric path between the base ``N(m_0, diag(v_0))`` and the
  target, whose marginals ``pi_beta = N(m(beta), v(beta))`` have precision
  ``1/v = (1 - beta)/v_0 + beta/v`` and mean ``m = v ((1 - beta) m_0/v_0 + beta mu/v)``:
  ``u = (d beta/dt) [m'(beta) + v'(beta) / (2 v(beta)) (x - m(beta))]`` (per coordinate the
  flow that moves the quantiles, Vargas, Padhy, Blessing & Nüsken 2024, sec. 3: the continuity
  equation ``d pi_t/dt + div(pi_t u_t) = 0``).  In the discrete chain ``d beta/dt`` at step ``k``
  is ``(beta_{k+1} - beta_k) / h_k`` (the last state takes the last step's rate).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ParameterError, ShapeError
from .base import DiffusionSampler
from .cmcd import CMCD
from .dds import DDS
from .dis import DIS
from .pis import PIS

__all__ = ["GaussianOptimalControl"]


class GaussianOptimalControl(nn.Module):
    """Optimal ``f*(x, t/T)`` of ``sampler`` for the target ``N(mean, diag(var))`` (ignores the feature).

    The optimal controls of DDS (Vargas, Grathwohl & Doucet 2023, sec. 3), PIS (Zhang & Chen 2022,
    sec. 3: ``grad log h_t``, the Föllmer drift of a Gaussian target) and DIS (Berner, Richter &
    Ullrich 2024, sec. 3: the score of the noised target) in closed form for a diagonal Gaussian
    target; the formulas are in the module docstring.
    """

    def __init__(self, sampler: DiffusionSampler, mean: torch.Tensor, var: torch.Tensor) -> None:
        super().__init__()
        if mean.shape != (sampler.dim,) or var.shape != (sampler.dim,):
            raise ShapeError(f"mean and var must have shape ({sampler.dim},); got {tuple(mean.shape)}, {tuple(var.shape)}")
        if not isinstance(sampler, (DDS, PIS, DIS, CMCD)):
            raise ParameterError(f"no closed form for sampler type {type(sampler).__name__}")
        if isinstance(sampler, CMCD):
            self._cmcd_tables(sampler, mean, var)
        self.kind = type(sampler).__name__
        self.T, self.sigma = sampler.T, sampler.sigma
        self.beta = getattr(sampler, "beta", None)
        self._sampler_ref = [sampler]  # not a submodule
        self.register_buffer("mean", mean.clone())
        self.register_buffer("var", var.clone())
        self.to(mean.device)  # every table on the target's device (the sampler checks the first buffer)

    def _cmcd_tables(self, sampler: CMCD, mean: torch.Tensor, var: torch.Tensor) -> None:
        if sampler.fixed_base is not None:
            raise ParameterError("the closed-form CMCD control needs the sampler's own diagonal Gaussian base")
        with torch.no_grad():
            m0 = sampler.base_loc.detach().double().cpu()
            v0 = torch.exp(2 * sampler.base_log_scale.detach().double().cpu())
            beta = sampler.betas().detach().double().cpu()[:, None]
            h = sampler.step_sizes().detach().double().cpu()
        mu, v = mean.double().cpu(), var.double().cpu()
        prec = (1 - beta) / v0 + beta / v
        vb = 1 / prec
        a = (1 - beta) * m0 / v0 + beta * mu / v
        mb = vb * a
        dprec = 1 / v - 1 / v0
        dv = -vb * vb * dprec
        dm = dv * a + vb * (mu / v - m0 / v0)
        rate = torch.diff(beta[:, 0]) / h
        rate = torch.cat([rate, rate[-1:]])[:, None]  # (K + 1, 1)
        # u_k(x) = rate_k [m'_k + v'_k / (2 v_k) (x - m_k)] = slope_k x + offset_k
        slope = rate * dv / (2 * vb)
        self.register_buffer("cmcd_times", sampler.times.clone())
        self.register_buffer("cmcd_slope", slope)  # float64 tables, moved to the target's device below
        self.register_buffer("cmcd_offset", rate * dm - slope * mb)

    def _gauss_score(self, x: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return -(x - m) / v

    def forward(self, x: torch.Tensor, t_norm: torch.Tensor, feature: torch.Tensor | None = None) -> torch.Tensor:
        mu, v = self.mean.to(x), self.var.to(x)
        t = torch.as_tensor(t_norm, dtype=x.dtype, device=x.device) * self.T
        s2 = self.sigma**2
        if self.kind == "DDS":
            c = torch.exp(-self.beta * (self.T - t))
            return self._gauss_score(x, c * mu, c * c * v + (1 - c * c) * s2) + x / s2
        if self.kind == "CMCD":
            k = torch.argmin((self.cmcd_times.to(t) - t.reshape(-1, 1) / self.T).abs(), dim=-1)
            k = k.reshape(t.shape)
            return self.cmcd_slope.to(x)[k] * x + self.cmcd_offset.to(x)[k]
        if self.kind == "PIS":
            T = self.T
            w = t * v / T**2 + s2 * (T - t) / T
            return (x * (v / T**2 - s2 / T) / s2 + mu / T) / w
        dis: DIS = self._sampler_ref[0]  # type: ignore[assignment]
        a = dis.noising.alpha((self.T - t).clamp_min(0.0)).to(x)  # float32 t/T * T may overshoot T
        return self._gauss_score(x, a * mu, a * a * v + (1 - a * a) * s2)
