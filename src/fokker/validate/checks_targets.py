"""Validation checks for :mod:`fokker.targets`.

* ``targets.log_z_quadrature``: ``log_Z`` of every 1-2-D target (mog40, Funnel(2), Banana,
  Rings, DoubleWell, ManyWell(2)) against an independent 2-D quadrature of ``exp(log_prob)``
  (trapezoid on a fine grid, spectrally accurate for these smooth, fast-decaying densities;
  ``scipy.integrate.dblquad`` with limits following the funnel's neck and the banana's arc).
* ``targets.manywell_log_z``: ``ManyWell(32).log_Z`` against the published 164.695675 and
  against ``16 (log int exp(-x^4 + 6x^2 + x/2) dx + log sqrt(2 pi))`` by ``scipy.integrate.quad``.
* ``targets.mog40_construction``: the mog40 means equal FAB's construction re-run with the
  global ``torch.manual_seed(0)``; the scale equals ``softplus(1)``; the Monte-Carlo mean of
  exact samples matches the mixture mean within ``Z_SCORE`` standard errors.
* ``targets.exact_samples``: Kolmogorov-Smirnov p-values of exact samples against CDFs by
  quadrature (ManyWell quartic coordinate, Funnel ``x_1``, Rings radius); pass when
  ``p > 2 Phi(-Z_SCORE)``.
* ``targets.logistic_data``: the logistic-regression loaders give the published ``(N, d)``
  (ionosphere 351 x 35, sonar 208 x 61, German credit 1000 x 25, breast cancer 569 x 31) and
  finite log-densities; LGCP on pines127 gives ``d = 1600`` and 127 points.
  Skipped when ``shared/validation`` is absent.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..tolerances import Z_SCORE
from . import CheckResult, Context, register

_KS_ALPHA = math.erfc(Z_SCORE / math.sqrt(2))  # two-sided normal tail at Z_SCORE


def _grid_log_Z(t, lo: float, hi: float, n: int) -> float:
    g = torch.linspace(lo, hi, n, dtype=torch.float64)
    h = (hi - lo) / (n - 1)
    rows = []
    for chunk in torch.split(g, 256):  # bounded memory for large K
        X, Y = torch.meshgrid(chunk, g, indexing="ij")
        rows.append(t.log_prob(torch.stack([X, Y], -1)))
    lp = torch.cat(rows)
    m = lp.max()
    return float(m + torch.log(torch.trapezoid(torch.trapezoid(torch.exp(lp - m), dx=h, dim=1), dx=h)))


@register("targets.log_z_quadrature", group="targets")
def log_z_quadrature(ctx: Context) -> list[CheckResult]:
    from scipy import integrate

    from ..targets import Banana, DoubleWell, Funnel, ManyWell, Rings, mog40

    f = 1 if ctx.quick else 2
    cases = [
        ("mog40", mog40(dtype=torch.float64), -60.0, 60.0, 601 * f),  # h = 0.2 << sigma = 1.31
        ("Rings", Rings().double(), -6.0, 6.0, 1201 * f),
        ("DoubleWell(2, delta=4)", DoubleWell(2).double(), -6.0, 6.0, 801 * f),
        ("ManyWell(2)", ManyWell(2).double(), -8.0, 8.0, 801 * f),
    ]
    rows = []
    for name, t, lo, hi, n in cases:
        est = _grid_log_Z(t, lo, hi, n)
        rows.append(CheckResult.compare(f"{name} log Z (2-D trapezoid)", est, float(t.log_Z), tol=1e-6))
    fun = Funnel(dim=2, scale=3.0).double()

    def dens(x1: float, x0: float) -> float:
        return math.exp(fun.log_prob(torch.tensor([x0, x1], dtype=torch.float64)).item())

    Z, _ = integrate.dblquad(
        dens, -24.0, 24.0, lambda x0: -12 * math.exp(x0 / 2), lambda x0: 12 * math.exp(x0 / 2), epsabs=1e-9
    )
    rows.append(CheckResult.compare("Funnel(2) log Z (dblquad)", math.log(Z), float(fun.log_Z), tol=1e-6))
    ban = Banana(dim=2, curvature=0.1, scale=10.0).double()
    b, s = ban.curvature, ban.scale

    def dens_b(x2: float, x1: float) -> float:
        return math.exp(ban.log_prob(torch.tensor([x1, x2], dtype=torch.float64)).item())

    Z, _ = integrate.dblquad(
        dens_b, -9 * s, 9 * s, lambda x1: -b * (x1**2 - s**2) - 10, lambda x1: -b * (x1**2 - s**2) + 10, epsabs=1e-10
    )
    rows.append(CheckResult.compare("Banana(b=0.1) log Z (dblquad)", math.log(Z), float(ban.log_Z), tol=1e-6))
    # control: a density off by a factor exp(1e-4) (a normalizer bug 100x the tolerance) is caught
    rings = Rings().double()
    est = _grid_log_Z(_Shifted(rings, 1e-4), -6.0, 6.0, 1201 * f)
    rows.append(CheckResult.compare("Rings with log_prob + 1e-4: log Z (2-D trapezoid)", est, float(rings.log_Z),
                                    tol=1e-6, control=True))
    return rows


class _Shifted:
    """``log_prob + c``: a target with a deliberately wrong normalizer (for the control rows)."""

    def __init__(self, target, c: float) -> None:
        self.target, self.c = target, c

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.log_prob(x) + self.c


@register("targets.manywell_log_z", group="targets")
def manywell_log_z(ctx: Context) -> list[CheckResult]:
    from scipy import integrate

    from ..targets import ManyWell

    def quad_log_Z(tilt: float) -> float:
        zx, _ = integrate.quad(lambda x: math.exp(-(x**4) + 6 * x**2 + tilt * x), -np.inf, np.inf, epsrel=1e-13)
        return 16 * (math.log(zx) + 0.5 * math.log(2 * math.pi))

    lz = float(ManyWell(32).log_Z)
    return [
        CheckResult.compare("ManyWell(32) log Z vs published", lz, 164.695675, tol=1e-5),
        CheckResult.compare("ManyWell(32) log Z vs scipy quad", lz, quad_log_Z(0.5), tol=1e-8),
        # control: the quadrature of a well with a 1% different tilt does not match the published value
        CheckResult.compare("ManyWell(32) with tilt 0.505: quad vs published", quad_log_Z(0.505), 164.695675, tol=1e-5,
                            control=True),
    ]


@register("targets.mog40_construction", group="targets")
def mog40_construction(ctx: Context) -> list[CheckResult]:
    from ..targets import mog40

    with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is restored on exit
        # FAB: experiments/gmm/run.py seeds the global RNG with 0 right before building the GMM
        torch.random.default_generator.manual_seed(0)
        ref_loc = (torch.rand((40, 2)) - 0.5) * 2 * 40
    t = mog40(dtype=torch.float32)
    rows = [
        CheckResult.compare("max |loc - FAB construction|", float((t.loc - ref_loc).abs().max()), 0.0, tol=0.0),
        CheckResult.compare(
            "component scale vs softplus(1)", float(t.scale_tril[:, 0, 0].max()), math.log1p(math.e), tol=1e-6
        ),
    ]
    t64 = mog40(dtype=torch.float64)
    n = 20_000 if ctx.quick else 200_000
    x = t64.sample((n,), generator=torch.Generator().manual_seed(ctx.seed))
    se = torch.sqrt(torch.diagonal(t64.covariance()) / n)
    z = float(((x.mean(0) - t64.mean()) / se).abs().max())
    rows.append(CheckResult.bound("sample mean error (max |z|, exact samples)", z, Z_SCORE))
    # control: a sampler that drops 4 of the 40 modes (mode dropping, the typical failure) is rejected
    from ..targets import GaussianMixture

    w = t64.weights.clone()
    w[:4] = 0.0
    dropped = GaussianMixture(t64.loc, t64.scale_tril, w / w.sum())
    xm = dropped.sample((n,), generator=torch.Generator().manual_seed(ctx.seed + 1))
    zm = float(((xm.mean(0) - t64.mean()) / se).abs().max())
    rows.append(CheckResult.bound("4 of 40 modes dropped: sample mean error (max |z|)", zm, Z_SCORE, control=True))
    if not ctx.quick:
        _plot_mog40(t64, x[:2000], ctx)
    return rows


def _plot_mog40(t, x: torch.Tensor, ctx: Context) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional
        return
    g = torch.linspace(-50, 50, 300, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="ij")
    lp = t.log_prob(torch.stack([X, Y], -1)).clamp_min(-60)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.contour(X.numpy(), Y.numpy(), lp.numpy(), levels=40)
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=1, c="k", alpha=0.4)
    ax.set_title("mog40: log density and exact samples")
    ctx.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(ctx.out / "targets_mog40.png", dpi=100)
    plt.close(fig)


def _ks_cdf(log_density, lo: float, hi: float, n: int = 20001):
    from scipy.integrate import cumulative_trapezoid

    g = np.linspace(lo, hi, n)
    lp = log_density(g)
    c = cumulative_trapezoid(np.exp(lp - lp.max()), g, initial=0.0)
    c /= c[-1]
    return lambda x: np.interp(x, g, c)


@register("targets.exact_samples", group="targets")
def exact_samples(ctx: Context) -> list[CheckResult]:
    from scipy import stats

    from ..targets import Funnel, ManyWell, Rings

    n = 5_000 if ctx.quick else 50_000
    gen = torch.Generator().manual_seed(ctx.seed)
    rows = []
    mw = ManyWell(4).double().sample((n,), generator=gen)
    cdf = _ks_cdf(lambda a: -(a**4) + 6 * a**2 + 0.5 * a, -5, 5)
    rows.append(("ManyWell x_0 (quartic)", stats.kstest(mw[:, 0].numpy(), cdf).pvalue))
    fu = Funnel(3, 3.0).double().sample((n,), generator=gen)
    g = np.linspace(-27, 27, 1501)
    w = stats.norm(0, 3).pdf(g) * (g[1] - g[0])
    rows.append(
        (
            "Funnel x_1 (mixture over x_0)",
            stats.kstest(fu[:, 1].numpy(), lambda u: (stats.norm.cdf(np.asarray(u)[:, None] * np.exp(-g / 2)) * w).sum(1)).pvalue,
        )
    )
    ri = Rings()
    rr = torch.linalg.vector_norm(ri.double().sample((n,), generator=gen), dim=-1).numpy()
    radii = np.array(ri.radii)
    s2 = 2 * ri.sigma**2
    cdf_r = _ks_cdf(lambda p: np.log(np.maximum(p, 1e-300)) + np.log(np.exp(-((p[:, None] - radii) ** 2) / s2).sum(1) + 1e-300), 0, 7)
    rows.append(("Rings radius", stats.kstest(rr, cdf_r).pvalue))
    out = [CheckResult.bound(f"KS p-value: {name}", float(p), _KS_ALPHA, upper=False) for name, p in rows]
    # control: ManyWell samples stretched by 2% fail the same KS test
    p_bad = stats.kstest(1.02 * mw[:, 0].numpy(), cdf).pvalue
    out.append(CheckResult.bound("KS p-value: ManyWell x_0 stretched by 2%", float(p_bad), _KS_ALPHA, upper=False,
                                 control=True))
    return out


@register("targets.logistic_data", group="targets", needs_data=True)
def logistic_data(ctx: Context) -> list[CheckResult]:
    from ..targets import LGCP, breast_cancer, german_credit, ionosphere, sonar

    rows = []
    for loader, N, d in ((ionosphere, 351, 35), (sonar, 208, 61), (german_credit, 1000, 25), (breast_cancer, 569, 31)):
        t = loader(dtype=torch.float64)
        finite = bool(torch.isfinite(t.log_prob(torch.zeros(3, t.dim, dtype=torch.float64))).all())
        rows.append(CheckResult.compare(f"{t.name} d", t.dim, d, tol=0))
        rows.append(CheckResult.compare(f"{t.name} N", t.num_data, N, tol=0, details="" if finite else "non-finite log_prob"))
        if not finite:
            rows[-1].passed = False
    lg = LGCP("pines127", grid=40)
    rows.append(CheckResult.compare("LGCP(pines127) d", lg.dim, 1600, tol=0))
    rows.append(CheckResult.compare("LGCP(pines127) points counted", float(lg.counts.sum()), 127, tol=0))
    # control: a loader that drops the last data row is caught by the same comparison
    t = ionosphere(dtype=torch.float64)
    rows.append(CheckResult.compare("ionosphere with its last row dropped: N", t.num_data - 1, 351, tol=0, control=True))
    return rows
