"""Anomaly detection by partial diffusion (AnoDDPM) against the closed form of Gaussian data.

For data ``N(0, s^2 I)`` under a linear SDE the marginal is ``N(0, v_t I)``, ``v_t = alpha_t^2 s^2 + sigma_t^2``,
the PF-ODE from ``t*`` to ``t_min`` is the linear map ``x -> sqrt(v_min / v_*) x`` and the Tweedie denoiser at
``t_min`` is ``x -> alpha_min s^2 / v_min x``: the reconstruction of ``x`` with noise ``z`` is
``k (alpha_* x + sigma_* z)``, ``k = sqrt(v_min / v_*) alpha_min s^2 / v_min``.
"""

from __future__ import annotations

import math

import pytest
import torch

from fokker import metrics
from fokker._random import randn_like
from fokker.diffusion import DiffusionModel
from fokker.diffusion.anomaly import anomaly_score, partial_diffusion
from fokker.errors import ParameterError
from fokker.sde import VESDE, VPSDE
from fokker.tolerances import Z_SCORE, assert_close

S = 0.5  # data standard deviation


class GaussianScore(torch.nn.Module):
    """The exact score of ``N(0, s^2 I)`` diffused by ``sde``."""

    dim = 3

    def __init__(self, sde) -> None:
        super().__init__()
        self.sde = sde
        self.register_buffer("anchor", torch.zeros((), dtype=torch.float64))

    def forward(self, x, t):
        c = self.sde.coefficients(t)
        return -x / (c.alpha**2 * S**2 + c.sigma**2)[:, None]


def _gain(sde, model, t_star: float) -> tuple[float, float, float]:
    """``(k, alpha_*, sigma_*)`` of the exact reconstruction ``k (alpha_* x + sigma_* z)``."""
    c = sde.coefficients(torch.tensor([t_star, model.t_min], dtype=torch.float64))
    v = c.alpha**2 * S**2 + c.sigma**2
    k = float(torch.sqrt(v[1] / v[0]) * c.alpha[1] * S**2 / v[1])
    return k, float(c.alpha[0]), float(c.sigma[0])


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_min=0.01, sigma_max=20.0)], ids=["vp", "ve"])
def test_partial_diffusion_is_the_exact_linear_reconstruction(sde) -> None:
    """Same noise draw as the closed form: the adaptive PF-ODE solve reproduces it to the loose tolerance, the
    default sampler (DPM-Solver++(2M) on its default grid, 40 steps) to its discretization error, which falls at
    second order (measured relative error 1.1e-3 / 6.3e-5 on VP and 5.6e-6 / 3.5e-7 on VE at 40 / 160 steps)."""
    model = DiffusionModel(sde, GaussianScore(sde).double(), "score")
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t_star = 0.3
    z = randn_like(x, torch.Generator().manual_seed(1))
    k, a, s = _gain(sde, model, t_star)
    expected = k * (a * x + s * z)
    exact = partial_diffusion(model, x, t_star, sampler="ode_adaptive", generator=torch.Generator().manual_seed(1),
                              rtol=1e-8, atol=1e-8)
    assert_close(exact, expected, loose=True, scale=float(expected.abs().max()))
    err = [float(((partial_diffusion(model, x, t_star, num_steps=n, generator=torch.Generator().manual_seed(1))
                   - expected) / expected).abs().max()) for n in (40, 160)]
    assert err[0] < 2e-3
    assert err[0] / err[1] > 8.0, err  # 16 at second order


def test_anomaly_score_is_the_expected_reconstruction_error() -> None:
    """Monte Carlo over 100 noise draws (8 solver steps: a bias of 0.5% of the
    reconstruction, far below the standard error) against ``E = b^2 |x|^2/d + c^2``, ``b = k a - 1``, ``c = k sigma``,
    within Z_SCORE standard errors (``Var e_j^2 = 2 c^4 + 4 b^2 x_j^2 c^2``)."""
    sde = VPSDE()
    model = DiffusionModel(sde, GaussianScore(sde).double(), "score")
    x = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.5, 0.5], [2.0, 1.5, -2.5]], dtype=torch.float64)
    reps = 100
    got = anomaly_score(model, x, 0.4, num_repeats=reps, num_steps=8, generator=torch.Generator().manual_seed(2))
    k, a, s = _gain(sde, model, 0.4)
    b, c = k * a - 1.0, k * s
    expected = b**2 * x.pow(2).mean(-1) + c**2
    se = torch.sqrt((2 * c**4 + 4 * b**2 * c**2 * x.pow(2)).sum(-1) / 9 / reps)
    assert bool(((got - expected).abs() <= Z_SCORE * se).all()), (got, expected, se)
    # the far point scores highest: a detector ranks it first
    assert metrics.auroc(got[:2], got[2:]) == 1.0


def test_partial_diffusion_rejects_bad_input() -> None:
    sde = VPSDE()
    model = DiffusionModel(sde, GaussianScore(sde).double(), "score")
    x = torch.zeros(4, 3, dtype=torch.float64)
    for bad in (0.0, 1.5, math.nan, True):
        with pytest.raises(ParameterError, match="t_star"):
            partial_diffusion(model, x, bad)
    with pytest.raises(ParameterError, match="DiffusionModel"):
        anomaly_score(object(), x)
