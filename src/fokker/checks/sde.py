"""Identity checkers for SDEs and score oracles: marginals, Fokker-Planck, Tweedie.

* :func:`check_marginal` -- simulate a :class:`~fokker.sde.LinearSDE` with Euler-Maruyama and
  compare the sample mean/variance with the closed form (Särkkä & Solin 2019, eqs. 6.2-6.3;
  seed 001 Prop. 1).  The EM scheme's
  own bias is allowed for, estimated without the closed form: for linear SDEs the EM moments
  obey ``m_{k+1} = (1 + h a_k) m_k``, ``v_{k+1} = (1 + h a_k)^2 v_k + h g_k^2`` exactly, and
  comparing them on the grid and on a 64x finer grid estimates the ``O(h)`` bias;
  the rest must be within ``Z_SCORE`` standard errors (EM iterates are exactly Gaussian,
  so the SE of the sample variance is ``v sqrt(2/(n-1))``).
* :func:`check_fokker_planck` -- the residual of the Fokker-Planck equation (Risken 1989, eq. 4.94;
  seed 001 eq. 28) divided by ``p``:
  ``d_t log p + div f + f . grad log p - sum_i g_i^2/2 (d_ii log p + (d_i log p)^2)``
  by autograd (exact derivatives; needs a state-independent diagonal diffusion).
* :func:`check_tweedie` -- ``E[x0|x_t] = (x + sigma^2 score)/alpha`` and
  ``E[eps|x_t] = -sigma score`` (Efron 2011; Kingma et al. 2021, eq. 23; seed 004) for any object with ``score``, ``denoise``, ``eps``
  and a linear ``sde``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._args import check_int, check_tensor
from .._random import randn
from ..errors import ParameterError, ShapeError
from ..sde.times import TimeLike, align_time, as_time64
from ..sde.base import SDE
from ..sde.linear import LinearSDE
from ..sde.grid import time_grid
from ..sde.solve import solve
from ..tolerances import Z_SCORE, tolerance
from .result import CheckOutcome

__all__ = ["check_marginal", "check_fokker_planck", "check_tweedie"]


def check_marginal(
    sde: LinearSDE,
    x0: torch.Tensor,
    t: float,
    num_samples: int = 10_000,
    num_steps: int = 200,
    t0: float | None = None,
    generator: torch.Generator | None = None,
    z_score: float = Z_SCORE,
) -> CheckOutcome:
    """Euler-Maruyama simulation of ``sde`` from ``t0`` to ``t`` vs the closed-form marginal.

    Args:
        sde: a :class:`~fokker.sde.LinearSDE`.
        x0: data point(s) ``(..., *event)``; each is simulated ``num_samples`` times starting from
            an exact draw of ``X_{t0} ~ marginal(x0, t0)``.
        num_steps: Euler-Maruyama steps from ``t0`` to ``t``.
        t: final time (float); ``t0``: start time (default ``sde.t_min``).

    Returns a :class:`CheckOutcome` whose ``error`` is the largest bias-corrected z-score of
    the per-coordinate means and variances (passes when ``<= z_score``).  Statistical (a
    Monte-Carlo estimate): seed the generator for a deterministic result.
    """
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"check_marginal needs a LinearSDE (closed-form marginal); got {type(sde).__name__}")
    check_int(num_samples, "num_samples", 2)
    check_int(num_steps, "num_steps", 1)
    sde.check_x(x0, "x0")
    t0 = sde.t_min if t0 is None else float(t0)
    sde.check_t(t0, "t0")
    sde.check_t(t)
    if not float(t) > t0:
        raise ParameterError(f"t must exceed t0={t0}; got {t!r}")
    grid = time_grid(num_steps, t0, float(t))
    c0 = sde.coefficients(t0)
    start_m, start_v = float(c0.alpha), float(c0.sigma) ** 2
    # EM bias estimated WITHOUT the closed form: exact EM moments on this grid vs on a
    # 64x finer grid (both converge to the SDE's true moments at rate O(h)).
    m_coef, v = _em_moments(sde, t0, float(t), num_steps, start_m, start_v)
    m_fine, v_fine = _em_moments(sde, t0, float(t), 64 * num_steps, start_m, start_v)
    ct = sde.coefficients(float(t))
    al_t, v_t = float(ct.alpha), float(ct.sigma) ** 2

    xs = x0.expand(num_samples, *x0.shape)
    eps = randn(xs.shape, generator=generator, dtype=xs.dtype, device=xs.device)
    start, _ = sde.sample_marginal(xs, t0, noise=eps)
    xT = solve(sde, start, grid.to(x0.device), method="euler", generator=generator)
    x0d = x0.to(torch.float64)
    mean_hat, var_hat = xT.to(torch.float64).mean(0), xT.to(torch.float64).var(0)
    bias_m = abs(m_coef - m_fine) * (64 / 63) * x0d.abs()
    bias_v = abs(v - v_fine) * (64 / 63)
    se_m = math.sqrt(max(v, 1e-300) / num_samples)
    se_v = max(v, 1e-300) * math.sqrt(2.0 / (num_samples - 1))
    z_m = ((mean_hat - al_t * x0d).abs() - bias_m).clamp_min(0) / se_m
    z_v = ((var_hat - v_t).abs() - bias_v).clamp_min(0) / se_v
    err = float(torch.maximum(z_m.max(), z_v.max()))
    return CheckOutcome(
        "marginal",
        err,
        float(z_score),
        bool(math.isfinite(err) and err <= z_score),
        metric="max bias-corrected z-score",
        details={
            "max_z_mean": float(z_m.max()),
            "max_z_var": float(z_v.max()),
            "em_bias_var": bias_v,
            "num_samples": num_samples,
            "num_steps": num_steps,
        },
    )


def _em_moments(sde: LinearSDE, t0: float, t: float, n: int, m0: float, v0: float) -> tuple[float, float]:
    """Exact mean coefficient and variance of the Euler-Maruyama iterates of a linear SDE.

    ``m_{k+1} = c_k m_k``, ``v_{k+1} = c_k^2 v_k + h_k g_k^2`` with ``c_k = 1 + h_k f(t_k)``,
    evaluated in closed form with (reverse) cumulative products, float64.
    """
    grid = time_grid(n, t0, t)
    h = grid[1:] - grid[:-1]
    coef = sde.coefficients(grid[:-1])
    c = 1.0 + h * coef.f
    q = h * coef.g2
    c2 = c * c
    tail = torch.flip(torch.cumprod(torch.flip(c2, [0]), 0), [0])  # prod_{j >= k} c_j^2
    after = torch.cat([tail[1:], tail.new_ones(1)])  # prod_{j > k} c_j^2
    return m0 * float(torch.prod(c)), v0 * float(tail[0]) + float((q * after).sum())


def check_fokker_planck(
    sde: SDE,
    log_density: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t: TimeLike,
    rtol: float | None = None,
) -> CheckOutcome:
    """Fokker-Planck residual (divided by ``p``) of ``log_density(x, t)`` under ``sde``, by autograd.

    .. math::

        r = \\partial_t \\log p + \\nabla\\cdot f + f\\cdot\\nabla\\log p
            - \\sum_i \\tfrac{g_i^2}{2}\\big(\\partial_{ii}\\log p + (\\partial_i \\log p)^2\\big)

    Args:
        sde: the SDE (diagonal diffusion independent of the state).
        log_density: ``(x, t) -> log p_t(x)`` with ``x`` ``(B, D)``, ``t`` ``(B,)``, differentiable.
        x: points ``(B, D)``; t: float or ``(B,)`` times in ``[t_min, T]``.
        rtol: tolerance relative to the size of the largest term (default: the loose tolerance
            of ``x.dtype``).

    ``error`` is ``max |r| / (1 + max |term|)``.  Exact up to rounding (no estimate).
    """
    check_tensor(x, "x")
    if x.dim() != 2:
        raise ShapeError(f"x must have shape (B, D); got {tuple(x.shape)}")
    sde.check_x(x)
    sde.check_t(t)
    B, D = x.shape
    t_vec = as_time64(t, x.device).to(x.dtype)
    t_vec = t_vec.expand(B).clone() if t_vec.dim() == 0 else t_vec.clone()
    if t_vec.shape != (B,):
        raise ShapeError(f"t must be a float or have shape ({B},); got {tuple(t_vec.shape)}")
    rtol = tolerance(x.dtype, loose=True).rtol if rtol is None else float(rtol)
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        tg = t_vec.detach().requires_grad_(True)
        lp = log_density(xg, tg)
        if lp.shape != (B,):
            raise ShapeError(f"log_density must return shape ({B},); got {tuple(lp.shape)}")
        # a time-independent density (a stationary law) does not depend on t: its d/dt is 0
        gx, gt = torch.autograd.grad(lp.sum(), [xg, tg], create_graph=True, allow_unused=True)
        gt = torch.zeros_like(tg) if gt is None else gt
        if gx is None:
            gx = torch.zeros_like(xg)
        lap = torch.stack([_partial(gx[:, i], xg, i) for i in range(D)], -1)
        t_sde = tg.detach().to(torch.float64)
        f = sde.drift(xg, t_sde)
        div = torch.stack([_partial(f[:, i], xg, i) for i in range(D)], -1).sum(-1)
        g2 = sde.diffusion(xg.detach(), t_sde).to(x.dtype).expand(B, D) ** 2
    terms = torch.stack([gt, div, (f * gx).sum(-1), (0.5 * g2 * (lap + gx * gx)).sum(-1)], -1).detach()
    r = terms[:, 0] + terms[:, 1] + terms[:, 2] - terms[:, 3]
    scale = 1.0 + float(terms.abs().max())
    err = float(r.abs().max()) / scale
    return CheckOutcome(
        "fokker_planck",
        err,
        rtol,
        bool(math.isfinite(err) and err <= rtol),
        metric="max |residual| / (1 + max |term|)",
        details={"max_abs_residual": float(r.abs().max()), "n_points": B},
    )


def _partial(y: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
    """``d y_b / d x_{b, i}`` for a per-row quantity ``y`` ``(B,)`` (zero where ``y`` does not depend on ``x``)."""
    if not y.requires_grad:
        return torch.zeros_like(y)
    (g,) = torch.autograd.grad(y.sum(), x, retain_graph=True, allow_unused=True)
    return torch.zeros_like(y) if g is None else g[:, i]


def check_tweedie(oracle, x: torch.Tensor, t: TimeLike, rtol: float | None = None) -> CheckOutcome:
    """Tweedie's formulas (Efron 2011, eq. 2.8) for an oracle over a :class:`~fokker.sde.LinearSDE`.

    Checks ``denoise(x, t) == (x + sigma^2 score)/alpha`` and ``eps(x, t) == -sigma score``.
    ``oracle``: any object with ``sde``, ``score(x, t)``, ``denoise(x, t)``, ``eps(x, t)`` (e.g.
    :class:`fokker.analytic.DiffusedGaussianMixture`).  ``error``: the largest discrepancy
    relative to ``1 + |reference|``; tolerance: ``tolerance(x.dtype).rtol`` scaled by
    ``1/alpha(t)`` (division by alpha amplifies rounding), unless ``rtol`` is given.
    """
    sde = getattr(oracle, "sde", None)
    if not isinstance(sde, LinearSDE):
        raise TypeError("check_tweedie needs an oracle with a LinearSDE attribute `sde`")
    check_tensor(x, "x")
    sde.check_t(t)
    c = sde.coefficients(as_time64(t, x.device))
    al = align_time(c.alpha, x, sde.event_dim)
    sg = align_time(c.sigma, x, sde.event_dim)
    score = oracle.score(x, t)
    ref_x0 = (x + sg * sg * score) / al
    ref_eps = -sg * score
    e1 = ((oracle.denoise(x, t) - ref_x0).abs() / (1 + ref_x0.abs())).max()
    e2 = ((oracle.eps(x, t) - ref_eps).abs() / (1 + ref_eps.abs())).max()
    err = float(torch.maximum(e1, e2))
    if rtol is None:
        rtol = tolerance(x.dtype).rtol * 100.0 / float(al.min())
    return CheckOutcome(
        "tweedie",
        err,
        float(rtol),
        bool(math.isfinite(err) and err <= rtol),
        metric="max relative error",
        details={"denoiser": float(e1), "noise_predictor": float(e2)},
    )
