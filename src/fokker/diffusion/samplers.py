r"""Samplers for score-based models: plain functions over a precomputed time grid.

Every sampler has the signature ``sampler(score_fn, sde, x, grid, *, generator=None, **options)``
and returns ``(samples, nfe)``:

* ``score_fn(x, t) -> score`` is *any* callable with ``x`` of shape ``(batch, *event)``
  and ``t`` of shape ``(batch,)``: a :class:`~fokker.diffusion.DiffusionModel`'s ``score``,
  the analytic oracle's ``score``, a guided score (:mod:`fokker.diffusion.guidance`), or a
  denoiser / noise predictor wrapped by :func:`from_denoiser` / :func:`from_eps`;
* ``sde`` is the forward linear SDE (``alpha``, ``sigma``; drift and diffusion are derived
  from them through the :class:`fokker.sde.Schedule` protocol);
* ``x`` holds the initial draw at ``grid[0]`` (usually from the prior);
* ``grid`` is a decreasing float64 time grid (:func:`fokker.sde.time_grid`);
* ``nfe`` is the number of ``score_fn`` evaluations (a Python int).

The schedule coefficients on the grid are computed once in float64 and cast to the
dtype/device of ``x`` before the loop; the loops index those tensors and never read
a value back to the host.  Write ``h_i = t_i - t_{i+1} > 0``, ``alpha_i = alpha(t_i)``,
``sigma_i``, ``f_i = d log alpha / dt``, ``g_i^2`` (reverse time runs from ``T`` to ``t_min``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .._args import check_int, check_tensor
from .._random import randn_like
from ..errors import DomainError, ParameterError, ShapeError
from ..mcmc.annealing import annealed_langevin as langevin_levels
from .parameterization import expand_like, to_score
from ..sde.schedule import Coefficients
from .sampler_defaults import (
    DEFAULT_FINAL_STEP,
    DEFAULT_OPTIONS,
    DEFAULT_SPACING,
    FINAL_STEPS,
    SDE_DEFAULTS,
    SamplerDefaults,
    check_final_step,
    sampler_defaults,
)

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "SAMPLERS",
    "DEFAULT_SAMPLER",
    "DEFAULT_SPACING",
    "DEFAULT_FINAL_STEP",
    "DEFAULT_OPTIONS",
    "FINAL_STEPS",
    "SDE_DEFAULTS",
    "SamplerDefaults",
    "sampler_defaults",
    "check_final_step",
    "get_sampler",
    "from_denoiser",
    "from_eps",
    "euler_maruyama",
    "predictor_corrector",
    "ode_euler",
    "heun",
    "ode_adaptive",
    "ddim",
    "dpm_solver",
    "dpm_solver_3m",
    "dpm_solver_2s",
    "dpm_solver_sde",
    "unipc",
    "deis",
    "euler_ancestral",
    "annealed_langevin",
]


# ---------------------------------------------------------------- adapters
def from_denoiser(denoise_fn: ScoreFn, sde: object) -> ScoreFn:
    r"""Score from a denoiser :math:`D(x,t)\approx E[x_0|x_t]`: :math:`s = -(x-\alpha D)/\sigma^2`."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = sde.coefficients(t)
        a, s = expand_like(c.alpha, x), expand_like(c.sigma, x)
        return to_score(x, denoise_fn(x, t), "x0", a, s)

    return score


def from_eps(eps_fn: ScoreFn, sde: object) -> ScoreFn:
    r"""Score from a noise predictor: :math:`s = -\hat\varepsilon/\sigma`."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = sde.coefficients(t)
        return -eps_fn(x, t) / expand_like(c.sigma, x)

    return score


# ----------------------------------------------------------------- helpers
def _setup(sde: object, x: torch.Tensor, grid: torch.Tensor) -> Coefficients:
    check_tensor(x, "x")
    if x.dim() < 2:
        raise ShapeError(f"x must have shape (batch, *event); got shape {tuple(x.shape)}")
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if grid.dim() != 1 or grid.numel() < 2:
        raise ShapeError(f"grid must be a 1-D tensor of at least 2 times; got shape {tuple(grid.shape)}")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ParameterError("grid must be strictly decreasing (from T down to t_min)")
    return sde.coefficients(grid.cpu()).to(x.dtype, x.device)


def _tvec(c: Coefficients, i: int, x: torch.Tensor) -> torch.Tensor:
    return c.t[i].expand(x.shape[0])


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return randn_like(x, generator)


def _x0_eps(score: torch.Tensor, x: torch.Tensor, a: torch.Tensor, s: torch.Tensor):
    """Tweedie: ``x0 = (x + s^2 score)/a``, ``eps = -s score``."""
    return (x + s * s * score) / a, -s * score


def _denoise(score_fn: ScoreFn, x: torch.Tensor, c: Coefficients, i: int) -> torch.Tensor:
    """The denoiser ``D = (x + sigma_i^2 s(x, t_i)) / alpha_i`` at grid point ``i`` (one NFE)."""
    s = score_fn(x, _tvec(c, i, x))
    return (x + c.sigma[i] ** 2 * s) / c.alpha[i]


def _coefficients_at_levels(sde: object, levels: torch.Tensor, x: torch.Tensor) -> Coefficients:
    """Coefficients at the times where ``sigma/alpha`` equals ``levels`` (float64 ``(k,)``; the inverse
    of the log-SNR by ``sde.time_at_log_snr``), cast to ``x``'s dtype and device."""
    t = sde.time_at_log_snr(-2.0 * torch.log(levels))
    return sde.coefficients(t).to(x.dtype, x.device)


