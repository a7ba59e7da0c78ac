"""Critically-damped Langevin: closed forms vs matrix exponential and quadrature, CK, simulation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker import sde
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import Z_SCORE


def _A(cld) -> torch.Tensor:
    b, M, G = cld.beta, cld.M, cld.Gamma
    return torch.tensor([[0.0, b / M], [-b, -b * G / M]], dtype=torch.float64)


@settings(max_examples=10)
@given(t=st.floats(0.01, 1.0))
def test_mean_and_cov_vs_matrix_exp_and_quadrature(t: float) -> None:
    """exp(At) vs torch.linalg.matrix_exp; Q(t) vs Simpson quadrature of e^{Au} D e^{A^T u}."""
    cld = sde.CriticallyDampedLangevin()
    A = _A(cld)
    p11, p12, p21, p22 = cld.mean_coefs(torch.tensor(t, dtype=torch.float64))
    E = torch.linalg.matrix_exp(A * t)
    torch.testing.assert_close(torch.stack([p11, p12, p21, p22]), E.reshape(-1), rtol=1e-10, atol=1e-12)
    u = torch.linspace(0, t, 2001, dtype=torch.float64)
    Eu = torch.linalg.matrix_exp(A[None] * u[:, None, None])
    D = torch.diag(torch.tensor([0.0, 2 * cld.Gamma * cld.beta], dtype=torch.float64))
    integrand = Eu @ D @ Eu.mT
    w = torch.ones(2001, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4, 2
    Q = (w[:, None, None] * integrand).sum(0) * (t / 2000) / 3
    q11, q12, q22 = cld.cov(torch.tensor(t, dtype=torch.float64), v0_random=False)
    torch.testing.assert_close(torch.stack([q11, q12, q22]), torch.stack([Q[0, 0], Q[0, 1], Q[1, 1]]), rtol=1e-8, atol=1e-9)


@settings(max_examples=10)
@given(u=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3))
def test_chapman_kolmogorov_cld(u: list[float]) -> None:
    cld = sde.CriticallyDampedLangevin()
    s_, m_, t_ = (torch.tensor(x, dtype=torch.float64) for x in sorted(u))
    P = lambda dt: torch.stack(cld._phi(dt)).reshape(2, 2)  # noqa: E731
    Q = lambda dt: (lambda q: torch.stack([q[0], q[1], q[1], q[2]]).reshape(2, 2))(cld._Q(dt))  # noqa: E731
    torch.testing.assert_close(P(t_ - m_) @ P(m_ - s_), P(t_ - s_), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(P(t_ - m_) @ Q(m_ - s_) @ P(t_ - m_).T + Q(t_ - m_), Q(t_ - s_), rtol=1e-9, atol=1e-12)


def test_equilibrium_and_marginal_log_prob() -> None:
    cld = sde.CriticallyDampedLangevin(beta=8.0)
    sxx, sxv, svv = cld.cov(torch.tensor(1.0, dtype=torch.float64))
    assert float(sxx) == pytest.approx(1.0, abs=1e-6) and float(svv) == pytest.approx(cld.M, abs=1e-6)
    x0 = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64) * 0.9 + 0.05
    dist = cld.marginal(x0, t)
    z = dist.sample()
    # independent: full 6x6 MultivariateNormal per point
    ref = []
    for i in range(5):
        p = [float(c) for c in cld.mean_coefs(t[i])]
        c = [float(c) for c in cld.cov(t[i])]
        mean = torch.cat([p[0] * x0[i], p[2] * x0[i]])
        I = torch.eye(3, dtype=torch.float64)
        C = torch.cat([torch.cat([c[0] * I, c[1] * I], 1), torch.cat([c[1] * I, c[2] * I], 1)], 0)
        ref.append(torch.distributions.MultivariateNormal(mean, C).log_prob(z[i]))
    torch.testing.assert_close(dist.log_prob(z), torch.stack(ref), rtol=1e-10, atol=1e-10)


def test_cld_marginal_vs_simulation(device: torch.device) -> None:
    """EM simulation of (x, v) from (x0, v0 ~ N(0, gamma M)) vs closed-form mean/covariance."""
    cld = sde.CriticallyDampedLangevin()
    n, d = 10000, 1
    x0 = torch.full((n, d), 1.5, dtype=torch.float64, device=device)
    v0 = torch.randn(n, d, dtype=torch.float64, device=device) * math.sqrt(cld.gamma * cld.M)
    t_end = 0.5
    z = sde.solve(cld, torch.cat([x0, v0], -1), torch.linspace(0, t_end, 401, dtype=torch.float64))
    dist = cld.marginal(x0[:1], t_end)
    m = dist.mean[0]
    sxx, sxv, svv = (float(c) for c in cld.cov(t_end))
    emp_m = z.mean(0)
    se = torch.tensor([math.sqrt(sxx / n), math.sqrt(svv / n)], dtype=torch.float64, device=device)
    assert bool(((emp_m - m).abs() / se < Z_SCORE).all())
    C = torch.cov(z.T)
    ref = torch.tensor([[sxx, sxv], [sxv, svv]], dtype=torch.float64, device=device)
    se_c = torch.sqrt((ref**2 + torch.outer(ref.diagonal(), ref.diagonal())) / n)  # Gaussian SE of covariances
    # EM bias at h = 1.25e-3 is O(beta h) ~ 5e-3 relative; allow it on top of Z SE
    assert bool(((C - ref).abs() < Z_SCORE * se_c + 5e-3 * ref.abs().max()).all())


def test_cld_errors() -> None:
    with pytest.raises(ParameterError, match="Gamma"):
        sde.CriticallyDampedLangevin(M=0.25, Gamma=2.0)
    with pytest.raises(ParameterError, match="beta"):
        sde.CriticallyDampedLangevin(beta=-1.0)
    cld = sde.CriticallyDampedLangevin()
    with pytest.raises(ShapeError, match="2d"):
        cld.drift(torch.randn(3, 5), 0.5)


def test_cld_marginal_given_v0_is_transition_from_zero() -> None:
    """marginal(x0, t, v0) == transition(cat(x0, v0), 0, t); v0 random adds gamma M p12^2 etc."""
    cld = sde.CriticallyDampedLangevin()
    x0, v0 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    a = cld.marginal(x0, 0.3, v0)
    b = cld.transition(torch.cat([x0, v0], -1), 0.0, 0.3)
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.variance, b.variance)
    p11, p12, p21, p22 = cld.mean_coefs(0.3)
    c = cld.marginal(x0, 0.3)
    s0 = cld.gamma * cld.M
    torch.testing.assert_close(c.variance[0, :2], b.variance[0, :2] + s0 * p12**2)
