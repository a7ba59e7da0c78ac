r"""Schedule coefficients of a linear forward SDE, computed in float64.

A linear SDE :math:`dX = f(t) X\,dt + g(t)\,dW` has Gaussian transitions
:math:`x_t = \alpha(t)x_0 + \sigma(t)\varepsilon` (seed 001, Prop. 1) with

.. math::

    f(t) = \frac{d}{dt}\log\alpha(t), \qquad
    g^2(t) = \frac{d\sigma^2}{dt} - 2 f(t)\,\sigma^2(t), \qquad
    \lambda(t) = \log\frac{\alpha^2(t)}{\sigma^2(t)} .

:func:`coefficients` reads ``alpha`` and ``sigma`` from the SDE object and obtains
``f`` and ``g^2`` from the SDE's own float64 hooks (``fokker.sde.LinearSDE``) or,
for any other object with ``alpha(t)``/``sigma(t)``, by automatic differentiation
of those two (elementwise) functions in float64, so the samplers need no per-SDE code.  Everything here runs
once per sampling call, on the precomputed time grid, never inside a loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..errors import ParameterError

__all__ = ["Coefficients", "coefficients", "domain", "log_snr", "t_from_log_snr", "as_time"]


class Coefficients(NamedTuple):
    """Per-time schedule values (float64 tensors of the shape of ``t``)."""

    t: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor
    f: torch.Tensor
    g2: torch.Tensor

    @property
    def log_snr(self) -> torch.Tensor:
        return 2.0 * (torch.log(self.alpha) - torch.log(self.sigma))

    def to(self, dtype: torch.dtype, device: torch.device | str | None = None) -> "Coefficients":
        return Coefficients(*(v.to(device=device, dtype=dtype) for v in self))


#: Default smallest time when the SDE's domain starts where ``sigma = 0`` (Song et al. 2021 use 1e-3
#: for sampling): the score is singular there.
DEFAULT_T_EPS = 1e-3


def domain(sde: object) -> tuple[float, float]:
    """``(t_min, T)`` of an SDE as used by training and sampling.

    ``t_min`` is the SDE's ``t_min`` when ``sigma(t_min) > 0`` (e.g. VE with ``sigma_min``),
    else ``t_min + DEFAULT_T_EPS * (T - t_min)``: at ``sigma = 0`` the score does not exist.
    """
    T = float(getattr(sde, "T", 1.0))
    t_min = float(getattr(sde, "t_min", 0.0))
    _, sigma = _alpha_sigma(sde, torch.tensor([t_min], dtype=torch.float64))
    if not bool(sigma[0] > 0):
        t_min = t_min + DEFAULT_T_EPS * (T - t_min)
    return t_min, T


def as_time(t: torch.Tensor | float, like: torch.Tensor | None = None) -> torch.Tensor:
    """A float64 tensor copy of ``t`` (on ``like``'s device if given)."""
    device = like.device if like is not None else None
    return torch.as_tensor(t, dtype=torch.float64, device=device)


def _alpha_sigma(sde: object, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(sde, "_log_alpha") and hasattr(sde, "_sigma2"):
        # fokker.sde.LinearSDE: float64 hooks without the domain check (which syncs on tensors).
        return torch.exp(sde._log_alpha(t)).expand_as(t), sde._sigma2(t).sqrt().expand_as(t)
    alpha = sde.alpha(t)  # type: ignore[attr-defined]
    sigma = sde.sigma(t)  # type: ignore[attr-defined]
    alpha = torch.as_tensor(alpha, dtype=t.dtype, device=t.device).expand_as(t)
    sigma = torch.as_tensor(sigma, dtype=t.dtype, device=t.device).expand_as(t)
    return alpha, sigma


def coefficients(sde: object, t: torch.Tensor | float) -> Coefficients:
    """``alpha, sigma, f, g^2`` of a linear SDE at times ``t`` (float64)."""
    if not (hasattr(sde, "alpha") and hasattr(sde, "sigma")):
        raise ParameterError(
            f"sde must be a linear SDE with alpha(t) and sigma(t) (a fokker.sde.LinearSDE); got {type(sde).__name__}"
        )
    t = as_time(t)
    if all(hasattr(sde, h) for h in ("_log_alpha", "_sigma2", "_a", "_g2")):
        alpha, sigma = _alpha_sigma(sde, t)
        return Coefficients(t, alpha, sigma, sde._a(t).expand_as(t), sde._g2(t).expand_as(t))
    # alpha and sigma act elementwise on t, so the gradient of their sum is the elementwise derivative
    with torch.enable_grad():
        tg = t.detach().requires_grad_(True)
        alpha, sigma = _alpha_sigma(sde, tg)
        zero = torch.zeros_like(t)
        dalpha = torch.autograd.grad(alpha.sum(), tg, retain_graph=True)[0] if alpha.requires_grad else zero
        dsigma = torch.autograd.grad(sigma.sum(), tg)[0] if sigma.requires_grad else zero
    alpha, sigma = alpha.detach(), sigma.detach()
    f = dalpha / alpha
    g2 = 2.0 * sigma * dsigma - 2.0 * f * sigma**2
    return Coefficients(t, alpha, sigma, f, g2.clamp_min(0.0))


def log_snr(sde: object, t: torch.Tensor | float) -> torch.Tensor:
    r"""``lambda(t) = log(alpha^2 / sigma^2)`` in float64."""
    t = as_time(t)
    alpha, sigma = _alpha_sigma(sde, t)
    return 2.0 * (torch.log(alpha) - torch.log(sigma))


def t_from_log_snr(sde: object, lam: torch.Tensor, iters: int = 100) -> torch.Tensor:
    r"""Invert the (decreasing) log-SNR by vectorized bisection on ``[t_min, T]`` (float64).

    Values outside ``[lambda(T), lambda(t_min)]`` clip to the end points.  100
    halvings reach float64 resolution of the interval.
    """
    t_min, T = domain(sde)
    lam = as_time(lam)
    lo = torch.full_like(lam, t_min)
    hi = torch.full_like(lam, T)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = log_snr(sde, mid) > lam  # lambda decreasing: the root lies to the right
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return 0.5 * (lo + hi)
