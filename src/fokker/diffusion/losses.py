r"""Denoising score-matching losses, their weightings and importance sampling of ``t``.

With :math:`t \sim \mathcal U(t_{min}, T)`, :math:`x_0 \sim p_{data}`,
:math:`x_t = \alpha x_0 + \sigma\varepsilon` (Song et al. 2021, eq. 7; seed 001 eqs. 52-56):

* ``"simple"`` (Ho et al. 2020): the unweighted mean squared error of the network's own
  target (``eps``, ``x0``, ``score`` or ``v``), averaged over event elements;
* ``"sigma2"`` (Song et al. 2021, :math:`\lambda(t) = \sigma^2`):
  :math:`\tfrac12\sigma^2\|\hat s - \nabla\log p_{t|0}\|^2 = \tfrac12\|\hat\varepsilon - \varepsilon\|^2`,
  summed over event dims;
* ``"likelihood"`` (Song, Durkan et al. 2021, :math:`\lambda(t) = g^2`): the score-flow
  bound's integrand :math:`\tfrac12 (T - t_{min})\, g^2 \|\hat s - \nabla\log p_{t|0}\|^2`, whose
  expectation is :math:`\tfrac12\int g^2\, E\|\hat s - \nabla \log p_{t|0}\|^2 dt`.

With ``importance_sampling=True`` the likelihood weighting draws ``t`` with density
:math:`q(t) \propto g^2(t)/\sigma^2(t) = -\lambda'(t)` (:math:`\lambda` = log-SNR), i.e.
uniformly in log-SNR, and reweights: the loss becomes
:math:`\tfrac12 (\lambda(t_{min}) - \lambda(T))\,\|\hat\varepsilon - \varepsilon\|^2` — the
same expectation with a much smaller variance.
"""

from __future__ import annotations

import torch

from .._args import check_int
from .._random import rand, randn
from ..errors import ParameterError
from .parameterization import expand_like, to_eps, to_x0

WEIGHTINGS = ("simple", "sigma2", "likelihood", "edm")

__all__ = ["WEIGHTINGS", "LogSNRTimeSampler", "LogNormalTimeSampler", "edm_coefficients", "dsm_loss"]


def check_weighting(weighting: str) -> str:
    if weighting not in WEIGHTINGS:
        raise ParameterError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")
    return weighting


