"""Time grids and the reference processes: closed-form coefficient checks and invariance."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker.samplers import DDS, PIS
from fokker.tolerances import Z_SCORE, assert_close

from .conftest import make_gaussian


@given(beta=st.floats(1e-3, 5.0), T=st.floats(0.1, 10.0), K=st.integers(1, 200), sigma=st.floats(0.1, 5.0))
@settings(max_examples=10)
def test_dds_reference_is_exact_ou(beta, T, K, sigma):
    """DDS's reference steps are exact OU transitions: each leaves N(0, sigma^2) invariant
    (ratio^2 sigma^2 + std^2 = sigma^2) and they compose to the one-shot contraction exp(-beta T)."""
    s = DDS(make_gaussian(), num_steps=K, T=T, sigma=sigma, beta=beta, width=4)
    tab = s.coefficient_tables()
    a, std = tab["a"], tab["std"]
    assert_close(sigma**2 * a * a + std * std, torch.full_like(a, sigma**2), scale=sigma**2)
    assert_close(a.prod(), torch.tensor(math.exp(-beta * T), dtype=torch.float64))
    assert bool(((std > 0) & (std < sigma)).all())
    assert_close(tab["gain"], 2 * sigma**2 * (1 - a), scale=sigma**2)


def test_dds_tables_use_exact_ou_coefficients():
    s = DDS(make_gaussian(), num_steps=17, T=3.0, sigma=1.7, beta=0.4, spacing="uniform")
    tab = s.coefficient_tables()
    h = 3.0 / 17
    assert_close(tab["a"], torch.full((17,), math.exp(-0.4 * h), dtype=torch.float64))
    assert_close(tab["std"], torch.full((17,), 1.7 * math.sqrt(1 - math.exp(-0.8 * h)), dtype=torch.float64))
    assert_close(tab["gain"], 2 * 1.7**2 * (1 - tab["a"]))


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
    tab = s.tables_like(path)
    gen = torch.Generator(device=device).manual_seed(4)
    y = math.sqrt(0.2 * 5.0) * torch.randn(8000, 2, device=device, dtype=torch.float64, generator=gen)
    for k in reversed(range(20)):
        y = s.target_kernel_sample(k, y, tab, gen)
        if k in (12, 3):
            _moments_within_error(y, 0.2 * float(t[k]))
    assert float(y.abs().max()) == 0.0  # the bridge ends at the origin
