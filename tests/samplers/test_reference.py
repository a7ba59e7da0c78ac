"""Time grids and the reference processes: closed-form coefficient checks and invariance."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker.errors import ParameterError
from fokker.samplers import DDS, PIS, cosine_grid, make_grid, ou_step_coefficients, uniform_grid
from fokker.tolerances import Z_SCORE, assert_close

from .conftest import make_gaussian


@given(T=st.floats(0.1, 20.0), K=st.integers(1, 300), kind=st.sampled_from(["uniform", "cosine"]))
@settings(max_examples=15)
def test_grids_start_at_zero_end_at_T_increasing(T, K, kind):
    t = make_grid(kind, T, K)
    assert t.shape == (K + 1,) and t.dtype == torch.float64
    assert t[0] == 0.0 and t[-1] == T
    assert bool((torch.diff(t) > 0).all())
    if kind == "cosine" and K > 1:
        assert bool((torch.diff(torch.diff(t)) <= 1e-15).all())  # steps shrink towards the target end


def test_grid_errors():
    with pytest.raises(ParameterError, match="num_steps"):
        uniform_grid(1.0, 0)
    with pytest.raises(ParameterError, match="T"):
        cosine_grid(-1.0, 10)
    with pytest.raises(ParameterError, match="grid"):
        make_grid("linear", 1.0, 10)


@given(beta=st.floats(1e-3, 5.0), T=st.floats(0.1, 10.0), K=st.integers(1, 200), sigma=st.floats(0.1, 5.0))
@settings(max_examples=10)
def test_ou_transition_coefficients_closed_form(beta, T, K, sigma):
    """Exact OU step: sqrt(1-alpha)^2 + alpha = 1 (N(0, sigma^2) invariant); steps compose to exp(-beta T)."""
    times = cosine_grid(T, K)
    alpha, a = ou_step_coefficients(times, beta)
    one = torch.ones_like(a)
    torch.testing.assert_close(a * a + alpha, one, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sigma**2 * a * a + (sigma * alpha.sqrt()) ** 2, sigma**2 * one, rtol=1e-12, atol=0)
    # Chapman-Kolmogorov: the product of the step contractions is the one-shot contraction exp(-beta T)
    torch.testing.assert_close(a.prod(), torch.tensor(math.exp(-beta * T), dtype=torch.float64), rtol=1e-10, atol=1e-300)
    assert bool(((alpha > 0) & (alpha < 1)).all())


def test_dds_tables_use_exact_ou_coefficients():
    s = DDS(make_gaussian(), num_steps=17, T=3.0, sigma=1.7, beta=0.4, grid="uniform")
    tab = s.coefficient_tables()
    h = 3.0 / 17
    torch.testing.assert_close(tab["a"], torch.full((17,), math.exp(-0.4 * h), dtype=torch.float64))
    torch.testing.assert_close(tab["std"], torch.full((17,), 1.7 * math.sqrt(1 - math.exp(-0.8 * h)), dtype=torch.float64))
    torch.testing.assert_close(tab["gain"], 2 * 1.7**2 * (1 - tab["a"]))


def _moments_within_error(y: torch.Tensor, var: float) -> None:
    n = y.shape[0]
    assert float(y.mean(0).abs().max()) <= Z_SCORE * math.sqrt(var / n)
    assert float((y.var(0) - var).abs().max()) <= Z_SCORE * var * math.sqrt(2.0 / (n - 1))


def test_dds_reference_chain_keeps_invariant_law(device):
    """With the zero-initialized control the DDS chain is the OU reference: y_K ~ N(0, sigma^2 I)."""
    s = DDS(make_gaussian(device), num_steps=24, T=4.0, sigma=1.3, beta=0.7, width=8).to(device, torch.float64)
    with torch.no_grad():
        yK, log_w, path = s.rollout(8000, return_path=True)
    _moments_within_error(yK, 1.3**2)
    _moments_within_error(path[7], 1.3**2)
    # zero control: all path terms cancel, log w = log gamma(y_K) - log N(y_K; 0, sigma^2)
    ref = torch.distributions.Normal(torch.zeros((), device=device, dtype=torch.float64), 1.3)
    expected = s.target.log_prob(yK) - ref.log_prob(yK).sum(-1)
    assert_close(log_w, expected, loose=True)


def test_pis_reference_chain_and_bridge(device):
    """Zero control: PIS is Brownian motion from 0, y_k ~ N(0, sigma^2 t_k); the bridge kernels
    sampled backwards from y_K ~ N(0, sigma^2 T) reproduce the same marginals."""
    s = PIS(make_gaussian(device), num_steps=20, T=5.0, sigma=math.sqrt(0.2), width=8).to(device, torch.float64)
    t = s.times
    with torch.no_grad():
        _, _, path = s.rollout(8000, return_path=True)
    for k in (5, 20):
        _moments_within_error(path[k], 0.2 * float(t[k]))
    tab = s._table(path)
    y = math.sqrt(0.2 * 5.0) * torch.randn(8000, 2, device=device, dtype=torch.float64)
    for k in reversed(range(20)):
        y = s.target_kernel_sample(k, y, tab)
        if k in (12, 3):
            _moments_within_error(y, 0.2 * float(t[k]))
    assert float(y.abs().max()) == 0.0  # the bridge ends at the origin
