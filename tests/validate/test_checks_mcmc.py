"""The funnel rows of the MCMC validation: exact moments of Neal's funnel, on exact draws and on biased ones."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from scipy import integrate

from fokker.targets import Funnel
from fokker.tolerances import Z_SCORE, assert_close
from fokker.validate.checks_mcmc import LOG_ABS_NORMAL_MEAN, FUNNEL_DIM, FUNNEL_SCALE, funnel_rows


def _result(x: torch.Tensor) -> SimpleNamespace:
    """What funnel_rows reads of an MCMCResult, for draws ``x`` of shape (chains, draws, dim)."""
    c = x.shape[0]
    return SimpleNamespace(constrained={"x0": x[..., 0], "x": x[..., 1:]}, good_chains=torch.arange(c),
                           divergences=torch.zeros(c, dtype=torch.long))


def _exact_draws(chains: int = 16, draws: int = 250) -> torch.Tensor:
    """Exact ancestral draws of targets.Funnel (x0 ~ N(0, scale^2), x_i | x0 ~ N(0, e^x0)), as (chains, draws, dim)."""
    funnel = Funnel(FUNNEL_DIM, scale=FUNNEL_SCALE).double()
    return funnel.sample((chains, draws), generator=torch.Generator().manual_seed(0))


def test_log_abs_mean_by_quadrature() -> None:
    """E log|z| for z ~ N(0, 1), the constant of the E log|x_i| row, against quadrature."""
    val, _ = integrate.quad(lambda z: 2 * math.log(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), 0, math.inf)
    assert_close(torch.tensor(LOG_ABS_NORMAL_MEAN, dtype=torch.float64), torch.tensor(val, dtype=torch.float64), loose=True)


def test_funnel_rows_accept_exact_draws_and_reject_a_missed_neck() -> None:
    """iid draws of the funnel pass; draws that never enter the neck do not."""
    x = _exact_draws()
    rows = funnel_rows(_result(x))
    assert rows["z"] < Z_SCORE and rows["rhat"] < 1.01 and rows["ess"] > 0.5 * x.shape[0] * x.shape[1]
    # truncate the neck: x0 < -3 never visited (what a centred sampler does); the same draws otherwise
    kept = x[..., 0] > -3.0
    trunc = x.clone()
    trunc[~kept] = x[kept][: int((~kept).sum())]
    assert funnel_rows(_result(trunc))["z"] > Z_SCORE
