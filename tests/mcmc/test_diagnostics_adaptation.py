"""Diagnostics (ESS, R-hat) against processes with known ESS, and the adaptation pieces."""

from __future__ import annotations

import math

import torch

from fokker.mcmc import DualAveraging, diagnostics, regularized_covariance, stan_windows
from fokker.tolerances import assert_close

#: Relative accuracy asked of the ESS / MCSE estimates below.  For an AR(1) chain the estimated
#: integrated autocorrelation time has relative sd ~ sqrt(2 (2M + 1) / N) (Sokal 1997) with a window
#: M of a few autocorrelation times: 0.02-0.1 here; a wrong formula (an ESS per chain, a missing
#: factor 2 in tau) is off by 50% or more.
ESS_RTOL = 0.15


def _ar1(chains: int, n: int, rho: float, dims: int = 1, seed: int = 0) -> torch.Tensor:
    """Stationary AR(1) x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t, started from N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(chains, n, dims, dtype=torch.float64)
    x[:, 0] = torch.randn(chains, dims, dtype=torch.float64, generator=g)
    e = torch.randn(chains, n, dims, dtype=torch.float64, generator=g) * math.sqrt(1 - rho**2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x


def test_ess_of_ar1_matches_closed_form() -> None:
    """ESS of an AR(1) chain: N (1 - rho) / (1 + rho) (integrated autocorrelation time)."""
    c, n = 8, 4000
    for rho in (0.0, 0.5, 0.9):
        x = _ar1(c, n, rho, dims=3)
        want = c * n * (1 - rho) / (1 + rho)
        for est in (diagnostics.ess_mean(x), diagnostics.ess_bulk(x)):
            assert ((est / want) - 1).abs().max() < ESS_RTOL, (rho, est, want)
    # tail ESS of iid draws is about N as well
    x = torch.randn(8, 2000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert ((diagnostics.ess_tail(x) / 16000) - 1).abs().max() < ESS_RTOL


def test_rhat_detects_stuck_chains() -> None:
    x = torch.randn(4, 1000, 2, dtype=torch.float64)
    assert (diagnostics.rhat(x) < 1.01).all()
    y = x.clone()
    y[0] += 2.0  # one chain in another place
    assert (diagnostics.rhat(y) > 1.1).all()
    z = x.clone()
    z[1] *= 4.0  # one chain with another scale: caught by the folded (tail) R-hat
    assert (diagnostics.rhat(z) > 1.1).all()
    # a trend inside every chain: caught by splitting
    w = x + torch.linspace(-2, 2, 1000, dtype=torch.float64)[None, :, None]
    assert (diagnostics.rhat(w) > 1.1).all()


def test_rank_normalize_is_standard_normal_scores_with_ties() -> None:
    x = torch.tensor([[[3.0], [1.0], [2.0], [2.0]]], dtype=torch.float64)
    z = diagnostics.rank_normalize(x).flatten()
    ranks = torch.tensor([4.0, 1.0, 2.5, 2.5], dtype=torch.float64)  # average ranks for the tie
    p = (ranks - 0.375) / (4 + 0.25)
    want = torch.distributions.Normal(0.0, 1.0).icdf(p)
    assert_close(z, want)


def test_mcse_mean_of_iid_draws() -> None:
    x = 3.0 * torch.randn(4, 5000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mc = diagnostics.mcse_mean(x)
    assert abs(float(mc) / (3.0 / math.sqrt(20000)) - 1) < ESS_RTOL / 2  # sd / sqrt(ESS): half the ESS error


def test_stan_windows_match_stan_defaults() -> None:
    """Stan's documented schedule for 1000 warm-up iterations: 75 fast, slow windows of
    25, 50, 100, 200, 500 (the last stretched to the terminal buffer), 50 fast."""
    assert stan_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    # short warm-up: 15% / 75% / 10%
    assert stan_windows(100) == [(15, 90)]
    assert stan_windows(10) == []
    for w in (150, 300, 517, 2000):
        win = stan_windows(w)
        assert all(a < b for a, b in win) and all(win[i][1] == win[i + 1][0] for i in range(len(win) - 1))


def test_dual_averaging_finds_target_acceptance() -> None:
    """With a deterministic acceptance curve a(eps) = exp(-eps) the fixed point is eps = -log(delta)."""
    da = DualAveraging(torch.tensor(1.0, dtype=torch.float64), target_accept=0.8)
    eps = da.step_size
    for _ in range(2000):
        eps = da.update(torch.exp(-eps))
    # convergence tolerance of the averaged iterate after 2000 steps (it converges like t^-kappa, kappa = 0.75)
    assert abs(float(da.final_step_size) + math.log(0.8)) < 1e-2
    # NaN acceptance (a divergent proposal) counts as 0 and shrinks the step
    da.reset(torch.tensor(1.0, dtype=torch.float64))
    assert float(da.update(torch.tensor(math.nan, dtype=torch.float64))) < 10.0


def test_regularized_covariance_is_stan_shrinkage() -> None:
    x = torch.randn(45, 3, dtype=torch.float64) @ torch.tensor([[2.0, 0, 0], [0.5, 1.0, 0], [0, 0, 0.1]], dtype=torch.float64)
    n = 45
    cov = torch.cov(x.T)
    want = n / (n + 5) * cov + 1e-3 * 5 / (n + 5) * torch.eye(3, dtype=torch.float64)
    assert_close(regularized_covariance(x, dense=True), want)
    assert_close(regularized_covariance(x, dense=False), want.diagonal())
