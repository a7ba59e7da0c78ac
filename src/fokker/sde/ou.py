"""Ornstein-Uhlenbeck process and (scaled) Brownian motion: linear SDEs with constant coefficients.

OU: ``dX = -theta X dt + sigma dW``; ``alpha(t) = e^{-theta t}``,
``sigma^2(t) = sigma^2 / (2 theta) (1 - e^{-2 theta t})`` (Uhlenbeck & Ornstein 1930; Särkkä & Solin 2019, eq. 6.2
with constant ``f = -theta``, ``g = sigma``).  Brownian motion: ``dX = sigma dW``,
``alpha = 1``, ``sigma^2(t) = sigma^2 t``.  Exact, float64.
"""

from __future__ import annotations

import torch

from .linear import LinearSDE, _positive_number

__all__ = ["OrnsteinUhlenbeck", "BrownianMotion"]


class OrnsteinUhlenbeck(LinearSDE):
    """``dX = -theta X dt + sigma dW`` on ``[t_min, T]``; stationary law ``N(0, sigma^2/(2 theta))``.

    Uhlenbeck & Ornstein (1930); the reference process of DDS (Vargas, Grathwohl & Doucet 2023).
    """

    def __init__(
        self,
        theta: float = 1.0,
        sigma: float = 2.0**0.5,
        T: float = 1.0,
        t_min: float = 0.0,
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(T=T, t_min=t_min, event_shape=event_shape)
        self.theta = _positive_number(theta, "theta")
        self.sigma_ = _positive_number(sigma, "sigma")

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return -self.theta * t

    def _sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return -self.sigma_**2 / (2.0 * self.theta) * torch.expm1(-2.0 * self.theta * t)

    def _f(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, -self.theta)

    def _g2(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, self.sigma_**2)

    def _transition_var(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._sigma2(t - s)

    def extra_repr(self) -> str:
        return f"theta={self.theta:g}, sigma={self.sigma_:g}, " + super().extra_repr()


class BrownianMotion(LinearSDE):
    """``dX = sigma dW``: ``alpha = 1``, ``sigma^2(t) = sigma^2 t``.

    Wiener (1923); the reference process of PIS (Zhang & Chen 2022).
    """

    def __init__(
        self, sigma: float = 1.0, T: float = 1.0, t_min: float = 0.0, event_shape: tuple[int, ...] | None = None
    ) -> None:
        super().__init__(T=T, t_min=t_min, event_shape=event_shape)
        self.sigma_ = _positive_number(sigma, "sigma")

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def _sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_**2 * t

    def _f(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, self.sigma_**2)

    def _transition_var(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_**2 * (t - s)

    def _drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma_:g}, " + super().extra_repr()
