"""LinearSDE closed forms vs sympy (Prop. 1), Chapman-Kolmogorov, simulation, broadcasting, errors."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fokker
from fokker import sde, symbolic
from fokker.checks import check_marginal
from fokker.errors import DomainError, ParameterError, ShapeError
from fokker.tolerances import assert_close, tolerance

from sde_factories import LINEAR_SDES

SYMBOLIC = [k for k in LINEAR_SDES if k != "schedule"]
_LAMBDA: dict[str, tuple] = {}


def _sympy_prop1(name: str, obj):
    if name not in _LAMBDA:
        a, g2 = symbolic.sde_coefficients(obj)
        _LAMBDA[name] = symbolic.lambdify_prop1(a, g2)
    return _LAMBDA[name]


def _t_hi(obj) -> float:
    return getattr(obj, "t_star", obj.T)


@pytest.mark.parametrize("name", SYMBOLIC)
@settings(max_examples=10)
@given(u=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2))
def test_transition_matches_sympy_prop1(name: str, u: list[float]) -> None:
    """alpha(t)/alpha(s) and sigma^2_{t|s} equal sympy's integrals of seed 001 eq. 30."""
    obj = LINEAR_SDES[name]()
    hi = _t_hi(obj)
    s_, t_ = sorted(x * hi for x in u)
    mean_fn, var_fn = _sympy_prop1(name, obj)
    ratio, std = obj.transition_coefs(s_, t_)
    ref_m, ref_v = float(mean_fn(s_, t_)), float(var_fn(s_, t_))
    tol = tolerance(torch.float64, loose=True)
    assert math.isclose(float(ratio), ref_m, rel_tol=tol.rtol, abs_tol=tol.atol)
    assert math.isclose(float(std) ** 2, ref_v, rel_tol=tol.rtol, abs_tol=tol.atol * (1 + abs(ref_v)))
    # marginal from 0: alpha(t) = mean(0, t), sigma(t)^2 = var(0, t) + mean(0,t)^2 sigma(0)^2
    a0 = float(obj.alpha(t_))
    assert math.isclose(a0 / float(obj.alpha(0.0)), float(mean_fn(0.0, t_)), rel_tol=tol.rtol)
    s2 = float(var_fn(0.0, t_)) + float(mean_fn(0.0, t_)) ** 2 * float(obj.sigma(0.0)) ** 2
    assert math.isclose(float(obj.sigma(t_)) ** 2, s2, rel_tol=tol.rtol, abs_tol=tol.atol)


@pytest.mark.parametrize("name", SYMBOLIC)
def test_drift_diffusion_match_symbolic_coefficients(name: str) -> None:
    obj = LINEAR_SDES[name]()
    a, g2 = symbolic.sde_coefficients(obj)
    fa, fg = sp.lambdify(symbolic.t, a), sp.lambdify(symbolic.t, g2)
    tol = tolerance(torch.float64)
    for tt in torch.linspace(0.0, _t_hi(obj), 7, dtype=torch.float64):
        assert math.isclose(float(obj.f(tt)), float(fa(float(tt))), rel_tol=tol.rtol, abs_tol=tol.atol)
        assert math.isclose(float(obj.g2(tt)), float(fg(float(tt))), rel_tol=tol.rtol, abs_tol=tol.atol)


def test_from_schedule_coefficients_match_eq36() -> None:
    """f = alpha'/alpha x, g^2 = -sigma^2 rho' (autograd) vs sympy's derivative."""
    obj = LINEAR_SDES["schedule"]()
    c = sp.pi / 2 * sp.Rational(98, 100)
    a, g2 = symbolic.schedule_coefficients(sp.cos(c * symbolic.t), sp.sin(c * symbolic.t))
    tol = tolerance(torch.float64)
    for tt in (0.05, 0.3, 0.7, 0.99):
        tt = torch.tensor(tt, dtype=torch.float64)
        assert math.isclose(float(obj.f(tt)), float(a.subs(symbolic.t, float(tt))), rel_tol=tol.rtol)
        assert math.isclose(float(obj.g2(tt)), float(g2.subs(symbolic.t, float(tt))), rel_tol=tol.rtol)
    # and a VP schedule given through from_schedule reproduces the VP SDE
    vp = sde.VPSDE()
    sched = sde.LinearSDE.from_schedule(lambda t: vp._log_alpha(t).exp(), lambda t: vp._sigma2(t).sqrt())
    tt = torch.linspace(0.01, 1.0, 9, dtype=torch.float64)
    assert_close(sched.f(tt), vp.f(tt))
    torch.testing.assert_close(sched.g2(tt), vp.g2(tt), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list(LINEAR_SDES))
@settings(max_examples=15)
@given(u=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3))
def test_chapman_kolmogorov(name: str, u: list[float]) -> None:
    """Composing s->u and u->t gives s->t (mean coefficient and variance)."""
    obj = LINEAR_SDES[name]()
    s_, u_, t_ = sorted(x * obj.T for x in u)
    r_su, sd_su = obj.transition_coefs(s_, u_)
    r_ut, sd_ut = obj.transition_coefs(u_, t_)
    r_st, sd_st = obj.transition_coefs(s_, t_)
    tol = tolerance(torch.float64)
    torch.testing.assert_close(r_su * r_ut, r_st, rtol=tol.rtol, atol=tol.atol)
    torch.testing.assert_close(r_ut**2 * sd_su**2 + sd_ut**2, sd_st**2, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", list(LINEAR_SDES))
def test_marginal_vs_euler_maruyama(name: str, device: torch.device) -> None:
    """Simulated mean/variance agree with the closed form (4 SE after the exact EM bias)."""
    obj = LINEAR_SDES[name]()
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64, device=device)
    t_end = 0.8 * _t_hi(obj)
    gen = torch.Generator(device=device).manual_seed(1)
    res = check_marginal(obj, x0, t_end, num_samples=8000, num_steps=200, t0=0.05 * obj.T, generator=gen)
    assert res.passed, res


