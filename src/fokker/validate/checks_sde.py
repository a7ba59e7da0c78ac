"""Validation of ``fokker.sde`` / ``fokker.analytic``: marginal, Fokker-Planck, Tweedie, reverse sampling.

Every check compares against an exact closed form (Gaussian-mixture data pushed through each
linear SDE).  ``ctx.quick`` uses fewer paths/points; the whole group runs in a few seconds.
"""

from __future__ import annotations

import math

import torch

from .._random import make_generator, rand
from ..tolerances import Z_SCORE
from . import CheckResult, Context, register


def _sdes() -> dict:
    from .. import sde

    return {
        "vp": sde.VPSDE(),
        "vp_cosine": sde.VPSDE.cosine(),
        "subvp": sde.SubVPSDE(),
        "ve": sde.VESDE(sigma_min=0.01, sigma_max=10.0),
        "ou": sde.OrnsteinUhlenbeck(theta=1.5, sigma=0.8),
        "brownian": sde.BrownianMotion(sigma=1.3),
    }


def _gmm():
    from ..targets import GaussianMixture

    loc = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=torch.float64)
    L = torch.tensor([[[0.6, 0.0], [0.2, 0.5]], [[0.4, 0.0], [-0.1, 0.7]], [[0.5, 0.0], [0.0, 0.3]]], dtype=torch.float64)
    return GaussianMixture(loc, L, torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64))


@register("sde.marginal", group="sde")
def marginal(ctx: Context) -> list[CheckResult]:
    """Euler-Maruyama simulation vs closed-form marginal mean/variance (bias-corrected z-score)."""
    from ..checks import check_marginal

    num_samples, num_steps = (20_000, 200) if ctx.quick else (400_000, 1000)
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64)
    rows = []
    for name, obj in _sdes().items():
        t_end = 0.8 * getattr(obj, "t_star", obj.T)
        gen = torch.Generator().manual_seed(ctx.seed)
        res = check_marginal(obj, x0, t_end, num_samples=num_samples, num_steps=num_steps, t0=0.05 * obj.T, generator=gen)
        rows.append(CheckResult.bound(f"{name} max z (EM vs closed form)", res.error, res.tolerance,
                                      details=repr(res)))
    # control: a VP whose closed-form variance belongs to 1.3x the integrated rate (the simulated drift is right)
    wrong = _WrongVarianceVP()
    res = check_marginal(wrong, x0, 0.4, num_samples=num_samples, num_steps=num_steps, t0=0.05,
                         generator=torch.Generator().manual_seed(ctx.seed))
    rows.append(CheckResult.bound("VP with a wrong closed-form variance: max z", res.error, res.tolerance,
                                  details=repr(res), control=True))
    return rows


def _WrongVarianceVP():
    from .. import sde

    class WrongVarianceVP(sde.VPSDE):
        def _sigma2(self, t: torch.Tensor) -> torch.Tensor:
            return -torch.expm1(-1.3 * self._B(t))

    return WrongVarianceVP()


@register("sde.fokker_planck", group="sde")
def fokker_planck(ctx: Context) -> list[CheckResult]:
    """Autograd Fokker-Planck residual of the exact diffused-GMM density, each linear SDE and CLD."""
    from .. import sde
    from ..analytic import DiffusedGaussianMixture
    from ..checks import check_fokker_planck

    n = 16 if ctx.quick else 256
    rows = []
    gen = make_generator(seed=ctx.seed)
    objs = {**_sdes(), "cld": sde.CriticallyDampedLangevin()}
    for name, obj in objs.items():
        oracle = DiffusedGaussianMixture(_gmm(), obj)
        t = rand((n,), generator=gen, dtype=torch.float64) * 0.9 * obj.T + 0.05 * obj.T
        x = oracle.sample((n,), t, generator=gen)
        res = check_fokker_planck(obj, oracle.log_prob, x, t)
        rows.append(CheckResult.bound(f"{name} relative residual", res.error, res.tolerance, details=repr(res)))
    # control: the exact density of the VE SDE's marginals checked against the VP SDE's equation
    vp, ve_oracle = sde.VPSDE(), DiffusedGaussianMixture(_gmm(), sde.VESDE(sigma_min=0.01, sigma_max=10.0))
    t = rand((n,), generator=gen, dtype=torch.float64) * 0.9 + 0.05
    x = ve_oracle.sample((n,), t, generator=gen)
    res = check_fokker_planck(vp, ve_oracle.log_prob, x, t)
    rows.append(CheckResult.bound("VE density under the VP equation: relative residual", res.error, res.tolerance,
                                  details=repr(res), control=True))
    return rows


