"""Score-matching objectives vs closed forms on a Gaussian EBM (seed 002 eqs. 21-23)."""

from __future__ import annotations

import math

import pytest
import torch
from _ebm_gaussian import exact_sm_per_point, expected_exact_sm, problem, sample_gaussian
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker.ebm import (
    GaussianEnergy,
    denoising,
    denoising_constant,
    denoising_score_matching,
    exact,
    exact_score_matching,
    sliced,
    sliced_score_matching,
)
from fokker.ebm.score_matching import projections
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import Z_SCORE, assert_close, tolerance


def _model(mu, P):
    return GaussianEnergy(mu.shape[0], loc=mu, precision=P)


@settings(max_examples=8)
@given(dim=st.integers(1, 4), n=st.integers(1, 7), seed=st.integers(0, 100))
def test_exact_per_point_matches_closed_form(dim, n, seed):
    mu, P, m, S = problem(dim, seed=seed)
    model = _model(mu, P)
    x = sample_gaussian(m, S, n)
    got = exact_score_matching(model.log_prob_unchecked, x)
    assert got.shape == (n,)
    assert_close(got, exact_sm_per_point(x, mu, P), loose=True)


def test_exact_per_point_float32_and_device(device, dtype):
    mu, P, m, S = problem(3, dtype=dtype, device=device)
    model = _model(mu, P)
    x = sample_gaussian(m, S, 11)
    got = exact_score_matching(model.log_prob_unchecked, x)
    assert got.dtype == dtype and got.device.type == device.type
    assert_close(got, exact_sm_per_point(x, mu, P), loose=True)


