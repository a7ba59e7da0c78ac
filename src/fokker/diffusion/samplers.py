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

from collections.abc import Callable

import torch

from .._args import check_int, check_tensor
from .._random import randn_like
from ..errors import ParameterError, ShapeError
from ..mcmc.annealing import annealed_langevin as langevin_levels
from .parameterization import expand_like, to_score
from ..sde.schedule import Coefficients

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "SAMPLERS",
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
    score_fn: ScoreFn, sde: object, x: torch.Tensor, grid: torch.Tensor, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, int]:
    r"""Heun's 2nd-order method on the PF-ODE in EDM variables (Karras et al. 2022, Alg. 1).

    With :math:`\tilde x = x/\alpha` and :math:`\tilde\sigma = \sigma/\alpha` the PF-ODE of any
    linear SDE reads :math:`d\tilde x/d\tilde\sigma = (\tilde x - D(x, t))/\tilde\sigma` with the
    denoiser :math:`D = (x + \sigma^2 s)/\alpha` (Tweedie).  Each step is an Euler step in
    :math:`\tilde\sigma` corrected by the trapezoidal rule.  NFE = 2N.
    Deterministic; ``generator`` is accepted and unused.
    """
    c = _setup(sde, x, grid)
    st = c.sigma / c.alpha
    xt = x / c.alpha[0]
    nfe = 0

    def slope(xt: torch.Tensor, i: int) -> torch.Tensor:
        xi = xt * c.alpha[i]
        s = score_fn(xi, _tvec(c, i, xi))
        d0 = (xi + c.sigma[i] ** 2 * s) / c.alpha[i]
        return (xt - d0) / st[i]

    for i in range(len(st) - 1):
        d = slope(xt, i)
        x_e = xt + (st[i + 1] - st[i]) * d
        d2 = slope(x_e, i + 1)
        xt = xt + (st[i + 1] - st[i]) * 0.5 * (d + d2)
        nfe += 2
    return xt * c.alpha[-1], nfe


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
    c = _setup(sde, x, grid)
    a, s = c.alpha, c.sigma
    lam = torch.log(a) - torch.log(s)
    h = lam[1:] - lam[:-1]
    n = len(h)
    d_prev = None
    for i in range(n):
        sc = score_fn(x, _tvec(c, i, x))
        d = (x + s[i] ** 2 * sc) / a[i]
        first = d_prev is None or (lower_order_final and i == n - 1)
        if first:
            dd = d
        else:
            r = h[i - 1] / h[i]
            dd = (1.0 + 0.5 / r) * d - (0.5 / r) * d_prev
        x = (s[i + 1] / s[i]) * x - a[i + 1] * torch.expm1(-h[i]) * dd
        d_prev = d
    return x, n


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
    "annealed_langevin": annealed_langevin,
}

#: Default grid spacing per sampler (Karras for Heun, log-SNR for the exponential integrators).
DEFAULT_SPACING = {
    "euler_maruyama": "uniform",
    "predictor_corrector": "uniform",
    "ode_euler": "uniform",
    "heun": "karras",
    "ode_adaptive": "uniform",
    "ddim": "quadratic",
    "dpm_solver": "log_snr",
    "annealed_langevin": "log_snr",
}


def get_sampler(name: str) -> Callable[..., tuple[torch.Tensor, int]]:
    """The sampler function registered under ``name`` (see :data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise ParameterError(f"sampler must be one of {tuple(SAMPLERS)}; got {name!r}")
    return SAMPLERS[name]
