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