@register("sde.tweedie", group="sde")
def tweedie(ctx: Context) -> list[CheckResult]:
    """Tweedie: oracle denoiser / noise predictor vs (x + sigma^2 score)/alpha and -sigma score."""
    from ..analytic import DiffusedGaussianMixture
    from ..checks import check_tweedie

    n = 64 if ctx.quick else 4096
    rows = []
    gen = make_generator(seed=ctx.seed)
    for name, obj in _sdes().items():
        oracle = DiffusedGaussianMixture(_gmm(), obj)
        for t in (0.05, 0.5, 0.95):
            tt = t * getattr(obj, "t_star", obj.T)
            x = oracle.sample((n,), tt, generator=gen)
            res = check_tweedie(oracle, x, tt)
            rows.append(CheckResult.bound(f"{name} t={tt:.3g} relative error", res.error, res.tolerance, details=repr(res)))
    # control: a denoiser off by 1e-3 (the size of a small bug in a conversion)
    oracle = DiffusedGaussianMixture(_gmm(), _sdes()["vp"])
    x = oracle.sample((n,), 0.5, generator=gen)
    res = check_tweedie(_ShiftedDenoiser(oracle, 1e-3), x, 0.5)
    rows.append(CheckResult.bound("VP denoiser shifted by 1e-3: relative error", res.error, res.tolerance,
                                  details=repr(res), control=True))
    return rows


class _ShiftedDenoiser:
    """An oracle whose denoiser is off by a constant (a deliberately wrong model for the Tweedie control)."""

    def __init__(self, oracle, shift: float) -> None:
        self.oracle, self.sde, self.shift = oracle, oracle.sde, shift

    def score(self, x, t):
        return self.oracle.score(x, t)

    def eps(self, x, t):
        return self.oracle.eps(x, t)

    def denoise(self, x, t):
        return self.oracle.denoise(x, t) + self.shift


def _moment_z(x: torch.Tensor, ref_mean: torch.Tensor, ref_second: torch.Tensor) -> float:
    feats = torch.cat([x, x[:, :1] ** 2, x[:, 1:] ** 2, x[:, :1] * x[:, 1:]], -1)
    exact = torch.stack([ref_mean[0], ref_mean[1], ref_second[0, 0], ref_second[1, 1], ref_second[0, 1]])
    se = feats.std(0) / math.sqrt(x.shape[0])
    return float(((feats.mean(0) - exact).abs() / se).max())


@register("sde.reverse_sampling", group="sde")
def reverse_sampling(ctx: Context) -> list[CheckResult]:
    """Reverse SDE (EM) and PF-ODE (Heun) with the exact score, from exact p_T samples, reproduce
    the GMM's mean and second moments at t = 0 (max z-score over 5 moments; limit Z_SCORE SE)."""
    from .. import sde
    from ..analytic import DiffusedGaussianMixture

    n, em_steps, ode_steps = (5000, 400, 100) if ctx.quick else (100_000, 1000, 200)
    gm = _gmm()
    m = gm.mean()
    second = gm.covariance() + m[:, None] * m[None, :]
    rows = []
    for name, obj in {"vp": sde.VPSDE(), "ve": sde.VESDE(sigma_min=0.01, sigma_max=10.0), "subvp": sde.SubVPSDE()}.items():
        oracle = DiffusedGaussianMixture(gm, obj)
        gen = torch.Generator().manual_seed(ctx.seed)
        xT = oracle.sample((n,), obj.T, generator=gen)
        rev = obj.reverse(oracle.score_fn)
        x_em = sde.solve(rev, xT, torch.linspace(0.0, rev.T, em_steps + 1, dtype=torch.float64), generator=gen)
        ode = obj.probability_flow(oracle.score_fn)
        x_pf = sde.solve(ode, xT, torch.linspace(obj.T, 0.0, ode_steps + 1, dtype=torch.float64), method="heun")
        rows.append(CheckResult.bound(f"{name} reverse EM ({em_steps} steps) moment z", _moment_z(x_em, m, second),
                                      Z_SCORE))
        rows.append(CheckResult.bound(f"{name} PF-ODE Heun ({ode_steps} steps) moment z", _moment_z(x_pf, m, second),
                                      Z_SCORE))
    # control: the VP reverse SDE with a score too weak by 20% (a mis-scaled network output)
    obj = sde.VPSDE()
    oracle = DiffusedGaussianMixture(gm, obj)
    gen = torch.Generator().manual_seed(ctx.seed)
    xT = oracle.sample((n,), obj.T, generator=gen)
    rev = obj.reverse(lambda x, t: 0.8 * oracle.score_fn(x, t))
    x_bad = sde.solve(rev, xT, torch.linspace(0.0, rev.T, em_steps + 1, dtype=torch.float64), generator=gen)
    rows.append(CheckResult.bound("VP reverse EM with 0.8 x the score: moment z", _moment_z(x_bad, m, second), Z_SCORE,
                                  control=True))
    return rows