class _EDMGrid(NamedTuple):
    """A grid in EDM variables: ``st = sigma/alpha`` and ``lam = -log st`` (half the log-SNR)."""

    c: Coefficients
    st: torch.Tensor
    lam: torch.Tensor


def _edm_setup(sde: object, x: torch.Tensor, grid: torch.Tensor) -> _EDMGrid:
    c = _setup(sde, x, grid)
    lam64 = 0.5 * sde.log_snr(torch.as_tensor(grid, dtype=torch.float64).cpu())
    if not bool(torch.isfinite(lam64).all()):
        raise DomainError("the grid must avoid sigma = 0 (start it above sde.t_min, e.g. at sde.score_domain()[0])")
    return _EDMGrid(c, torch.exp(-lam64).to(x), lam64.to(x))


# ---------------------------------------------------------------- samplers
def euler_maruyama(
    score_fn: ScoreFn, sde: object, x: torch.Tensor, grid: torch.Tensor, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, int]:
    r"""Euler–Maruyama on the reverse SDE (Anderson 1982; Song et al. 2021, eq. 6; seed 001 eqs. 60/65).

    .. math:: x_{i+1} = x_i - h_i\,(f_i x_i - g_i^2\, s(x_i, t_i)) + \sqrt{h_i}\, g_i\, z_i .

    NFE = N.  Weak order 1 in the step size.
    """
    c = _setup(sde, x, grid)
    h = c.t[:-1] - c.t[1:]
    for i in range(len(h)):
        s = score_fn(x, _tvec(c, i, x))
        drift = c.f[i] * x - c.g2[i] * s
        x = x - h[i] * drift + torch.sqrt(h[i] * c.g2[i]) * _noise(x, generator)
    return x, len(h)


def _langevin_snr_step(
    score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor, snr: float, generator: torch.Generator | None, scale: torch.Tensor
) -> torch.Tensor:
    r"""One Langevin corrector step with the signal-to-noise rule (Song et al. 2021, Alg. 4-5).

    :math:`\epsilon = 2\,a\,(r\,\|z\|/\|s\|)^2`, :math:`x \leftarrow x + \epsilon s + \sqrt{2\epsilon} z`
    with the norms averaged over the batch (as in Song et al.'s code: a per-sample ratio explodes
    for samples sitting on a mode) and ``a = scale`` (``1 - beta_i`` for VP, 1 for VE).
    """
    s = score_fn(x, t)
    z = _noise(x, generator)
    flat = (x.shape[0], -1)
    s_norm = torch.linalg.vector_norm(s.reshape(flat), dim=-1).mean()
    z_norm = torch.linalg.vector_norm(z.reshape(flat), dim=-1).mean()
    eps = 2.0 * scale * (snr * z_norm / s_norm.clamp_min(torch.finfo(x.dtype).tiny)) ** 2
    return x + eps * s + torch.sqrt(2.0 * eps) * z


def predictor_corrector(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    snr: float = 0.16,
    num_corrector_steps: int = 1,
) -> tuple[torch.Tensor, int]:
    r"""Predictor–corrector sampling (Song et al. 2021, Algorithms 1-5; seed 004 Algorithms 2-3).

    Predictor: one Euler–Maruyama step of the reverse SDE from ``t_i`` to ``t_{i+1}``.
    Corrector: ``num_corrector_steps`` Langevin steps targeting :math:`p_{t_{i+1}}` with step
    :math:`\epsilon = 2\,\bar a\,(\mathrm{snr}\,\|z\|/\|s\|)^2`, where
    :math:`\bar a = \alpha_i^2/\alpha_{i+1}^2` (``1 - beta_i`` of the VP chain, 1 for VE).

    NFE = N (1 + num_corrector_steps).
    """
    if not snr > 0:
        raise ParameterError(f"snr must be positive; got {snr!r}")
    check_int(num_corrector_steps, "num_corrector_steps", minimum=0)
    c = _setup(sde, x, grid)
    h = c.t[:-1] - c.t[1:]
    ratio = (c.alpha[:-1] / c.alpha[1:]) ** 2
    for i in range(len(h)):
        s = score_fn(x, _tvec(c, i, x))
        x = x - h[i] * (c.f[i] * x - c.g2[i] * s) + torch.sqrt(h[i] * c.g2[i]) * _noise(x, generator)
        t_next = _tvec(c, i + 1, x)
        for _ in range(num_corrector_steps):
            x = _langevin_snr_step(score_fn, x, t_next, snr, generator, ratio[i])
    return x, len(h) * (1 + num_corrector_steps)


def ode_euler(
    score_fn: ScoreFn, sde: object, x: torch.Tensor, grid: torch.Tensor, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, int]:
    r"""Euler on the probability-flow ODE (Song et al. 2021, eq. 13; seed 001 eq. 64).

    .. math:: x_{i+1} = x_i - h_i\,(f_i x_i - \tfrac12 g_i^2\, s(x_i, t_i)).

    Deterministic given ``x``; NFE = N.  ``generator`` is accepted and unused.
    """
    c = _setup(sde, x, grid)
    h = c.t[:-1] - c.t[1:]
    for i in range(len(h)):
        s = score_fn(x, _tvec(c, i, x))
        x = x - h[i] * (c.f[i] * x - 0.5 * c.g2[i] * s)
    return x, len(h)


