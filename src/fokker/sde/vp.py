"""Variance-preserving SDEs: linear-beta VP, cosine VP, sub-VP and piecewise-constant VP.

Seed 001 eq. (58) / Song et al. (2021), "Score-Based Generative Modeling through SDEs":

.. math::

    dX = -\\tfrac12 \\beta(t) X\\,dt + \\sqrt{\\beta(t)}\\,dW, \\qquad
    \\alpha(t) = e^{-B(t)/2}, \\quad \\sigma^2(t) = 1 - e^{-B(t)}, \\quad B(t) = \\int_0^t \\beta,

so ``alpha^2 + sigma^2 = 1``.  Sub-VP (same paper, eq. 29): diffusion
``beta(t) (1 - e^{-2 B(t)})``, ``sigma(t) = 1 - e^{-B(t)}``.  The cosine schedule is
Nichol & Dhariwal (2021), "Improved DDPM": ``alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0))``
with ``phi(t) = (t + s)/(1 + s) pi/2`` and ``s = 0.008``; its rate
``beta(t) = pi/(1+s) tan(phi(t))`` blows up at ``t = 1`` and is clipped at ``max_beta``
(the continuous analogue of their clipping of ``beta_k`` at 0.999: ``999`` corresponds
to ``N = 1000`` steps), after which ``B`` grows linearly -- still in closed form.
All formulas are exact, in float64.
"""

from __future__ import annotations

import math

import torch

from ..errors import ParameterError
from .linear import LinearSDE, _positive_number

__all__ = ["VPSDE", "CosineVPSDE", "SubVPSDE", "PiecewiseVPSDE"]


