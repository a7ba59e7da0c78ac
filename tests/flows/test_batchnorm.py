"""BatchNormFlow: eval mode is an exact affine bijection; train mode uses batch statistics."""

from __future__ import annotations

import pytest
import torch

from fokker.errors import ParameterError, ShapeError
from fokker.flows.batchnorm import BatchNormFlow
from fokker.tolerances import assert_close

F64 = torch.float64


def _layer(dim: int = 3, **kw: float) -> BatchNormFlow:
    layer = BatchNormFlow(dim, **kw).to(F64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer.log_gamma.copy_(0.5 * torch.randn(dim, generator=g, dtype=F64))
        layer.beta.copy_(torch.randn(dim, generator=g, dtype=F64))
        layer.running_mean.copy_(torch.randn(dim, generator=g, dtype=F64))
        layer.running_var.copy_(torch.rand(dim, generator=g, dtype=F64) + 0.1)
    return layer


def test_eval_mode_round_trip_and_log_det_vs_autograd() -> None:
    layer = _layer().eval()
    x = 3 * torch.randn(6, 3, dtype=F64)
    z, ladj_inv = layer.inverse_and_ladj(x)
    x_back, ladj = layer.call_and_ladj(z)
    assert_close(x_back, x)
    z_arb = 3 * torch.randn(6, 3, dtype=F64)
    assert_close(layer.inverse_and_ladj(layer.call_and_ladj(z_arb)[0])[0], z_arb)
    for zi, li in zip(z, ladj):
        J = torch.autograd.functional.jacobian(lambda v: layer.call_and_ladj(v)[0], zi)
        assert_close(torch.linalg.slogdet(J)[1], li)
    assert_close(ladj_inv, -ladj)


def test_train_mode_uses_batch_statistics_and_updates_running_averages() -> None:
    layer = _layer(momentum=0.3).train()
    old_mean, old_var = layer.running_mean.clone(), layer.running_var.clone()
    x = 2 * torch.randn(200, 3, dtype=F64) + 5
    z, ladj_inv = layer.inverse_and_ladj(x)
    mean = x.mean(0)
    var = x.var(0, unbiased=False)
    expected = (x - mean) / torch.sqrt(var + layer.eps) * layer.log_gamma.exp() + layer.beta
    assert_close(z, expected)
    assert_close(ladj_inv, (layer.log_gamma - 0.5 * torch.log(var + layer.eps)).sum().expand(200))
    assert_close(layer.running_mean, 0.7 * old_mean + 0.3 * mean)
    assert_close(layer.running_var, 0.7 * old_var + 0.3 * var)
    # gradients flow through the batch statistics into the data and the parameters
    xg = x.clone().requires_grad_(True)
    (z2, l2) = layer.inverse_and_ladj(xg)
    (z2.sum() + l2.sum()).backward()
    assert xg.grad is not None and layer.log_gamma.grad is not None


def test_momentum_one_makes_eval_match_train_on_that_batch() -> None:
    layer = _layer(momentum=1.0)
    x = torch.randn(50, 3, dtype=F64) * torch.tensor([1.0, 3.0, 0.2], dtype=F64)
    z_train, l_train = layer.train().inverse_and_ladj(x)
    z_eval, l_eval = layer.eval().inverse_and_ladj(x)
    assert_close(z_eval, z_train)
    assert_close(l_eval, l_train)


def test_event_batch_dims_are_pooled(device: torch.device) -> None:
    layer = BatchNormFlow(2).to(device).train()
    x = torch.randn(4, 5, 2, device=device)
    z, ladj = layer.inverse_and_ladj(x)
    assert z.shape == x.shape and ladj.shape == (4, 5)
    assert_close(z.reshape(-1, 2).mean(0), torch.zeros(2, device=device), loose=True)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ParameterError, match="momentum must lie in"):
        BatchNormFlow(2, momentum=1.5)
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 2\)"):
        BatchNormFlow(2).inverse_and_ladj(torch.zeros(3, 3))
