"""The one time-grid builder of the library: ``t_0 = start, ..., t_N = end`` (float64).

Spacings, with ``u_k = k / N``:

* ``"uniform"``: ``t_k = start + (end - start) u_k``.
* ``"quadratic"``: ``t_k = end + (start - end)(1 - u_k)^2``, finer near ``end`` (DDIM's
  quadratic skip, Song, Meng & Ermon 2021, appendix D.2).
* ``"cosine"``: step ``k`` proportional to ``cos^4(pi/2 (u_k + s)/(1 + s))``, finer near ``end``
  (the "cos_sq" grid of the DDS code, Vargas, Grathwohl & Doucet 2023, after the cosine
  schedule of Nichol & Dhariwal 2021; with ``u_k = k/N`` all ``N`` steps are proper).
* ``"log_snr"``: equal steps in the log-SNR ``lambda(t) = log(alpha^2/sigma^2)`` of ``sde``
  (DPM-Solver, Lu et al. 2022, sec. 3.3).
* ``"karras"``: equal steps in ``sigma_tilde^(1/rho)``, ``sigma_tilde = sigma/alpha``, ``rho = 7``
  (Karras et al. 2022, eq. 5), mapped back to ``t`` through the log-SNR of ``sde``.

Direction follows ``start`` and ``end``: generative samplers of diffusion models run from
``T`` down to a small time, learned samplers for unnormalized targets from 0 up to ``T``,
solvers either way.
"""

from __future__ import annotations

import math

import torch

from .._args import check_int
from ..errors import DomainError, ParameterError

__all__ = ["SPACINGS", "time_grid"]

SPACINGS = ("uniform", "quadratic", "cosine", "log_snr", "karras")
_NEEDS_SDE = ("log_snr", "karras")


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ParameterError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def time_grid(
    num_steps: int,
    start: float | None = None,
    end: float | None = None,
    spacing: str = "uniform",
    *,
    sde: object | None = None,
    rho: float = 7.0,
    s: float = 0.008,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A float64 grid of ``num_steps + 1`` times from ``start`` to ``end`` (see the module docstring).

    Args:
        num_steps: number of intervals ``N >= 1``.
        start, end: end points (any order). With ``sde`` and neither given: ``sde.T`` down to the
            smallest time where the score exists (``sde.score_domain()[0]``).
        spacing: one of :data:`SPACINGS`; ``"log_snr"`` and ``"karras"`` need ``sde``.
        sde: a linear SDE (:class:`~fokker.sde.Schedule`) for the default end points, the
            log-SNR based spacings and the domain check.
        rho: Karras exponent (> 0).
        s: offset of the cosine spacing (> 0).

    Example:
        >>> time_grid(4, 0.0, 1.0).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    check_int(num_steps, "num_steps")
    if spacing not in SPACINGS:
        raise ParameterError(f"spacing must be one of {SPACINGS}; got {spacing!r}")
    if spacing in _NEEDS_SDE and sde is None:
        raise ParameterError(f"spacing={spacing!r} needs the sde (its log-SNR defines the grid)")
    if start is None or end is None:
        if sde is None:
            raise ParameterError("time_grid needs start and end, or an sde to take them from")
        lo, hi = sde.score_domain()  # type: ignore[attr-defined]
        start = hi if start is None else start
        end = lo if end is None else end
    a, b = _number(start, "start"), _number(end, "end")
    if a == b:
        raise ParameterError(f"start and end must differ; both are {a!r}")
    if sde is not None:
        t_min, T = float(sde.t_min), float(sde.T)  # type: ignore[attr-defined]
        if not (t_min <= min(a, b) and max(a, b) <= T):
            raise DomainError(f"grid end points must lie in [{t_min}, {T}]; got start={a}, end={b}")
    u = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    if spacing == "uniform":
        t = a + (b - a) * u
    elif spacing == "quadratic":
        t = b + (a - b) * (1.0 - u) ** 2
    elif spacing == "cosine":
        if not (isinstance(s, (int, float)) and s > 0):
            raise ParameterError(f"s must be positive; got {s!r}")
        w = torch.cos((u[:-1] + s) / (1.0 + s) * math.pi / 2) ** 4
        t = a + (b - a) * torch.cat([w.new_zeros(1), torch.cumsum(w / w.sum(), 0)])
    else:
        lam = sde.log_snr(torch.tensor([a, b], dtype=torch.float64)).to(torch.float64)  # type: ignore[union-attr]
        if not bool(torch.isfinite(lam).all()):
            raise DomainError(
                f"spacing={spacing!r} needs a finite log-SNR at both end points; got {lam.tolist()} "
                "(sigma = 0 at an end point: start the grid above sde.t_min)"
            )
        if spacing == "log_snr":
            target = lam[0] + (lam[1] - lam[0]) * u
        else:
            if not (isinstance(rho, (int, float)) and rho > 0):
                raise ParameterError(f"rho must be positive; got {rho!r}")
            ra, rb = torch.exp(-0.5 * lam / rho)  # sigma_tilde^(1/rho)
            target = -2.0 * rho * torch.log(ra + (rb - ra) * u)
        t = sde.time_at_log_snr(target)  # type: ignore[union-attr]
    t = t.to(device=device) if device is not None else t
    t[0], t[-1] = a, b  # exact end points (bisection and cumulative sums are accurate to ~1e-16 only)
    return t
