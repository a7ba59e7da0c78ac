"""Exact RBM partition function (enumeration over the smaller layer) vs brute force over both layers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker.analytic.rbm import enumerate_binary, rbm_free_energy, rbm_log_likelihood, rbm_log_Z
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import assert_close


def _close(actual: float, expected: float) -> None:
    """Python floats equal to float64 rounding (fokker.tolerances)."""
    assert_close(torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64))


def _params(nv, nh, scale=1.0, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(nv, nh, generator=g, dtype=torch.float64)
    b = torch.randn(nv, generator=g, dtype=torch.float64)
    c = torch.randn(nh, generator=g, dtype=torch.float64)
    return W.to(device, dtype), b.to(device, dtype), c.to(device, dtype)


def _brute_force_log_Z(W, b, c) -> float:
    """sum over all (v, h) of exp(v^T W h + b^T v + c^T h), in Python floats with math.fsum."""
    W, b, c = W.double().tolist(), b.double().tolist(), c.double().tolist()
    nv, nh = len(b), len(c)
    neg_energies = []
    for v in itertools.product((0, 1), repeat=nv):
        for h in itertools.product((0, 1), repeat=nh):
            e = sum(v[i] * W[i][j] * h[j] for i in range(nv) for j in range(nh))
            e += sum(bi * vi for bi, vi in zip(b, v)) + sum(cj * hj for cj, hj in zip(c, h))
            neg_energies.append(e)
    mx = max(neg_energies)
    return mx + math.log(math.fsum(math.exp(x - mx) for x in neg_energies))


@settings(max_examples=10)
@given(nv=st.integers(1, 5), nh=st.integers(1, 5), scale=st.sampled_from([0.1, 1.0, 3.0]), seed=st.integers(0, 50))
def test_log_Z_matches_brute_force_over_both_layers(nv, nh, scale, seed):
    W, b, c = _params(nv, nh, scale, seed)
    got = rbm_log_Z(W, b, c)
    assert got.dtype == torch.float64 and got.shape == ()
    _close(float(got), _brute_force_log_Z(W, b, c))


@pytest.mark.parametrize("shape", [(3, 6), (6, 3)])
def test_both_enumeration_branches_and_chunking(shape, device, dtype):
    """Enumerating visible (nh > nv) or hidden (nh <= nv) states, with tiny chunks, on every device/dtype."""
    W, b, c = _params(*shape, seed=3, dtype=dtype, device=device)
    ref = _brute_force_log_Z(W, b, c)
    for chunk in (1, 5, 2**14):
        got = rbm_log_Z(W, b, c, chunk_size=chunk)
        assert got.device.type == device.type
        _close(float(got), ref)


def test_log_likelihood_normalizes_over_all_visible_states():
    W, b, c = _params(4, 3, seed=5)
    v = enumerate_binary(4)
    ll = rbm_log_likelihood(W, b, c, v)
    _close(float(torch.logsumexp(ll, 0)), 0.0)
    # free energy = -log sum_h exp(-E(v, h)) by brute force for one v
    v0 = v[6]
    h = enumerate_binary(3)
    neg_e = v0 @ W @ h.T + b @ v0 + h @ c
    _close(float(rbm_free_energy(W, b, c, v0)), -float(torch.logsumexp(neg_e, 0)))


def test_enumerate_binary_rows_are_all_states():
    s = enumerate_binary(3)
    assert s.shape == (8, 3)
    assert {tuple(int(t) for t in row) for row in s} == set(itertools.product((0, 1), repeat=3))


def test_moderate_size_runs_by_enumerating_the_small_layer():
    """100 visible x 12 hidden: 4096 hidden states, consistent whichever chunking."""
    W, b, c = _params(100, 12, scale=0.1, seed=1)
    a = rbm_log_Z(W, b, c)
    bb = rbm_log_Z(W, b, c, chunk_size=333)
    _close(float(a), float(bb))
    # and symmetric under swapping the layers
    _close(float(rbm_log_Z(W.T, c, b)), float(a))


def test_bad_inputs():
    W, b, c = _params(3, 2)
    with pytest.raises(ShapeError, match="b \\(visible bias\\)"):
        rbm_log_Z(W, c, c)
    with pytest.raises(ShapeError, match="c \\(hidden bias\\)"):
        rbm_log_Z(W, b, b)
    with pytest.raises(ShapeError, match="W must have shape"):
        rbm_log_Z(b, b, c)
    big = torch.zeros(21, 21)
    with pytest.raises(ParameterError, match="use AIS"):
        rbm_log_Z(big, torch.zeros(21), torch.zeros(21))