class VPSDE(LinearSDE):
    """VP SDE with linear ``beta(t) = beta_min + (beta_max - beta_min) t / T`` (Song et al. 2021, eq. 11; seed 001 eq. 58).

    Example:
        >>> vp = VPSDE(beta_min=0.1, beta_max=20.0)
        >>> float(vp.alpha(0.0)), round(float(vp.sigma(1.0)), 4)
        (1.0, 1.0)
    """

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        T: float = 1.0,
        t_min: float = 0.0,
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(T=T, t_min=t_min, event_shape=event_shape)
        self.beta_min = _positive_number(beta_min, "beta_min")
        self.beta_max = _positive_number(beta_max, "beta_max")

    # integrated rate B(t) and rate beta(t): the only schedule-specific parts
    def _B(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t / self.T

    def _beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * t / self.T

    def beta(self, t: float | torch.Tensor) -> torch.Tensor:
        """The rate ``beta(t) = g(t)^2 = -2 a(t)``."""
        return self._schedule(self._beta, t)

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * self._B(t)

    def _sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(-self._B(t))

    def _f(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * self._beta(t)

    def _g2(self, t: torch.Tensor) -> torch.Tensor:
        return self._beta(t)

    def _transition_var(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(-(self._B(t) - self._B(s)))

    @classmethod
    def cosine(
        cls, s: float = 0.008, max_beta: float = 999.0, t_min: float = 0.0, event_shape: tuple[int, ...] | None = None
    ) -> "CosineVPSDE":
        """Nichol & Dhariwal's cosine schedule as a VP SDE on ``[0, 1]`` (see :class:`CosineVPSDE`)."""
        return CosineVPSDE(s=s, max_beta=max_beta, t_min=t_min, event_shape=event_shape)

    def extra_repr(self) -> str:
        return f"beta_min={self.beta_min:g}, beta_max={self.beta_max:g}, " + super().extra_repr()


class CosineVPSDE(VPSDE):
    """VP SDE with the cosine schedule: ``alpha(t)^2 = cos^2(phi(t))/cos^2(phi(0))`` until the clip.

    ``beta(t) = min(pi/(1+s) tan(phi(t)), max_beta)``; for ``t > t*`` (where the clip starts)
    ``B(t) = B(t*) + max_beta (t - t*)``.  ``T = 1``.
    """

    def __init__(
        self, s: float = 0.008, max_beta: float = 999.0, t_min: float = 0.0, event_shape: tuple[int, ...] | None = None
    ) -> None:
        LinearSDE.__init__(self, T=1.0, t_min=t_min, event_shape=event_shape)
        self.s = _positive_number(s, "s")
        self.max_beta = _positive_number(max_beta, "max_beta")
        self._c = math.pi / (2.0 * (1.0 + self.s))  # phi'(t)
        phi_star = math.atan(self.max_beta / (2.0 * self._c))
        self.t_star = min(phi_star / self._c - self.s, 1.0)
        if self.t_star <= 0:
            raise ParameterError(f"max_beta={max_beta!r} clips the whole schedule; use a larger value")
        self._log_cos0 = math.log(math.cos(self._c * self.s))
        self._B_star = -2.0 * (math.log(math.cos(self._c * (self.t_star + self.s))) - self._log_cos0)
        self.beta_min = float(2.0 * self._c * math.tan(self._c * self.s))
        self.beta_max = self.max_beta

    def _B(self, t: torch.Tensor) -> torch.Tensor:
        tc = t.clamp(max=self.t_star)
        b_cos = -2.0 * (torch.log(torch.cos(self._c * (tc + self.s))) - self._log_cos0)
        return b_cos.clamp_min(0.0) + self.max_beta * (t - tc)

    def _beta(self, t: torch.Tensor) -> torch.Tensor:
        tc = t.clamp(max=self.t_star)
        return torch.where(t <= self.t_star, 2.0 * self._c * torch.tan(self._c * (tc + self.s)), self.max_beta)

    def extra_repr(self) -> str:
        return f"s={self.s:g}, max_beta={self.max_beta:g}, t_star={self.t_star:.6g}, t_min={self.t_min:g}"


class PiecewiseVPSDE(VPSDE):
    """VP SDE whose rate is constant on ``N`` equal bins of ``[0, T]``: ``beta(t) = rates[k]``.

    Used by :meth:`fokker.sde.DDPM.to_sde`: with ``rates[k] = -N/T log(1 - beta_k)`` the
    SDE's ``alpha(k T / N)^2`` equals the chain's ``alpha_bar_k`` exactly.
    """

    def __init__(
        self, rates: torch.Tensor, T: float = 1.0, t_min: float = 0.0, event_shape: tuple[int, ...] | None = None
    ) -> None:
        LinearSDE.__init__(self, T=T, t_min=t_min, event_shape=event_shape)
        rates = torch.as_tensor(rates, dtype=torch.float64).detach().cpu()
        if rates.dim() != 1 or rates.numel() < 1:
            raise ParameterError(f"rates must be a non-empty 1-d tensor; got shape {tuple(rates.shape)}")
        if not bool(torch.isfinite(rates).all()) or not bool((rates > 0).all()):
            raise ParameterError("rates must be positive and finite")
        self.n_bins = rates.numel()
        self._rates = rates
        self._cum = torch.cat([rates.new_zeros(1), torch.cumsum(rates, 0) * (T / self.n_bins)])
        self._device_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.beta_min = float(rates.min())
        self.beta_max = float(rates.max())

    def _bin(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.clamp(torch.floor(t * (self.n_bins / self.T)), 0, self.n_bins - 1).long()
        return k, t - k.to(torch.float64) * (self.T / self.n_bins)

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cumulative B at bin edges, rates)`` on ``device`` (float64; copied once per device)."""
        tab = self._device_tables.get(device)
        if tab is None:
            tab = self._device_tables[device] = (self._cum.to(device), self._rates.to(device))
        return tab

    def _B(self, t: torch.Tensor) -> torch.Tensor:
        k, dt = self._bin(t)
        cum, rates = self._tables(t.device)
        return cum[k] + rates[k] * dt

    def _beta(self, t: torch.Tensor) -> torch.Tensor:
        k, _ = self._bin(t)
        return self._tables(t.device)[1][k]

    def extra_repr(self) -> str:
        return f"n_bins={self.n_bins}, T={self.T:g}, t_min={self.t_min:g}"


class SubVPSDE(VPSDE):
    """Sub-VP SDE (Song et al. 2021, eq. 29): ``g^2 = beta(t)(1 - e^{-2B(t)})``, ``sigma = 1 - e^{-B}``.

    Its marginal variance ``(1 - e^{-B})^2`` is below the VP one ``1 - e^{-B}``.
    """

    def _sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return torch.expm1(-self._B(t)) ** 2

    def _g2(self, t: torch.Tensor) -> torch.Tensor:
        return -self._beta(t) * torch.expm1(-2.0 * self._B(t))

    def _transition_var(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return LinearSDE._transition_var(self, s, t)