def test_exact_batch_shape_and_neural_energy_hessian_trace():
    """Batch dims are kept; the trace equals the trace of the autograd Hessian of a nonlinear energy."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    log_p = lambda x: -net(x).squeeze(-1)  # noqa: E731
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    got = exact_score_matching(log_p, x)
    assert got.shape == (2, 4)
    for idx in [(0, 0), (1, 3)]:
        xi = x[idx]
        H = torch.autograd.functional.hessian(lambda z: log_p(z), xi)
        s = torch.autograd.functional.jacobian(lambda z: log_p(z), xi)
        assert_close(got[idx], 0.5 * s.pow(2).sum() + torch.trace(H))


@settings(max_examples=6)
@given(dim=st.integers(1, 4), m_proj=st.integers(1, 3), vr=st.booleans())
def test_sliced_per_point_matches_closed_form(dim, m_proj, vr):
    mu, P, m, S = problem(dim, seed=dim)
    model = _model(mu, P)
    x = sample_gaussian(m, S, 5)
    v = projections(x, m_proj, "gaussian")
    got = sliced_score_matching(model.log_prob_unchecked, x, v, variance_reduction=vr)
    s = -(x - mu) @ P
    vPv = torch.einsum("mni,ij,mnj->mn", v, P, v)
    first = 0.5 * s.pow(2).sum(-1) if vr else (0.5 * (v * s).sum(-1).pow(2)).mean(0)
    assert_close(got, first - vPv.mean(0), loose=True)


def test_denoising_per_point_matches_closed_form():
    mu, P, m, S = problem(3)
    model = _model(mu, P)
    x = sample_gaussian(m, S, 9)
    eps = torch.randn_like(x)
    sigma = 0.3
    got = denoising_score_matching(model.log_prob_unchecked, x, sigma, eps)
    s = -(x + sigma * eps - mu) @ P
    assert_close(got, 0.5 * (s + eps / sigma).pow(2).sum(-1), loose=True)


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_exact_and_sliced_agree_in_expectation(distribution):
    """E[sliced] = E[exact] = closed form; the paired difference has mean 0 within Z_SCORE standard errors."""
    mu, P, m, S = problem(3, seed=4)
    model = _model(mu, P)
    x = sample_gaussian(m, S, 20_000)
    ex = exact_score_matching(model.log_prob_unchecked, x).detach()
    sl = sliced_score_matching(model.log_prob_unchecked, x, projections(x, 1, distribution)).detach()
    J = float(expected_exact_sm(mu, P, m, S))
    for vals in (ex, sl):
        mean, se = _mean_se(vals)
        assert abs(mean - J) <= Z_SCORE * se, (mean, J, se)
    mean, se = _mean_se(sl - ex)
    assert abs(mean) <= Z_SCORE * se


def _batched_grads(loss_fn, model, x, n_batches):
    grads = []
    for xb in x.chunk(n_batches):
        model.zero_grad()
        loss_fn(xb).backward()
        grads.append(torch.cat([p.grad.flatten().clone() for p in model.parameters()]))
    g = torch.stack(grads)
    return g.mean(0), g.std(0) / math.sqrt(n_batches)


@pytest.mark.parametrize("objective", ["sliced", "denoising"])
def test_parameter_gradients_agree_with_exact_sm(objective):
    """Gradients w.r.t. (mu, L) of the sliced and (small-sigma) denoising objectives match the
    gradient of the closed-form exact SM expectation (autograd of expected_exact_sm)."""
    mu0, P0, m, S = problem(2, seed=7)
    model = _model(mu0, P0)
    sigma = 0.05
    x = sample_gaussian(m, S, 40_000 if objective == "sliced" else 160_000)
    J = expected_exact_sm(model.loc, model.precision, m, S)
    ref = torch.cat([g.flatten() for g in torch.autograd.grad(J, list(model.parameters()))])
    if objective == "sliced":
        obj = sliced(num_projections=1)
        bias = torch.zeros_like(ref)
    else:
        obj = denoising(sigma)
        # E[DSM] - d/(2 sigma^2) = E_{N(m, S + sigma^2 I)}[exact SM]: the closed form gives the O(sigma^2) shift
        Js = expected_exact_sm(model.loc, model.precision, m, S + sigma**2 * torch.eye(2, dtype=torch.float64))
        refs = torch.cat([g.flatten() for g in torch.autograd.grad(Js, list(model.parameters()))])
        bias = refs - ref
        assert float(bias.abs().max()) < 10 * sigma**2  # O(sigma^2): the sigma -> 0 limit is exact SM
    mean, se = _batched_grads(lambda xb: obj(model, xb), model, x, 40)
    assert torch.all((mean - ref - bias).abs() <= Z_SCORE * se + tolerance(torch.float64).atol), (mean, ref, se)


@pytest.mark.parametrize("sigma", [0.5, 0.2, 0.05])
def test_denoising_equals_exact_on_noised_data_plus_constant(sigma):
    """E[DSM] = E_{q_sigma}[exact SM] + d/(2 sigma^2) exactly (Stein), and E_{q_sigma}[exact] -> E_p[exact]."""
    dim = 2
    mu, P, m, S = problem(dim, seed=3)
    model = _model(mu, P)
    x = sample_gaussian(m, S, 100_000)
    dsm = denoising_score_matching(model.log_prob_unchecked, x, sigma).detach()
    mean, se = _mean_se(dsm - denoising_constant(dim, sigma))
    J_sigma = float(expected_exact_sm(mu, P, m, S + sigma**2 * torch.eye(dim, dtype=torch.float64)))
    assert abs(mean - J_sigma) <= Z_SCORE * se
    J = float(expected_exact_sm(mu, P, m, S))
    # the shift is sigma^2/2 tr(P^2): vanishes as sigma -> 0
    assert_close(torch.tensor(J_sigma - J, dtype=torch.float64), 0.5 * sigma**2 * torch.trace(P @ P), scale=abs(J))


def test_objective_modules_are_means_of_per_point_values():
    mu, P, m, S = problem(2)
    model = _model(mu, P)
    x = sample_gaussian(m, S, 16)
    assert_close(exact()(model, x), exact_sm_per_point(x, mu, P).mean(), loose=True)
    loss_c = denoising(0.3)(model, x)
    loss_raw = denoising(0.3, subtract_constant=False)
    torch.manual_seed(1)
    a = denoising(0.3)(model, x)
    torch.manual_seed(1)
    b = loss_raw(model, x)
    assert_close(b - a, torch.tensor(denoising_constant(2, 0.3), dtype=torch.float64))
    assert loss_c.shape == ()


def test_bad_inputs():
    model = GaussianEnergy(2, dtype=torch.float64)
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ShapeError, match="v must have shape"):
        sliced_score_matching(model.log_prob_unchecked, x, torch.zeros(1, 4, 3, dtype=torch.float64))
    with pytest.raises(ParameterError, match="sigma"):
        denoising_score_matching(model.log_prob_unchecked, x, 0.0)
    with pytest.raises(ShapeError, match="eps"):
        denoising_score_matching(model.log_prob_unchecked, x, 0.1, torch.zeros(3, 2))
    with pytest.raises(ParameterError, match="distribution"):
        sliced(distribution="uniform")
    with pytest.raises(ParameterError, match="num_projections"):
        sliced(num_projections=0)
    with pytest.raises(ParameterError, match="sigma"):
        denoising(-1.0)
    with pytest.raises(ShapeError, match="log_prob must map"):
        exact_score_matching(lambda z: z, x)
