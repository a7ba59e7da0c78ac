r"""Time grids for the samplers: ``T = t_0 > t_1 > ... > t_N = t_min`` (float64).

* ``"uniform"``: equal steps in ``t``;
* ``"quadratic"``: ``t_i = t_min + (T - t_min)(1 - i/N)^2`` (finer near the data, DDIM);
* ``"log_snr"``: equal steps in :math:`\lambda(t) = \log(\alpha^2/\sigma^2)` (DPM-Solver);
* ``"karras"``: :math:`\tilde\sigma_i = (\tilde\sigma_{max}^{1/\rho} + \frac{i}{N}(\tilde\sigma_{min}^{1/\rho}
  - \tilde\sigma_{max}^{1/\rho}))^\rho` with :math:`\tilde\sigma = \sigma/\alpha` and
  :math:`\rho = 7` (Karras et al. 2022, eq. 5), mapped back to ``t`` by inverting the log-SNR.

The grid is computed once per sampling call on the CPU in float64; samplers move
the derived coefficients to the device of the samples before their loop.
"""

from __future__ import annotations

import torch

from .._args import check_int
from ..errors import DomainError, ParameterError
from .schedule import domain, log_snr, t_from_log_snr

SPACINGS = ("uniform", "quadratic", "log_snr", "karras")

__all__ = ["SPACINGS", "time_grid"]


def time_grid(
    sde: object,
    steps: int,
    spacing: str = "uniform",
    t_min: float | None = None,
    T: float | None = None,
    rho: float = 7.0,
) -> torch.Tensor:
    """A decreasing float64 grid of ``steps + 1`` times from ``T`` to ``t_min``.

    Args:
        sde: a linear SDE (``alpha``, ``sigma``, ``T``, ``t_min``) — needed by the
            ``log_snr`` and ``karras`` spacings and for the default end points.
        steps: number of intervals ``N >= 1``.
        spacing: one of :data:`SPACINGS`.
        t_min, T: end points (default: the SDE's domain).
        rho: Karras exponent.
    """
    check_int(steps, "steps")
    lo, hi = domain(sde)
    t_min = lo if t_min is None else float(t_min)
    T = hi if T is None else float(T)
    if not (lo <= t_min < T <= hi):
        raise DomainError(f"grid end points must satisfy {lo} <= t_min < T <= {hi}; got t_min={t_min}, T={T}")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if spacing == "uniform":
        t = T + (t_min - T) * u
    elif spacing == "quadratic":
        t = t_min + (T - t_min) * (1.0 - u) ** 2
    elif spacing == "log_snr":
        lam0, lam1 = log_snr(sde, torch.tensor([T, t_min], dtype=torch.float64))
        t = t_from_log_snr(sde, lam0 + (lam1 - lam0) * u)
    elif spacing == "karras":
        if not rho > 0:
            raise ParameterError(f"rho must be positive; got {rho!r}")
        lam = log_snr(sde, torch.tensor([T, t_min], dtype=torch.float64))
        s_max, s_min = torch.exp(-0.5 * lam)  # sigma / alpha
        s = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        t = t_from_log_snr(sde, -2.0 * torch.log(s))
    else:
        raise ParameterError(f"spacing must be one of {SPACINGS}; got {spacing!r}")
    t[0], t[-1] = T, t_min  # exact end points (the bisection is accurate to ~1e-16 only)
    return t