def test_marginal_distribution_and_sample(dtype: torch.dtype, device: torch.device) -> None:
    vp = sde.VPSDE()
    x0 = torch.randn(5, 3, dtype=dtype, device=device)
    t = torch.rand(5, dtype=dtype, device=device)
    dist = vp.marginal(x0, t)
    assert dist.batch_shape == (5,) and dist.event_shape == (3,)
    al, sg = vp.alpha(t), vp.sigma(t)
    assert al.dtype == dtype
    xt, eps = vp.sample_marginal(x0, t)
    tol = tolerance(dtype)
    torch.testing.assert_close(xt, al[:, None] * x0 + sg[:, None] * eps, rtol=tol.rtol, atol=tol.atol)
    ref = torch.distributions.Normal(al[:, None] * x0, sg[:, None]).log_prob(xt).sum(-1)
    torch.testing.assert_close(dist.log_prob(xt), ref, rtol=tol.rtol * 10, atol=tol.atol * 10)
    p = vp.prior((3,), dtype=dtype, device=device)
    assert p.sample((4,)).shape == (4, 3)
    assert math.isclose(float(p.stddev[0]), float(vp.sigma(1.0)), rel_tol=tolerance(torch.float32).rtol)  # sigma(1.0): default dtype


@pytest.mark.parametrize("name", list(LINEAR_SDES))
def test_log_snr_non_increasing_and_identities(name: str) -> None:
    obj = LINEAR_SDES[name]()
    tt = torch.linspace(0.01 * obj.T, obj.T, 50, dtype=torch.float64)
    rho = obj.log_snr(tt)
    assert bool((rho[1:] <= rho[:-1] + 1e-12).all())
    torch.testing.assert_close(rho, 2 * torch.log(obj.alpha(tt)) - 2 * torch.log(obj.sigma(tt)))


def test_time_broadcasting() -> None:
    """t as float, 0-d tensor and (B,) tensor agree; (B,) aligns with the leading batch dim."""
    vp = sde.VPSDE()
    x = torch.randn(4, 3, dtype=torch.float64)
    a = vp.drift(x, 0.3)
    b = vp.drift(x, torch.tensor(0.3, dtype=torch.float64))
    c = vp.drift(x, torch.full((4,), 0.3, dtype=torch.float64))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    t = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    m = vp.marginal(x, t).mean
    torch.testing.assert_close(m[2], vp.marginal(x[2], 0.3).mean)
    x3 = torch.randn(4, 2, 3, dtype=torch.float64)  # t (4,) aligns with dim 0, broadcast over dim 1
    torch.testing.assert_close(vp.marginal(x3, t).mean[1, 0], vp.alpha(t[1]) * x3[1, 0])
    assert vp.diffusion(x, t).shape == (4, 1)
    with pytest.raises(ShapeError, match="t must"):
        vp.marginal(x, torch.rand(3, dtype=torch.float64))


def test_torchsde_protocol_shapes() -> None:
    vp = sde.VPSDE()
    y = torch.randn(6, 2)
    assert vp.f(torch.tensor(0.5), y).shape == y.shape
    assert vp.g(torch.tensor(0.5), y).shape == y.shape
    assert vp.noise_type == "diagonal" and vp.sde_type == "ito"


def test_errors() -> None:
    vp = sde.VPSDE(t_min=1e-3)
    x = torch.randn(3, 2)
    with pytest.raises(DomainError, match="t must lie"):
        vp.marginal(x, 1.5)
    with pytest.raises(DomainError, match="t must lie"):
        vp.marginal(x, 0.0)
    with pytest.raises(DomainError, match="t must lie"):
        vp.marginal(x, torch.tensor([0.5, 0.5, 2.0]))
    with pytest.raises(DomainError, match="s <= t"):
        vp.transition(x, 0.7, 0.2)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ParameterError, match="beta_min"):
            sde.VPSDE(beta_min=bad)
    with pytest.raises(ParameterError, match="sigma_min"):
        sde.VESDE(sigma_min=-0.1)
    with pytest.raises(ParameterError, match="sigma_max"):
        sde.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ParameterError, match="theta"):
        sde.OrnsteinUhlenbeck(theta=0.0)
    with pytest.raises(ParameterError, match="t_min"):
        sde.VPSDE(t_min=2.0)
    fixed = sde.VPSDE(event_shape=(3,))
    with pytest.raises(ShapeError, match=r"x0 must have shape \(\.\.\., 3\)"):
        fixed.marginal(torch.randn(4, 2), 0.5)
    with pytest.raises(ShapeError, match="event_shape"):
        sde.VPSDE().prior()
    with pytest.raises(ParameterError, match="non-increasing"):
        sde.LinearSDE.from_schedule(lambda t: torch.ones_like(t), lambda t: 0.5 + 0.4 * torch.sin(6 * t))
    with pytest.raises(ParameterError, match="alpha_fn must be positive"):
        sde.LinearSDE.from_schedule(lambda t: 1.0 - 2.0 * t, lambda t: t)
    with fokker.argument_checks(True):
        with pytest.raises(fokker.errors.NonFiniteError, match="x0"):
            vp.marginal(torch.tensor([[float("nan"), 0.0]]), 0.5)
