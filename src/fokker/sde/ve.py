"""Variance-exploding SDE (seed 001 eq. 57; Song et al. 2021, NCSN++ "VE SDE").

.. math::

    \\sigma(t) = \\sigma_{\\min} (\\sigma_{\\max}/\\sigma_{\\min})^t, \\qquad
    dX = \\sqrt{\\tfrac{d\\sigma^2}{dt}}\\, dW = \\sigma(t)\\sqrt{2 \\log(\\sigma_{\\max}/\\sigma_{\\min})}\\, dW,

with ``alpha = 1``.  ``marginal(x0, t) = N(x0, sigma(t)^2 I)`` is the perturbation kernel
of score_sde (the SDE started at ``t = 0`` from ``N(x0, sigma_min^2 I)``); the SDE's own
transition is ``N(x_s, (sigma(t)^2 - sigma(s)^2) I)``.  Exact, float64.
"""

from __future__ import annotations

import math

import torch

from ..errors import ParameterError
from .linear import LinearSDE, _positive_number

__all__ = ["VESDE"]


class VESDE(LinearSDE):
    """VE SDE with geometric ``sigma(t) = sigma_min (sigma_max / sigma_min)^(t/T)``.

    Example:
        >>> ve = VESDE(sigma_min=0.01, sigma_max=50.0)
        >>> round(float(ve.sigma(1.0)), 6)
        50.0
    """

    def __init__(
        self,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        T: float = 1.0,
        t_min: float = 0.0,
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(T=T, t_min=t_min, event_shape=event_shape)
        self.sigma_min = _positive_number(sigma_min, "sigma_min")
        self.sigma_max = _positive_number(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ParameterError(f"sigma_max must exceed sigma_min; got {sigma_max!r} <= {sigma_min!r}")
        self._log_ratio = math.log(self.sigma_max / self.sigma_min) / self.T

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def _sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min**2 * torch.exp(2.0 * self._log_ratio * t)

    def _f(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: torch.Tensor) -> torch.Tensor:
        return 2.0 * self._log_ratio * self._sigma2(t)

    def _transition_var(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # sigma_min^2 (r^{2t} - r^{2s}) = sigma^2(t) (1 - r^{-2(t-s)})
        return -self._sigma2(t) * torch.expm1(-2.0 * self._log_ratio * (t - s))

    def _drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def extra_repr(self) -> str:
        return f"sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, " + super().extra_repr()
