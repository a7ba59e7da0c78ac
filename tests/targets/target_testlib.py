"""Independent reference computations shared by the target tests (not a test module)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from fokker.tolerances import Z_SCORE


def autograd_score(fn, x: torch.Tensor) -> torch.Tensor:
    """``grad_x fn(x).sum()`` by plain autograd (reference for analytic scores)."""
    xg = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(xg).sum(), xg)
    return g


def ks_pvalue(samples: torch.Tensor, cdf) -> float:
    """One-sample Kolmogorov-Smirnov p-value of 1-D ``samples`` against ``cdf`` (numpy callable)."""
    return float(stats.kstest(samples.detach().cpu().double().numpy(), cdf).pvalue)


#: p-value below which a KS test fails: the two-sided normal tail at ``Z_SCORE`` SE.
KS_ALPHA = float(2 * stats.norm.sf(Z_SCORE))


def grid_cdf(log_density, lo: float, hi: float, n: int = 20001):
    """CDF of a 1-D unnormalized density on ``[lo, hi]`` by cumulative Simpson/trapezoid quadrature.

    ``log_density``: numpy callable.  Returns a vectorized numpy CDF (linear interpolation
    on a fine grid; mass outside ``[lo, hi]`` must be negligible).
    """
    from scipy.integrate import cumulative_trapezoid

    g = np.linspace(lo, hi, n)
    lp = log_density(g)
    p = np.exp(lp - lp.max())
    c = cumulative_trapezoid(p, g, initial=0.0)
    c /= c[-1]
    return lambda x: np.interp(x, g, c, left=0.0, right=1.0)


def grid_log_Z(log_prob, lo: float, hi: float, n: int = 1501) -> float:
    """``log`` of the 2-D trapezoid integral of ``exp(log_prob)`` over ``[lo, hi]^2`` (float64).

    Spectrally accurate for smooth densities that vanish at the box edges.
    """
    g = torch.linspace(lo, hi, n, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="ij")
    lp = log_prob(torch.stack([X, Y], -1))
    m = lp.max()
    h = (hi - lo) / (n - 1)
    return float(m + torch.log(torch.trapezoid(torch.trapezoid(torch.exp(lp - m), dx=h, dim=1), dx=h)))


def gauss_legendre_log_Z_2d(log_prob, a: float, b: float, lo_fn, hi_fn, n: int = 400) -> float:
    """``log int_a^b int_{lo(x0)}^{hi(x0)} exp(log_prob(x0, x1)) dx1 dx0`` by an ``n x n`` Gauss-Legendre rule.

    ``lo_fn`` / ``hi_fn`` map a tensor of outer nodes to inner limits (vectorized); float64.
    """
    t, w = np.polynomial.legendre.leggauss(n)
    t, w = torch.as_tensor(t), torch.as_tensor(w)
    x0 = 0.5 * (b - a) * t + 0.5 * (b + a)
    w0 = 0.5 * (b - a) * w
    lo, hi = lo_fn(x0), hi_fn(x0)
    x1 = 0.5 * (hi - lo)[:, None] * t[None, :] + 0.5 * (hi + lo)[:, None]
    w1 = 0.5 * (hi - lo)[:, None] * w[None, :]
    lp = log_prob(torch.stack([x0[:, None].expand_as(x1), x1], -1))
    m = lp.max()
    return float(m + torch.log((w0[:, None] * w1 * torch.exp(lp - m)).sum()))