class LogSNRTimeSampler:
    r"""Draws ``t`` uniformly in log-SNR on ``[t_min, T]`` (density :math:`\propto g^2/\sigma^2`).

    The importance sampling of the likelihood weighting of Song, Durkan, Murray & Ermon (2021,
    *Maximum likelihood training of score-based diffusion models*, sec. 5.1), written in the
    log-SNR variable of Kingma, Salimans, Poole & Ho (2021, *Variational diffusion models*, eq. 17).
    The inverse map ``lambda -> t`` is tabulated once (float64 bisection on ``num_knots`` knots) and
    interpolated linearly afterwards, so drawing costs no solve.
    """

    def __init__(self, sde: object, t_min: float, T: float, num_knots: int = 4097) -> None:
        check_int(num_knots, "num_knots", minimum=2)
        lam = sde.log_snr(torch.tensor([t_min, T], dtype=torch.float64))
        self.lam_lo, self.lam_hi = float(lam[1]), float(lam[0])  # lambda decreases in t
        self.knots = sde.time_at_log_snr(torch.linspace(self.lam_hi, self.lam_lo, num_knots, dtype=torch.float64))
        self.knots[0], self.knots[-1] = t_min, T
        #: normalizer Z = lambda(t_min) - lambda(T) = int g^2 / sigma^2 dt
        self.Z = self.lam_hi - self.lam_lo

    def __call__(
        self,
        num_samples: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``(num_samples,)`` float64 times on ``device`` (uniform in log-SNR here; see :meth:`_draw`)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        return self._draw(num_samples, generator, device)

    def _draw(self, num_samples: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """The times: a uniform fraction of the log-SNR range, through the tabulated inverse."""
        return self._interpolate(rand((num_samples,), generator=generator, dtype=torch.float64).to(device))

    def _interpolate(self, u: torch.Tensor) -> torch.Tensor:
        """``t`` at the fraction ``u`` in ``[0, 1]`` of the way from ``lambda(t_min)`` down to ``lambda(T)``."""
        if self.knots.device != u.device:
            self.knots = self.knots.to(u.device)  # moved once, then reused
        knots = self.knots
        pos = u.clamp(0.0, 1.0) * (len(knots) - 1)
        i = pos.floor().long().clamp(max=len(knots) - 2)
        w = pos - i
        return knots[i] * (1 - w) + knots[i + 1] * w

    def time_of(self, log_snr: torch.Tensor) -> torch.Tensor:
        """The time with log-SNR ``log_snr`` (clipped to ``[t_min, T]``), by the tabulated inverse."""
        return self._interpolate((self.lam_hi - log_snr.to(torch.float64)) / (self.lam_hi - self.lam_lo))


class LogNormalTimeSampler(LogSNRTimeSampler):
    r"""EDM's noise distribution (Karras, Aittala, Aila & Laine 2022, *Elucidating the design space of
    diffusion-based generative models*, table 1): :math:`\ln\tilde\sigma \sim N(P_{mean}, P_{std}^2)` with
    :math:`\tilde\sigma = \sigma/\alpha`, mapped to ``t`` through the log-SNR :math:`\lambda = -2\ln\tilde\sigma`
    (levels beyond the SDE's domain clip to ``t_min`` or ``T``)."""

    def __init__(self, sde: object, t_min: float, T: float, p_mean: float = -1.2, p_std: float = 1.2,
                 num_knots: int = 4097) -> None:
        super().__init__(sde, t_min, T, num_knots)
        if not p_std > 0:
            raise ParameterError(f"p_std must be positive; got {p_std!r}")
        self.p_mean, self.p_std = float(p_mean), float(p_std)

    def _draw(self, num_samples: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """The times with ``ln(sigma/alpha) ~ N(p_mean, p_std^2)``."""
        z = randn((num_samples,), generator=generator, dtype=torch.float64).to(device)
        return self.time_of(-2.0 * (self.p_mean + self.p_std * z))


def edm_coefficients(sigma_tilde: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    r"""EDM's preconditioning (Karras et al. 2022, table 1) at the noise level :math:`\tilde\sigma = \sigma/\alpha`:

    .. math::

        c_{skip} = \frac{\sigma_d^2}{\tilde\sigma^2 + \sigma_d^2}, \quad
        c_{out} = \frac{\tilde\sigma \sigma_d}{\sqrt{\tilde\sigma^2 + \sigma_d^2}}, \quad
        c_{in} = \frac{1}{\sqrt{\tilde\sigma^2 + \sigma_d^2}}, \quad
        \lambda = \frac{\tilde\sigma^2 + \sigma_d^2}{(\tilde\sigma \sigma_d)^2}

    so that the network's input and its regression target have unit variance at every level and
    the loss weight ``lambda`` makes the effective weight on the denoiser's error uniform.
    Returns ``(c_skip, c_out, c_in, lambda)``.
    """
    s2 = sigma_tilde * sigma_tilde
    d2 = sigma_data * sigma_data
    r = torch.sqrt(s2 + d2)
    return d2 / (s2 + d2), sigma_tilde * sigma_data / r, 1.0 / r, (s2 + d2) / (s2 * d2)


def dsm_loss(
    pred: torch.Tensor,
    kind: str,
    x0: torch.Tensor,
    xt: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    sde: object,
    weighting: str,
    t_range: tuple[float, float],
    importance_weight: float | None = None,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """Per-sample DSM loss ``(batch,)`` of a prediction of type ``kind`` at ``(xt, t)``.

    ``importance_weight`` (the log-SNR range ``Z``) switches the likelihood weighting to its
    importance-sampled form (``t`` must then be drawn by :class:`LogSNRTimeSampler`).
    """
    check_weighting(weighting)
    c = sde.coefficients(t)
    a, s = expand_like(c.alpha, xt), expand_like(c.sigma, xt)
    dims = tuple(range(1, xt.dim()))
    if weighting == "edm":  # Karras et al. 2022, eq. 2 with table 1's lambda: on the denoiser's error
        lam = edm_coefficients(c.sigma / c.alpha, sigma_data)[3].to(xt.dtype)
        return lam * ((to_x0(xt, pred, kind, a, s) - x0) ** 2).mean(dims)
    if weighting == "simple":
        target = {"eps": eps, "x0": x0, "score": -eps / s, "v": a * eps - s * x0}[kind]
        return ((pred - target) ** 2).mean(dims)
    err2 = ((to_eps(xt, pred, kind, a, s) - eps) ** 2).sum(dims)  # = sigma^2 ||s_hat - grad log p_{t|0}||^2
    if weighting == "sigma2":
        return 0.5 * err2
    if importance_weight is not None:
        return 0.5 * importance_weight * err2
    t_min, T = t_range
    return 0.5 * (T - t_min) * (c.g2 / c.sigma**2).to(xt.dtype) * err2
