"""EDM preconditioning (Karras et al. 2022, table 1) as a DiffusionModel parameterization."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from fokker.analytic import DiffusedGaussianMixture
from fokker.diffusion import DiffusionModel
from fokker.diffusion.losses import LogNormalTimeSampler, edm_coefficients
from fokker.errors import ParameterError
from fokker.sde import VPSDE
from fokker.targets import GaussianMixture
from fokker.tolerances import Z_SCORE, assert_close


def test_coefficients_give_unit_variance_input_and_target() -> None:
    """For data of variance sigma_d^2: Var(c_in (x0 + s n)) = 1 and Var(F*) = 1 with
    F* = (x0 - c_skip (x0 + s n)) / c_out (Karras et al. 2022, appendix B.6)."""
    sd = 0.5
    s = torch.tensor([0.01, 0.3, 1.0, 10.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, lam = edm_coefficients(s, sd)
    assert_close(c_in**2 * (sd**2 + s**2), torch.ones_like(s))
    # Var(F*) = ((1 - c_skip)^2 sd^2 + c_skip^2 s^2) / c_out^2
    assert_close(((1 - c_skip) ** 2 * sd**2 + c_skip**2 * s**2) / c_out**2, torch.ones_like(s))
    assert_close(lam * c_out**2, torch.ones_like(s))  # the weight makes the error on F uniform


def _mixture():
    loc = torch.tensor([[-1.0, 0.5], [1.5, -0.5]], dtype=torch.float64)
    return GaussianMixture.isotropic(loc, 0.4)


def test_edm_model_with_the_exact_target_has_the_exact_score() -> None:
    """A network that returns F* of the exact denoiser gives the oracle's score back (the
    preconditioning is inverted exactly)."""
    sde = VPSDE()
    oracle = DiffusedGaussianMixture(_mixture(), sde)

    class ExactF(torch.nn.Module):
        dim = 2

        def forward(self, x_in, t):
            a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
            c_skip, c_out, c_in, _ = edm_coefficients(s / a, 0.5)
            x = x_in / c_in * a
            return (oracle.denoise(x, t) - c_skip * x / a) / c_out

    model = DiffusionModel(sde, ExactF(), "edm")
    t = torch.rand(16, dtype=torch.float64) * 0.9 + 0.05
    x = oracle.sample((16,), t, generator=torch.Generator().manual_seed(0))
    assert_close(model.score(x, t), oracle.score(x, t), scale=float(oracle.score(x, t).abs().max()))
    assert_close(model.denoise(x, t), oracle.denoise(x, t))


def test_edm_loss_is_the_weighted_denoiser_error() -> None:
    sde = VPSDE()
    torch.manual_seed(0)

    class Ident(torch.nn.Module):
        dim = 2

        def forward(self, x, t):
            return 0.3 * x

    model = DiffusionModel(sde, Ident(), "edm")
    x0 = torch.randn(64, 2, dtype=torch.float64)
    state = torch.random.get_rng_state()
    loss = model.loss(x0)
    torch.random.set_rng_state(state)  # replay the same draws independently
    t = model.sample_t(64, x0.device, x0.dtype)
    eps = torch.randn_like(x0)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    c_skip, c_out, c_in, lam = edm_coefficients(s / a, 0.5)
    xt = a * x0 + s * eps
    x0_hat = c_skip * xt / a + c_out * 0.3 * (c_in * xt / a)
    expected = (lam[:, 0] * ((x0_hat - x0) ** 2).mean(-1)).mean()
    assert_close(loss, expected)


def test_lognormal_noise_levels() -> None:
    """ln(sigma/alpha) of the drawn times is N(p_mean, p_std^2), apart from the levels clipped at the domain."""
    sde = VPSDE()
    sampler = LogNormalTimeSampler(sde, 1e-3, 1.0, p_mean=-1.2, p_std=1.2)
    t = sampler(20000, generator=torch.Generator().manual_seed(2))
    ls = torch.log(sde.sigma(t) / sde.alpha(t))
    lo, hi = float(ls.min()), float(ls.max())
    inner = ls[(ls > lo + 1e-6) & (ls < hi - 1e-6)].numpy()
    # KS test of the unclipped part against the truncated normal
    a, b = (lo + 1e-6 + 1.2) / 1.2, (hi - 1e-6 + 1.2) / 1.2
    p = stats.kstest(inner, stats.truncnorm(a, b, loc=-1.2, scale=1.2).cdf).pvalue
    assert p > math.erfc(Z_SCORE / math.sqrt(2))
    # the interpolated inverse of the log-SNR agrees with the bisection
    lam = torch.linspace(-5.0, 5.0, 7, dtype=torch.float64)
    assert_close(sampler.time_of(lam), sde.time_at_log_snr(lam), loose=True)


def test_edm_bad_arguments() -> None:
    sde = VPSDE()
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ParameterError, match="weighting='edm'"):
        DiffusionModel(sde, net, "edm", weighting="simple")
    with pytest.raises(ParameterError, match="sigma_data"):
        DiffusionModel(sde, net, "edm", sigma_data=0.0)