def heun(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> tuple[torch.Tensor, int]:
    r"""Heun's 2nd-order method on the PF-ODE in EDM variables (Karras et al. 2022, Alg. 1; with
    ``s_churn > 0`` the stochastic sampler of their Alg. 2).

    With :math:`\tilde x = x/\alpha` and :math:`\tilde\sigma = \sigma/\alpha` the PF-ODE of any
    linear SDE reads :math:`d\tilde x/d\tilde\sigma = (\tilde x - D(x, t))/\tilde\sigma` with the
    denoiser :math:`D = (x + \sigma^2 s)/\alpha` (Tweedie).  Each step is an Euler step in
    :math:`\tilde\sigma` corrected by the trapezoidal rule.

    Churn (Alg. 2): at levels :math:`s_{tmin} \le \tilde\sigma_i \le s_{tmax}` the noise is first raised
    to :math:`\hat\sigma_i = (1 + \gamma_i)\tilde\sigma_i`, :math:`\gamma_i = \min(s_{churn}/N, \sqrt2 - 1)`,
    by adding :math:`\sqrt{\hat\sigma_i^2 - \tilde\sigma_i^2}\, s_{noise}\, z`, and the Heun step runs from
    :math:`\hat\sigma_i`.  :math:`\hat\sigma_i` is capped at :math:`\tilde\sigma(T)` (the score is defined on
    ``[t_min, T]`` only).  NFE = 2N.  ``s_churn = 0``: deterministic, ``generator`` unused.
    """
    for v, name in ((s_churn, "s_churn"), (s_tmin, "s_tmin")):
        if not v >= 0:
            raise ParameterError(f"{name} must be non-negative; got {v!r}")
    c = _setup(sde, x, grid)
    num = len(c.t) - 1
    st = c.sigma / c.alpha
    churn = s_churn > 0
    if churn:  # the raised levels and their times, computed once (float64)
        st64 = (c.sigma / c.alpha).double().cpu()
        gamma = ((st64 >= s_tmin) & (st64 <= s_tmax)).to(torch.float64) * min(s_churn / num, math.sqrt(2.0) - 1.0)
        st_hat64 = torch.minimum(st64 * (1.0 + gamma), st64[0])
        ch = _coefficients_at_levels(sde, st_hat64, x)
        st_hat = st_hat64.to(x)
        add = torch.sqrt((st_hat**2 - st**2).clamp_min(0.0)) * s_noise
    xt = x / c.alpha[0]

    def slope(xt: torch.Tensor, cc: Coefficients, i: int, st_i: torch.Tensor) -> torch.Tensor:
        xi = xt * cc.alpha[i]
        d0 = _denoise(score_fn, xi, cc, i)
        return (xt - d0) / st_i

    for i in range(num):
        if churn:
            xt = xt + add[i] * _noise(xt, generator)
            d = slope(xt, ch, i, st_hat[i])
            dt = st[i + 1] - st_hat[i]
        else:
            d = slope(xt, c, i, st[i])
            dt = st[i + 1] - st[i]
        x_e = xt + dt * d
        d2 = slope(x_e, c, i + 1, st[i + 1])
        xt = xt + dt * 0.5 * (d + d2)
    return xt * c.alpha[-1], 2 * num


def ode_adaptive(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
) -> tuple[torch.Tensor, int]:
    r"""Adaptive solve of the PF-ODE :math:`dx/dt = f x - \tfrac12 g^2 s` with torchdiffeq.

    Only the end points ``grid[0]`` and ``grid[-1]`` are used; the step size is chosen by
    the embedded error estimate with the explicit tolerances ``rtol``/``atol``.  The NFE
    is counted by the right-hand side.  (The step-size controller reads its error
    norm on the host: adaptivity needs that sync by design.)
    """
    from torchdiffeq import odeint

    c = _setup(sde, x, grid)
    t_span = c.t[[0, -1]]
    lo, hi = float(grid[-1]), float(grid[0])
    counter = [0]

    def rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        counter[0] += 1
        # torchdiffeq's initial-step heuristic probes t outside [t_min, T]; clamp to the domain.
        tt = t.detach().to(torch.float64).reshape(1).cpu().clamp(lo, hi)
        cc = sde.coefficients(tt).to(y.dtype, y.device)
        s = score_fn(y, cc.t.expand(y.shape[0]))
        return cc.f * y - 0.5 * cc.g2 * s

    out = odeint(rhs, x, t_span, rtol=rtol, atol=atol, method=method)
    return out[-1], counter[0]


def ddim(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
) -> tuple[torch.Tensor, int]:
    r"""DDIM (Song, Meng & Ermon 2021, eq. 12; seed 002) for any linear SDE.

    With :math:`\hat x_0, \hat\varepsilon` from Tweedie at :math:`(x_i, t_i)`,

    .. math::
        x_{i+1} = \alpha_{i+1}\hat x_0 + \sqrt{\sigma_{i+1}^2 - c_i^2}\,\hat\varepsilon + c_i z,
        \qquad c_i^2 = \eta^2\,\frac{\sigma_{i+1}^2}{\sigma_i^2}
        \Big(\sigma_i^2 - \frac{\alpha_i^2}{\alpha_{i+1}^2}\sigma_{i+1}^2\Big)

    (:math:`c_i^2` is ``eta^2`` times the variance of the DDPM posterior
    :math:`q(x_{t_{i+1}}|x_{t_i}, x_0)`).  ``eta = 0``: deterministic DDIM (a PF-ODE
    integrator); ``eta = 1``: ancestral DDPM sampling.  NFE = N.
    """
    if not 0.0 <= eta <= 1.0:
        raise ParameterError(f"eta must lie in [0, 1]; got {eta!r}")
    c = _setup(sde, x, grid)
    a, s = c.alpha, c.sigma
    var_post = (s[1:] ** 2 / s[:-1] ** 2) * (s[:-1] ** 2 - (a[:-1] / a[1:]) ** 2 * s[1:] ** 2)
    c2 = (eta**2) * var_post.clamp_min(0.0)
    keep = torch.sqrt((s[1:] ** 2 - c2).clamp_min(0.0))
    cn = torch.sqrt(c2)
    for i in range(len(c2)):
        sc = score_fn(x, _tvec(c, i, x))
        x0, eps = _x0_eps(sc, x, a[i], s[i])
        x = a[i + 1] * x0 + keep[i] * eps
        if eta > 0:
            x = x + cn[i] * _noise(x, generator)
    return x, len(c2)


def _ancestral_levels(st: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(sigma_down, sigma_up)`` of each step ``st_i -> st_{i+1}`` (Ho et al. 2020's ancestral step in EDM
    variables, as in Karras et al. 2022's code): :math:`\sigma_{up} = \min(\tilde\sigma_{i+1},
    \eta\,\tilde\sigma_{i+1}\sqrt{1 - \tilde\sigma_{i+1}^2/\tilde\sigma_i^2})`,
    :math:`\sigma_{down} = \sqrt{\tilde\sigma_{i+1}^2 - \sigma_{up}^2}`."""
    if not 0.0 <= eta <= 1.0:
        raise ParameterError(f"eta must lie in [0, 1]; got {eta!r}")
    up = torch.minimum(st[1:], eta * st[1:] * torch.sqrt((1.0 - (st[1:] / st[:-1]) ** 2).clamp_min(0.0)))
    return torch.sqrt(st[1:] ** 2 - up**2), up


def euler_ancestral(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
) -> tuple[torch.Tensor, int]:
    r"""Euler-ancestral sampling in EDM variables (Karras et al. 2022's code ``sample_euler_ancestral``;
    the ancestral step of Ho et al. 2020 written for the Euler method).

    In :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha` with the denoiser :math:`D`:
    :math:`\tilde x \leftarrow \tilde x + (\sigma_{down} - \tilde\sigma_i)(\tilde x - D)/\tilde\sigma_i
    + \sigma_{up} z` (levels of :func:`_ancestral_levels`; ``eta = 0``: PF-ODE Euler in
    :math:`\tilde\sigma`).  NFE = N.
    """
    g = _edm_setup(sde, x, grid)
    c, st = g.c, g.st
    down, up = _ancestral_levels(st, eta)
    xt = x / c.alpha[0]
    for i in range(len(up)):
        d = (xt - _denoise(score_fn, xt * c.alpha[i], c, i)) / st[i]
        xt = xt + (down[i] - st[i]) * d
        if eta > 0:
            xt = xt + up[i] * _noise(xt, generator)
    return xt * c.alpha[-1], len(up)


def _multistep_orders(num: int, order: int, lower_order_final: bool) -> list[int]:
    """Order of each step of a multistep solver: warm-up ``1, 2, ..`` and, with ``lower_order_final``,
    ``.., 2, 1`` on the last steps."""
    check_int(order, "order", minimum=1)
    return [min(order, i + 1, num - i) if lower_order_final else min(order, i + 1) for i in range(num)]


def _dpm_solver_pp(
    score_fn: ScoreFn, sde: object, x: torch.Tensor, grid: torch.Tensor, order: int, lower_order_final: bool
) -> tuple[torch.Tensor, int]:
    r"""Multistep DPM-Solver++ of order 1-3 in EDM variables (Lu et al. 2022, Alg. 2 and appendix B)."""
    g = _edm_setup(sde, x, grid)
    c, st, lam = g
    h = lam[1:] - lam[:-1]
    num = len(h)
    orders = _multistep_orders(num, order, lower_order_final)
    xt = x / c.alpha[0]
    hist: list[torch.Tensor] = []  # denoiser values, newest first
    for i in range(num):
        hist = [_denoise(score_fn, xt * c.alpha[i], c, i)] + hist[: order - 1]
        p, m0 = orders[i], hist[0]
        em1 = torch.expm1(-h[i])
        xt = (st[i + 1] / st[i]) * xt - em1 * m0
        if p == 2:
            r0 = h[i - 1] / h[i]
            xt = xt - em1 * (0.5 / r0) * (m0 - hist[1])
        elif p == 3:
            r0, r1 = h[i - 1] / h[i], h[i - 2] / h[i]
            d1_0, d1_1 = (m0 - hist[1]) / r0, (hist[1] - hist[2]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            xt = xt + (em1 / h[i] + 1.0) * d1 - ((em1 + h[i]) / h[i] ** 2 - 0.5) * d2
    return xt * c.alpha[-1], num


def dpm_solver(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    lower_order_final: bool = True,
) -> tuple[torch.Tensor, int]:
    r"""DPM-Solver++(2M), the multistep 2nd-order data-prediction solver (Lu et al. 2022, Alg. 2).

    With :math:`\lambda = \log(\alpha/\sigma)`, :math:`h_i = \lambda_{i+1} - \lambda_i`,
    :math:`r_i = h_{i-1}/h_i` and the denoiser :math:`D_i = \hat x_0(x_i, t_i)`:

    .. math::
        x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i} x_i - \alpha_{i+1}(e^{-h_i} - 1)
        \Big[(1 + \tfrac{1}{2r_i}) D_i - \tfrac{1}{2r_i} D_{i-1}\Big],

    first order (DDIM) on the first step and, with ``lower_order_final``, on the last step.
    NFE = N.  Deterministic; ``generator`` is accepted and unused.
    """
    return _dpm_solver_pp(score_fn, sde, x, grid, 2, lower_order_final)


def dpm_solver_3m(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    lower_order_final: bool = True,
) -> tuple[torch.Tensor, int]:
    r"""DPM-Solver++(3M), the multistep 3rd-order data-prediction solver (Lu et al. 2022, appendix B;
    the multistep form of their code).  With :math:`D_1^{(0)} = (D_i - D_{i-1})/r_0`,
    :math:`D_1^{(1)} = (D_{i-1} - D_{i-2})/r_1`, :math:`r_k = h_{i-1-k}/h_i`,
    :math:`D_1 = D_1^{(0)} + \tfrac{r_0}{r_0 + r_1}(D_1^{(0)} - D_1^{(1)})`,
    :math:`D_2 = (D_1^{(0)} - D_1^{(1)})/(r_0 + r_1)`:

    .. math::
        \frac{x_{i+1}}{\alpha_{i+1}} = \frac{\sigma_{i+1}/\alpha_{i+1}}{\sigma_i/\alpha_i}\frac{x_i}{\alpha_i}
        - (e^{-h} - 1) D_i + \Big(\frac{e^{-h} - 1}{h} + 1\Big) D_1
        - \Big(\frac{e^{-h} - 1 + h}{h^2} - \frac12\Big) D_2 .

    Warm-up with the 1st and 2nd-order steps; with ``lower_order_final`` the last two steps drop to
    orders 2 and 1.  NFE = N.  Deterministic.
    """
    return _dpm_solver_pp(score_fn, sde, x, grid, 3, lower_order_final)


def dpm_solver_2s(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    midpoint: str = "log_snr",
) -> tuple[torch.Tensor, int]:
    r"""DPM-Solver++(2S), the single-step 2nd-order solver (Lu et al. 2022, Alg. 1).

    In EDM variables with :math:`\lambda = -\log\tilde\sigma` and step :math:`h = \lambda_{i+1} - \lambda_i`:
    from :math:`\tilde x_i` take a first-order step to the intermediate level :math:`\lambda_i + r h` with the
    denoiser :math:`D_i`, evaluate :math:`D` there and take the full step with both,

    .. math::
        \tilde x_{mid} = \tfrac{\tilde\sigma_{mid}}{\tilde\sigma_i}\tilde x_i - (e^{-r h} - 1) D_i, \qquad
        \tilde x_{i+1} = \tfrac{\tilde\sigma_{i+1}}{\tilde\sigma_i}\tilde x_i - (e^{-h} - 1)
        \Big[\big(1 - \tfrac{1}{2r}\big) D_i + \tfrac{1}{2r} D(\tilde x_{mid})\Big].

    ``midpoint``: where the intermediate evaluation sits -- ``"log_snr"``: halfway in :math:`\lambda`
    (:math:`r = 1/2`, the weight reduces to :math:`D(\tilde x_{mid})` alone; Lu et al.'s and k-diffusion's
    ``sample_dpmpp_2s_ancestral``), ``"time"``: halfway in ``t`` along the grid interval (:math:`r` from the
    log-SNR there; diffusers' ``DPMSolverSinglestepScheduler`` on its uniform timesteps).  ``eta > 0``: the
    ancestral variant (the step ends at :math:`\sigma_{down}` and adds :math:`\sigma_{up} z`,
    :func:`_ancestral_levels`).  NFE = 2N.
    """
    if midpoint not in ("log_snr", "time"):
        raise ParameterError(f"midpoint must be 'log_snr' or 'time'; got {midpoint!r}")
    g = _edm_setup(sde, x, grid)
    c, st = g.c, g.st
    down, up = _ancestral_levels(st, eta)
    down64, st64 = down.double().cpu(), st.double().cpu()
    if midpoint == "log_snr":
        mid64 = torch.sqrt(st64[:-1] * down64)
        cm = _coefficients_at_levels(sde, mid64, x)
        w = None  # r = 1/2: D(x_mid) alone, exactly
    else:
        t64 = torch.as_tensor(grid, dtype=torch.float64).cpu()
        c64 = sde.coefficients(0.5 * (t64[:-1] + t64[1:]))  # halfway along the grid interval (eta > 0 too)
        mid64 = c64.sigma / c64.alpha
        cm = c64.to(x.dtype, x.device)
        # 1/(2r) with r = log(st_i / st_mid) / log(st_i / st_down): the weight of D(x_mid)
        w = (0.5 * torch.log(st64[:-1] / down64) / torch.log(st64[:-1] / mid64)).to(x)
    mid = mid64.to(x)
    xt = x / c.alpha[0]
    for i in range(len(up)):
        d0 = _denoise(score_fn, xt * c.alpha[i], c, i)
        x_mid = (mid[i] / st[i]) * xt - (mid[i] / st[i] - 1.0) * d0
        d_mid = _denoise(score_fn, x_mid * cm.alpha[i], cm, i)
        d = d_mid if w is None else d0 + w[i] * (d_mid - d0)
        xt = (down[i] / st[i]) * xt - (down[i] / st[i] - 1.0) * d
        if eta > 0:
            xt = xt + up[i] * _noise(xt, generator)
    return xt * c.alpha[-1], 2 * len(up)


def dpm_solver_sde(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    lower_order_final: bool = True,
) -> tuple[torch.Tensor, int]:
    r"""SDE-DPM-Solver++(2M), the multistep 2nd-order solver of the reverse SDE (Lu et al. 2022,
    appendix on SDE-DPM-Solver++; the "midpoint" form of Karras et al.'s and diffusers' code).

    In EDM variables, :math:`h = \lambda_{i+1} - \lambda_i`, :math:`\eta h` the injected noise:

    .. math::
        \tilde x_{i+1} = \tfrac{\tilde\sigma_{i+1}}{\tilde\sigma_i} e^{-\eta h}\tilde x_i
        + (1 - e^{-(1+\eta)h})\Big[D_i + \tfrac{1}{2r}(D_i - D_{i-1})\Big]
        + \tilde\sigma_{i+1}\sqrt{1 - e^{-2\eta h}}\, s_{noise}\, z,

    :math:`r = h_{i-1}/h_i`; first order on the first step and, with ``lower_order_final``, the last.
    ``eta = 1`` samples the reverse SDE; ``eta = 0`` is DPM-Solver++(2M).  NFE = N.
    """
    if not eta >= 0:
        raise ParameterError(f"eta must be non-negative; got {eta!r}")
    g = _edm_setup(sde, x, grid)
    c, st, lam = g
    h = lam[1:] - lam[:-1]
    num = len(h)
    orders = _multistep_orders(num, 2, lower_order_final)
    xt = x / c.alpha[0]
    d_prev = None
    for i in range(num):
        d = _denoise(score_fn, xt * c.alpha[i], c, i)
        gain = -torch.expm1(-(1.0 + eta) * h[i])
        xt = (st[i + 1] / st[i]) * torch.exp(-eta * h[i]) * xt + gain * d
        if orders[i] == 2:
            xt = xt + 0.5 * gain * (h[i] / h[i - 1]) * (d - d_prev)
        if eta > 0:
            xt = xt + st[i + 1] * torch.sqrt(-torch.expm1(-2.0 * eta * h[i])) * s_noise * _noise(xt, generator)
        d_prev = d
    return xt * c.alpha[-1], num


def _exp_moments(b: float, order: int) -> list[float]:
    r""":math:`\psi_m(b) = \int_0^1 s^m e^{bs} ds` for ``m < order`` (float64, full relative accuracy).

    For :math:`|b| < 1` the power series :math:`\sum_r b^r / (r!\,(m + r + 1))` (its terms fall at least
    as fast as :math:`1/r!`); otherwise :math:`\psi_0 = (e^b - 1)/b` and the recurrence
    :math:`\psi_m = (e^b - m\,\psi_{m-1})/b`, which amplifies rounding by at most :math:`m!/|b|^m`.
    (The recurrence at small :math:`|b|`, like any difference of the antiderivative at both ends, loses
    :math:`\log_{10}(1/|b|^m)` digits to cancellation.)"""
    if abs(b) < 1.0:
        out = []
        for m in range(order):
            term, total, r = 1.0, 1.0 / (m + 1), 0
            while abs(term) > 1e-18 * abs(total):
                r += 1
                term *= b / r
                total += term / (m + r + 1)
            out.append(total)
        return out
    eb = math.exp(b)
    out = [math.expm1(b) / b]
    for m in range(1, order):
        out.append((eb - m * out[-1]) / b)
    return out


def _unipc_coefficients(lam: torch.Tensor, i: int, order: int, corrector: bool) -> tuple[torch.Tensor, torch.Tensor]:
    r"""UniPC's ``(r_k, rho)`` for the step ``i -> i+1`` (Zhao et al. 2023, Alg. 1-2, :math:`B(h) = e^{h} - 1`
    in the data-prediction form): the nodes :math:`r_k = (\lambda_{i-k} - \lambda_i)/h`, and the
    weights solving :math:`\sum_k \rho_k r_k^{m-1} = -h\,\varphi_{m+1}(-h)\, m! / B(-h)`, :math:`m = 1..p`
    (UniP-2 uses :math:`\rho = 1/2`; UniC-1 as well), with
    :math:`\varphi_{m+1}(-h) = e^{-h}\psi_m(h)/m!` from :func:`_exp_moments`, accurate for every step (the
    recurrence :math:`\varphi_{k+1} = (\varphi_k - 1/k!)/z` lost :math:`\approx\epsilon/h^{k}` relatively: 5e-4 in
    the order-3 corrector at h = 1e-4).  float64."""
    h = lam[i + 1] - lam[i]
    rks = [(lam[i - k] - lam[i]) / h for k in range(1, order)] + [torch.ones((), dtype=lam.dtype)]
    rks_t = torch.stack(rks)
    hf = float(h)
    psi = _exp_moments(hf, order + 1)
    b_h = math.expm1(-hf)
    R = [rks_t ** (m - 1) for m in range(1, order + 1)]
    # b_m = h_phi_m m! / B(-h) with h_phi_m = -h phi_{m+1}(-h) = -h e^{-h} psi_m(h) / m!
    b = [-hf * math.exp(-hf) * psi[m] / b_h for m in range(1, order + 1)]
    R_t, b_t = torch.stack(R), torch.tensor(b, dtype=lam.dtype)
    if corrector:
        rho = torch.full((1,), 0.5, dtype=lam.dtype) if order == 1 else torch.linalg.solve(R_t, b_t)
    elif order == 2:
        rho = torch.full((1,), 0.5, dtype=lam.dtype)
    else:
        rho = torch.linalg.solve(R_t[:-1, :-1], b_t[:-1]) if order > 1 else torch.zeros(0, dtype=lam.dtype)
    return rks_t[:-1], rho


def unipc(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    order: int = 2,
    lower_order_final: bool = True,
    corrector: bool = True,
) -> tuple[torch.Tensor, int]:
    r"""UniPC (Zhao, Bai, Rao, Zhou & Lu 2023, *UniPC: a unified predictor-corrector framework for fast
    sampling of diffusion models*, Alg. 1-2, the data-prediction "B(h) = e^h - 1" variant).

    In EDM variables with :math:`\lambda = -\log\tilde\sigma`, :math:`h = \lambda_{i+1} - \lambda_i` and
    :math:`D_k = (D_{i-k} - D_i)/r_k` (:func:`_unipc_coefficients`):

    .. math::
        \text{UniP: } \tilde x_{i+1} = \tfrac{\tilde\sigma_{i+1}}{\tilde\sigma_i}\tilde x_i
        - (e^{-h} - 1) D_i - (e^{-h} - 1)\textstyle\sum_k \rho^p_k D_k,

    then, once :math:`D_{i+1} = D(\tilde x_{i+1})` is evaluated (it is needed for the next step anyway),
    UniC replaces :math:`\tilde x_{i+1}` by the same formula with the corrector weights
    :math:`\rho^c` and the extra node :math:`D_{i+1} - D_i` -- the next step starts from the corrected
    point with the uncorrected point's :math:`D_{i+1}`.  The corrector costs no evaluation: NFE = N.
    Warm-up orders ``1, 2, ..``; ``lower_order_final`` lowers the last steps' order.
    """
    check_int(order, "order", minimum=1)
    g = _edm_setup(sde, x, grid)
    c, st = g.c, g.st
    lam64 = g.lam.double().cpu()
    num = len(st) - 1
    orders = _multistep_orders(num, order, lower_order_final)
    coef = [(_unipc_coefficients(lam64, i, orders[i], False), _unipc_coefficients(lam64, i, orders[i], True))
            for i in range(num)]
    em1 = torch.expm1(-(g.lam[1:] - g.lam[:-1]))
    xt = x / c.alpha[0]
    hist: list[torch.Tensor] = []
    x_prev = None

    def base(i: int, x_from: torch.Tensor, rks: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        out = (st[i + 1] / st[i]) * x_from - em1[i] * hist[0]
        for k in range(len(rks)):
            out = out - em1[i] * float(rho[k]) / float(rks[k]) * (hist[k + 1] - hist[0])
        return out

    for i in range(num):
        d = _denoise(score_fn, xt * c.alpha[i], c, i)
        if corrector and x_prev is not None:  # UniC on the step i-1 -> i with the new value D_i
            (rks, rho) = coef[i - 1][1]
            xt = base(i - 1, x_prev, rks, rho[:-1]) - em1[i - 1] * float(rho[-1]) * (d - hist[0])
        hist = [d] + hist[: order - 1]
        x_prev = xt
        (rks, rho) = coef[i][0]
        xt = base(i, xt, rks, rho)
    return xt * c.alpha[-1], num


def _deis_coefficients(u: torch.Tensor, i: int, order: int) -> list[float]:
    r"""DEIS weights of the step ``i -> i+1``: :math:`C_j = \int_{u_i}^{u_{i+1}} \ell_j(u) e^u du` for the
    Lagrange basis :math:`\ell_j` on the nodes :math:`u_{i-j} = \log\tilde\sigma_{i-j}`, ``j < order``.

    Exact, in the variable :math:`s = (u - u_i)/b` scaled by the step :math:`b = u_{i+1} - u_i`:
    :math:`C_j = e^{u_i}\, b \int_0^1 L_j(s) e^{bs} ds = e^{u_i}\, b \sum_m a_{jm} \psi_m(b)`, with
    :math:`L_j(s) = \ell_j(u_i + bs) = \sum_m a_{jm} s^m` (nodes :math:`(u_{i-k} - u_i)/b`, of order one)
    and the moments :math:`\psi_m` of :func:`_exp_moments`.  Accurate to rounding for every step size;
    the antiderivative :math:`e^v \sum_k (-1)^k p^{(k)}(v)` differenced at both ends lost
    :math:`\approx \epsilon / |b|^{order}` relatively (6e-5 at order 3, :math:`|b|` = 1e-4).  float64."""
    b = float(u[i + 1] - u[i])
    nodes = [float(u[i - k] - u[i]) / b for k in range(order)]
    psi = _exp_moments(b, order)
    scale = math.exp(float(u[i])) * b
    out = []
    for j in range(order):
        poly = [1.0]  # monomial coefficients of L_j(s), lowest degree first
        for k in range(order):
            if k != j:
                den = nodes[j] - nodes[k]
                poly = [(poly[m - 1] if m > 0 else 0.0) / den - (poly[m] * nodes[k] / den if m < len(poly) else 0.0)
                        for m in range(len(poly) + 1)]
        out.append(scale * math.fsum(a * q for a, q in zip(poly, psi)))
    return out


def deis(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    order: int = 2,
    lower_order_final: bool = True,
) -> tuple[torch.Tensor, int]:
    r"""DEIS, the multistep exponential integrator with polynomial extrapolation of the noise prediction
    (Zhang & Chen 2023, *Fast sampling of diffusion models with exponential integrator*, eq. 15,
    "tAB-DEIS").

    In EDM variables the PF-ODE is :math:`d\tilde x/d\tilde\sigma = \hat\varepsilon`, so with
    :math:`\hat\varepsilon` interpolated by the Lagrange polynomial in :math:`u = \log\tilde\sigma` through
    the last ``order`` evaluations,

    .. math:: \tilde x_{i+1} = \tilde x_i + \sum_j C_{ij}\,\hat\varepsilon_{i-j}, \qquad
        C_{ij} = \int_{\tilde\sigma_i}^{\tilde\sigma_{i+1}} \ell_j(\log\tilde\sigma)\, d\tilde\sigma

    (closed form, :func:`_deis_coefficients`).  Order 1 is DDIM.  Warm-up ``1, 2, ..``;
    ``lower_order_final`` lowers the last steps' order.  NFE = N.  Deterministic.
    """
    check_int(order, "order", minimum=1)
    g = _edm_setup(sde, x, grid)
    c, st = g.c, g.st
    u = -g.lam.double().cpu()
    num = len(st) - 1
    orders = _multistep_orders(num, order, lower_order_final)
    coef = [_deis_coefficients(u, i, orders[i]) for i in range(num)]
    xt = x / c.alpha[0]
    hist: list[torch.Tensor] = []
    for i in range(num):
        d = _denoise(score_fn, xt * c.alpha[i], c, i)
        hist = [(xt - d) / st[i]] + hist[: order - 1]
        for j, w in enumerate(coef[i]):
            xt = xt + w * hist[j]
    return xt * c.alpha[-1], num


def annealed_langevin(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    num_steps: int = 5,
    step_ratio: float = 0.2,
) -> tuple[torch.Tensor, int]:
    r"""Annealed Langevin dynamics (NCSN; Song & Ermon 2019, Alg. 1; seed 002) on an SDE's time grid.

    :func:`fokker.mcmc.annealed_langevin` with the grid's times :math:`t_1, \dots, t_N` as levels
    (the first entry, the prior time, is skipped): ``num_steps`` unadjusted Langevin steps target
    each :math:`p_{t_i}` with :math:`\epsilon_i = \mathrm{step\_ratio}\cdot\sigma_i^2`, i.e. NCSN's
    :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2` written with ``step_ratio = epsilon / sigma_L^2``
    (here :math:`\epsilon_i = \alpha_i/2`).  Before the steps of level ``i`` the samples are rescaled
    by :math:`\alpha_i/\alpha_{i-1}` (the mean map of the forward transition; identity for VE, where
    this is exactly NCSN): without it a VP chain would have to diffuse the whole data scale outwards
    with steps of size :math:`\sigma_i`.  Each level keeps a bias of order ``step_ratio``.
    NFE = N * num_steps.
    """
    check_int(num_steps, "num_steps")
    if not step_ratio > 0:
        raise ParameterError(f"step_ratio must be positive; got {step_ratio!r}")
    c = _setup(sde, x, grid)
    out = langevin_levels(score_fn, c.t[1:], x, step_ratio * c.sigma[1:] ** 2, num_steps,
                          rescale=c.alpha[1:] / c.alpha[:-1], generator=generator, progress=False)
    return out, (len(c.t) - 1) * num_steps


SAMPLERS: dict[str, Callable[..., tuple[torch.Tensor, int]]] = {
    "euler_maruyama": euler_maruyama,
    "predictor_corrector": predictor_corrector,
    "ode_euler": ode_euler,
    "heun": heun,
    "ode_adaptive": ode_adaptive,
    "ddim": ddim,
    "dpm_solver": dpm_solver,
    "dpm_solver_3m": dpm_solver_3m,
    "dpm_solver_2s": dpm_solver_2s,
    "dpm_solver_sde": dpm_solver_sde,
    "unipc": unipc,
    "deis": deis,
    "euler_ancestral": euler_ancestral,
    "annealed_langevin": annealed_langevin,
}

#: The sampler ``DiffusionModel.sample`` uses by default: UniPC with its defaults of :func:`sampler_defaults`
#: (measured, ``benchmarks/samplers_quality_vs_nfe.py``: at 10 steps, 11 NFE, on the tight three-component mixture
#: under VP it keeps the mixture weights and within-component sds close to the truth, see
#: tests/diffusion/test_sampler_defaults.py; Heun on a Karras grid, an earlier default, missed the sds by 26-30%
#: with 21 NFE).
DEFAULT_SAMPLER = "unipc"

def get_sampler(name: str) -> Callable[..., tuple[torch.Tensor, int]]:
    """The sampler function registered under ``name`` (see :data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise ParameterError(f"sampler must be one of {tuple(SAMPLERS)}; got {name!r}")
    return SAMPLERS[name]
