"""Sylvester layer: exact inverse by triangular back substitution, log-det vs autograd slogdet."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker.errors import ParameterError, ShapeError
from fokker.flows.sylvester import Sylvester
from fokker.tolerances import assert_close

from flows_testlib import perturb, slogdet_autograd

F64 = torch.float64




@given(
    dim=st.integers(1, 5), m_frac=st.floats(0.0, 1.0), batch=st.integers(1, 4),
    seed=st.integers(0, 10_000), scale=st.sampled_from([0.3, 2.0]),
)
@settings(max_examples=10)
def test_sylvester_inverse_and_log_det_float64(dim: int, m_frac: float, batch: int, seed: int, scale: float) -> None:
    torch.manual_seed(seed)
    m = max(1, round(m_frac * dim))
    layer = perturb(Sylvester(dim, m).to(F64), scale, seed)
    q, _, _ = layer.matrices()
    assert_close(q.T @ q, torch.eye(m, dtype=F64))
    z = 4 * torch.randn(batch, dim, dtype=F64)
    y, ladj = layer.call_and_ladj(z)
    z_back, ladj_inv = layer.inverse_and_ladj(y.clone())
    assert_close(z_back, z, loose=True)
    y_arb = 4 * torch.randn(batch, dim, dtype=F64)
    assert_close(layer.call_and_ladj(layer.inverse_and_ladj(y_arb)[0])[0], y_arb, loose=True)
    assert_close(ladj, slogdet_autograd(layer, z))
    assert_close(ladj_inv, -ladj, loose=True)


def test_sylvester_inverse_jacobian_matches_negative_log_det() -> None:
    layer = perturb(Sylvester(4, 3).to(F64), 1.0, 4)
    y = torch.randn(3, 4, dtype=F64)
    for yi in y:
        J = torch.autograd.functional.jacobian(lambda v: layer.inverse_and_ladj(v)[0], yi)
        assert_close(torch.linalg.slogdet(J)[1], layer.inverse_and_ladj(yi)[1])


def test_sylvester_second_order_gradients() -> None:
    layer = perturb(Sylvester(3, 2).to(F64), 1.0, 6)
    y = torch.randn(3, 3, dtype=F64, requires_grad=True)
    d = layer.diag_a_raw.detach().clone().requires_grad_(True)

    def log_prob(y_: torch.Tensor, d_: torch.Tensor) -> torch.Tensor:
        saved = layer.diag_a_raw
        del layer.diag_a_raw
        layer.diag_a_raw = d_
        try:
            z, ladj = layer.inverse_and_ladj(y_)
        finally:
            del layer.diag_a_raw
            layer.diag_a_raw = saved
        return -0.5 * (z * z).sum(-1) + ladj

    assert torch.autograd.gradcheck(log_prob, (y, d))
    assert torch.autograd.gradgradcheck(log_prob, (y, d))


def test_sylvester_on_device_float32(device: torch.device) -> None:
    layer = perturb(Sylvester(4, 2), 0.5, 1).to(device)
    y = 3 * torch.randn(16, 4, device=device)
    z, ladj_inv = layer.inverse_and_ladj(y)
    y2, ladj = layer.call_and_ladj(z)
    assert_close(y2, y, loose=True)
    assert_close(ladj_inv, -ladj, loose=True)


def test_sylvester_bad_arguments_raise() -> None:
    with pytest.raises(ParameterError, match="hidden must be an integer <= features=2"):
        Sylvester(2, 3)
    with pytest.raises(ShapeError, match=r"z must have shape \(\.\.\., 2\)"):
        Sylvester(2).call_and_ladj(torch.zeros(1, 3))
