"""DDPM chain: posterior by Bayes' rule (quadrature), ELBO bound with the exact eps, SDE limit."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker import sde
from fokker.analytic import DiffusedGaussianMixture
from fokker.errors import DomainError, ParameterError, ShapeError
from fokker.targets import GaussianMixture
from fokker.tolerances import Z_SCORE, tolerance


@settings(max_examples=15)
@given(k=st.integers(2, 50), xk=st.floats(-3, 3), x0=st.floats(-3, 3))
def test_q_posterior_is_bayes_rule(k: int, xk: float, x0: float) -> None:
    """q(x_{k-1}|x_k,x_0) ∝ q(x_k|x_{k-1}) q(x_{k-1}|x_0), normalized by quadrature on a fine grid."""
    ddpm = sde.DDPM.linear(N=50, beta_start=1e-3, beta_end=0.2)
    b = float(ddpm.betas[k - 1])
    abp = float(ddpm.alphas_bar[k - 2])
    grid = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    log_w = (
        torch.distributions.Normal(math.sqrt(1 - b) * grid, math.sqrt(b)).log_prob(torch.tensor(xk, dtype=torch.float64))
        + torch.distributions.Normal(math.sqrt(abp) * x0, math.sqrt(1 - abp)).log_prob(grid)
    )
    w = torch.softmax(log_w, 0)
    m_num = float((w * grid).sum())
    v_num = float((w * (grid - m_num) ** 2).sum())
    mean, var = ddpm.q_posterior(torch.tensor([[xk]], dtype=torch.float64), torch.tensor([[x0]], dtype=torch.float64), k)
    # the quadrature (200001 points on [-12, 12]) is an iterative-size computation: loose tolerance
    tol = tolerance(torch.float64, loose=True)
    assert math.isclose(float(mean), m_num, rel_tol=tol.rtol, abs_tol=tol.atol)
    assert math.isclose(float(var), v_num, rel_tol=tol.rtol)


def test_alphas_bar_by_composing_transitions() -> None:
    """q(x_k|x_0) from composing the one-step kernels equals N(sqrt(ab_k) x0, 1 - ab_k)."""
    ddpm = sde.DDPM.cosine(N=100)
    m, v = 1.0, 0.0
    tol = tolerance(torch.float64)
    for k in range(100):
        b = float(ddpm.betas[k])
        m, v = m * math.sqrt(1 - b), (1 - b) * v + b
        assert math.isclose(m, math.sqrt(float(ddpm.alphas_bar[k])), rel_tol=tol.rtol)
        assert math.isclose(v, 1 - float(ddpm.alphas_bar[k]), rel_tol=tol.rtol, abs_tol=tol.atol * 1e-5)


def test_p_mean_with_true_noise_is_posterior_mean() -> None:
    """mu(x_k, k, eps) with the true eps equals tilde mu(x_k, x0) (seed 003 eq. 9 vs eq. 8)."""
    ddpm = sde.DDPM.linear(N=100)
    x0 = torch.randn(16, 3, dtype=torch.float64)
    k = torch.randint(1, 101, (16,))
    eps = torch.randn_like(x0)
    xk = ddpm.q_sample(x0, k, eps)
    torch.testing.assert_close(ddpm.p_mean(xk, k, eps), ddpm.q_posterior(xk, x0, k)[0], rtol=1e-9, atol=1e-9)


def test_elbo_bounds_exact_log_likelihood() -> None:
    """E[NELBO] >= E[-log p(x0)] with the exact eps-predictor of GMM data, and the gap is small."""
    loc = torch.tensor([[-1.5, 0.0], [1.5, 0.5]], dtype=torch.float64)
    gm = GaussianMixture.isotropic(loc, 0.5, torch.tensor([0.4, 0.6], dtype=torch.float64))
    ddpm = sde.DDPM.from_sde(sde.VPSDE(), 40, exact=True)
    oracle = DiffusedGaussianMixture(gm, ddpm.to_sde())
    eps_model = lambda x, k: oracle.eps(x, ddpm.time(k).to(x))  # noqa: E731
    x0 = gm.sample((3000,))
    terms = ddpm.elbo_terms(x0, eps_model)
    assert terms.L_mid.shape == (3000, 39)
    gap = terms.total() - (-gm.log_prob(x0))
    se = float(gap.std()) / math.sqrt(gap.numel())
    assert float(gap.mean()) > -Z_SCORE * se
    assert float(gap.mean()) < 0.5  # a wrong predictor (e.g. eps = 0) gives a gap of many nats
    bad = ddpm.elbo_terms(x0[:500], lambda x, k: torch.zeros_like(x)).total() + gm.log_prob(x0[:500])
    assert float(bad.mean()) > float(gap.mean()) + 1.0


def test_from_sde_converges_and_to_sde_exact() -> None:
    vp = sde.VPSDE()
    errs = []
    for N in (10, 100, 1000):
        ddpm = sde.DDPM.from_sde(vp, N)
        t = torch.arange(1, N + 1, dtype=torch.float64) / N
        errs.append(float((ddpm.alphas_bar - vp.alpha(t) ** 2).abs().max()))
    assert errs[0] > 5 * errs[1] > 25 * errs[2]
    ho = sde.DDPM.from_sde(vp, 1000)
    torch.testing.assert_close(ho.betas, sde.DDPM.linear(1000).betas)
    ddpm = sde.DDPM.cosine(N=200)
    back = ddpm.to_sde()
    t = torch.arange(0, 201, dtype=torch.float64) / 200
    ab = torch.cat([torch.ones(1, dtype=torch.float64), ddpm.alphas_bar])
    torch.testing.assert_close(back.alpha(t) ** 2, ab, rtol=1e-10, atol=1e-12)
    exact = sde.DDPM.from_sde(vp, 50, exact=True)
    torch.testing.assert_close(exact.alphas_bar, vp.alpha(torch.arange(1, 51, dtype=torch.float64) / 50) ** 2)


def test_cosine_schedule_formula() -> None:
    N, s = 100, 0.008
    ddpm = sde.DDPM.cosine(N)
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for k in (1, 50, 99):
        assert math.isclose(float(ddpm.alphas_bar[k - 1]), f(k / N) / f(0), rel_tol=tolerance(torch.float64).rtol)
    assert float(ddpm.betas[-1]) == pytest.approx(0.999)


def test_ddpm_errors() -> None:
    ddpm = sde.DDPM.linear(10)
    x = torch.randn(4, 2)
    with pytest.raises(DomainError, match="k must"):
        ddpm.q_sample(x, 11)
    with pytest.raises(DomainError, match="k must"):
        ddpm.q_sample(x, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ShapeError, match="k must"):
        ddpm.q_sample(x, torch.tensor([1, 2]))
    with pytest.raises(ParameterError, match="betas"):
        sde.DDPM(torch.tensor([0.1, 1.5]))
    with pytest.raises(ParameterError, match="VPSDE"):
        sde.DDPM.from_sde(sde.VESDE(), 10)
    with pytest.raises(ShapeError, match="same shape"):
        ddpm.q_posterior(x, x[:2], 3)
