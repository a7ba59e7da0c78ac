"""Parameterization conversions: exact round trips (float64) and agreement with Tweedie on the oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker.sde import SPACINGS, time_grid
from fokker.diffusion.parameterization import PARAMETERIZATIONS, convert, expand_like
from fokker.errors import DomainError, ParameterError
from fokker.tolerances import assert_close


@settings(max_examples=15)
@given(
    src=st.sampled_from(PARAMETERIZATIONS),
    dst=st.sampled_from(PARAMETERIZATIONS),
    alpha=st.floats(0.05, 1.0),
    sigma=st.floats(0.05, 5.0),
)
def test_round_trip_exact(src, dst, alpha, sigma):
    x = torch.randn(5, 3, dtype=torch.float64)
    out = torch.randn(5, 3, dtype=torch.float64)
    a, s = torch.tensor(alpha, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64)
    back = convert(x, convert(x, out, src, dst, a, s), dst, src, a, s)
    assert_close(back, out)


def test_conversions_agree_with_tweedie_on_oracle(gmm3, vpsde, device):
    """Posterior mean E[x0|x_t] and E[eps|x_t] computed from the mixture's responsibilities (independent of
    the score) equal the Tweedie conversions of the exact score; v = alpha eps - sigma x0."""
    t = torch.rand(64, dtype=torch.float64) * 0.9 + 0.05
    x = gmm3.sample(64, 0.5)
    c = vpsde.coefficients(t)  # the oracle's test-local VP has the same betas
    a, s = c.alpha[:, None], c.sigma[:, None]
    score = gmm3.score(x, t)
    # independent posterior mean: component k has x0|x_t,k ~ N(mu_k + a s_k^2/(a^2 s_k^2 + sigma^2)(x - a mu_k), .)
    var = a**2 * gmm3.s[None] ** 2 + s**2  # (B, K)
    diff = x[:, None, :] - a[:, :, None] * gmm3.mu[None]
    logr = -0.5 * (diff**2).sum(-1) / var - torch.log(var) + torch.log(gmm3.w)
    r = torch.softmax(logr, -1)
    post = gmm3.mu[None] + (a[:, :, None] * gmm3.s[None, :, None] ** 2 / var[..., None]) * diff
    x0_exact = (r[..., None] * post).sum(1)
    dev = lambda z: z.to(device)  # noqa: E731
    x0 = convert(dev(x), dev(score), "score", "x0", dev(a), dev(s))
    assert_close(x0, dev(x0_exact))
    eps = convert(dev(x), dev(score), "score", "eps", dev(a), dev(s))
    assert_close(eps, dev((x - a * x0_exact) / s))
    v = convert(dev(x), dev(score), "score", "v", dev(a), dev(s))
    assert_close(v, dev(a * (x - a * x0_exact) / s - s * x0_exact))


def test_expand_like_and_bad_name():
    x = torch.zeros(4, 2, 3, 3)
    assert expand_like(torch.ones(4), x).shape == (4, 1, 1, 1)
    with pytest.raises(ParameterError, match="parameterization"):
        convert(x, x, "noise", "x0", torch.ones(()), torch.ones(()))


def test_coefficients_match_linear_sde_hooks(vpsde):
    """g^2 = d sigma^2/dt - 2 f sigma^2 and f = d log alpha/dt: autograd on the test-local VP's alpha/sigma
    (LinearSDE.from_schedule) vs VPSDE's own closed forms."""
    from _diffusion_oracle import VP

    from fokker.sde import LinearSDE

    vp = VP()
    generic = LinearSDE.from_schedule(vp.alpha, vp.sigma, T=vp.T, t_min=vp.t_min)
    t = torch.linspace(0.01, 1.0, 7, dtype=torch.float64)
    a, b = generic.coefficients(t), vpsde.coefficients(t)
    for u, v in zip(a, b):
        assert_close(u, v)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_time_grids(vpsde, spacing):
    g = time_grid(12, spacing=spacing, sde=vpsde)
    assert g.dtype == torch.float64 and g.shape == (13,)
    assert g[0] == 1.0 and g[-1] == pytest.approx(1e-3)
    assert bool((g[1:] < g[:-1]).all())
    lam = vpsde.log_snr(g)
    if spacing == "log_snr":
        assert_close(lam.diff(), lam.diff().mean().expand(12))
    if spacing == "karras":
        st_ = torch.exp(-0.5 * lam)  # sigma / alpha
        r = st_ ** (1 / 7)
        assert_close(r.diff(), r.diff().mean().expand(12))
    if spacing == "quadratic":
        assert_close((g - g[-1]).sqrt().diff(), (g - g[-1]).sqrt().diff().mean().expand(12))


def test_log_snr_inverse(vpsde):
    t = torch.linspace(0.002, 0.99, 9, dtype=torch.float64)
    assert_close(vpsde.time_at_log_snr(vpsde.log_snr(t)), t)


def test_grid_bad_arguments(vpsde):
    with pytest.raises(ParameterError, match="steps"):
        time_grid(0, sde=vpsde)
    with pytest.raises(ParameterError, match="spacing"):
        time_grid(5, spacing="cubic", sde=vpsde)
    with pytest.raises(DomainError, match="must lie in"):
        time_grid(5, vpsde.T, 2.0, sde=vpsde)
