"""Radial layer: closed-form inverse on arbitrary inputs, log-det vs autograd slogdet, double backward."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker.errors import ShapeError
from fokker.flows.radial import Radial
from fokker.tolerances import assert_close

from flows_testlib import perturb, slogdet_autograd

F64 = torch.float64




@given(dim=st.integers(1, 5), batch=st.integers(1, 4), seed=st.integers(0, 10_000), scale=st.sampled_from([0.3, 3.0]))
@settings(max_examples=10)
def test_radial_inverse_and_log_det_float64(dim: int, batch: int, seed: int, scale: float) -> None:
    torch.manual_seed(seed)
    layer = perturb(Radial(dim).to(F64), scale, seed)
    z = 4 * torch.randn(batch, dim, dtype=F64)
    y, ladj = layer.call_and_ladj(z)
    z_back, ladj_inv = layer.inverse_and_ladj(y.clone())
    assert_close(z_back, z)
    y_arb = 4 * torch.randn(batch, dim, dtype=F64)
    assert_close(layer.call_and_ladj(layer.inverse_and_ladj(y_arb)[0])[0], y_arb)
    assert_close(ladj, slogdet_autograd(layer, z))
    assert_close(ladj_inv, -ladj)
    assert_close(layer.log_abs_det_jacobian(z, y), ladj)


def test_radial_contracting_limit_beta_near_minus_alpha() -> None:
    """beta -> -alpha squeezes a ball around z0 hard; the quadratic root must stay exact."""
    layer = Radial(2).to(F64)
    with torch.no_grad():
        layer.alpha_raw.fill_(2.0)
        layer.beta_raw.fill_(-12.0)  # softplus(-12) ~ 6e-6: beta = -alpha + 6e-6
    alpha, beta = layer.alpha_beta()
    assert float((beta + alpha).detach()) > 0
    y = torch.cat([1e-7 * torch.randn(5, 2, dtype=F64), 30 * torch.randn(5, 2, dtype=F64)]) + layer.z0.detach()
    z, _ = layer.inverse_and_ladj(y)
    assert_close(layer.call_and_ladj(z)[0], y)


def test_radial_second_order_gradients() -> None:
    layer = perturb(Radial(3).to(F64), 1.0, 2)
    y = torch.randn(4, 3, dtype=F64, requires_grad=True)
    a = layer.alpha_raw.detach().clone().requires_grad_(True)
    b = layer.beta_raw.detach().clone().requires_grad_(True)

    def log_prob(y_: torch.Tensor, a_: torch.Tensor, b_: torch.Tensor) -> torch.Tensor:
        saved = (layer.alpha_raw, layer.beta_raw)
        del layer.alpha_raw, layer.beta_raw
        layer.alpha_raw, layer.beta_raw = a_, b_
        try:
            z, ladj = layer.inverse_and_ladj(y_)
        finally:
            del layer.alpha_raw, layer.beta_raw
            layer.alpha_raw, layer.beta_raw = saved
        return -0.5 * (z * z).sum(-1) + ladj

    assert torch.autograd.gradcheck(log_prob, (y, a, b))
    assert torch.autograd.gradgradcheck(log_prob, (y, a, b))


def test_radial_on_device_float32(device: torch.device) -> None:
    layer = perturb(Radial(3), 0.5, 1).to(device)
    y = torch.randn(16, 3, device=device)
    z, ladj_inv = layer.inverse_and_ladj(y)
    y2, ladj = layer.call_and_ladj(z)
    assert_close(y2, y, loose=True)
    assert_close(ladj_inv, -ladj, loose=True)


def test_radial_bad_shape_raises() -> None:
    with pytest.raises(ShapeError, match=r"y must have shape \(\.\.\., 2\)"):
        Radial(2).inverse_and_ladj(torch.zeros(3))
