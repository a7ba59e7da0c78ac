"""Planar layer: exact inverse on arbitrary inputs, log-det vs autograd slogdet, double backward."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker.errors import ShapeError
from fokker.flows import ffjord, planar_flow, residual_flow
from fokker.flows.planar import Planar, solve_tanh_equation
from fokker.checks import check_normalized
from fokker.tolerances import assert_close, tolerance

from flows_testlib import perturb, slogdet_autograd

F64 = torch.float64




@given(dim=st.integers(1, 5), batch=st.integers(1, 4), seed=st.integers(0, 10_000), scale=st.sampled_from([0.3, 3.0]))
@settings(max_examples=10)
def test_planar_inverse_and_log_det_float64(dim: int, batch: int, seed: int, scale: float) -> None:
    torch.manual_seed(seed)
    layer = perturb(Planar(dim).to(F64), scale, seed)
    z = 5 * torch.randn(batch, dim, dtype=F64)
    y, ladj = layer.call_and_ladj(z)
    # inverse of produced values, and forward of inverse on ARBITRARY values
    z_back, ladj_inv = layer.inverse_and_ladj(y.clone())
    assert_close(z_back, z)
    y_arb = 5 * torch.randn(batch, dim, dtype=F64)
    assert_close(layer.call_and_ladj(layer.inverse_and_ladj(y_arb)[0])[0], y_arb)
    # log-det vs autograd; inverse log-det is its negative
    assert_close(ladj, slogdet_autograd(layer, z))
    assert_close(ladj_inv, -ladj)
    # torch Transform protocol agrees
    assert_close(layer.log_abs_det_jacobian(z, y), ladj)


def test_planar_constraint_w_u_hat_above_minus_one() -> None:
    layer = Planar(3).to(F64)
    with torch.no_grad():
        layer.w.copy_(torch.tensor([1.0, 2.0, -1.0]))
        layer.u.copy_(-10 * layer.w)  # w^T u = -60: the raw u would make f non-invertible
    assert float((layer.w @ layer.u_hat()).detach()) > -1
    y = 10 * torch.randn(50, 3, dtype=F64)
    assert_close(layer.call_and_ladj(layer.inverse_and_ladj(y)[0])[0], y)


def test_solve_tanh_equation_near_singular_and_far() -> None:
    c = torch.tensor([-0.999999, -0.5, 0.0, 3.0, 50.0], dtype=F64)
    b = torch.tensor([0.3, -2.0, 1.0, 0.0, -0.1], dtype=F64)
    for target in (torch.full((5,), 1e4, dtype=F64), torch.linspace(-3, 3, 5, dtype=F64), torch.full((5,), -7.0, dtype=F64)):
        a = solve_tanh_equation(target, c, b)
        resid = a + c * torch.tanh(a + b) - target
        assert float(resid.abs().max()) <= tolerance(F64).rtol * (1 + float(target.abs().max()))


def test_planar_second_order_gradients_inverse() -> None:
    """gradcheck / gradgradcheck (finite differences) of log p(y) through the Newton inverse."""
    layer = perturb(Planar(3).to(F64), 1.0, 3)
    y = torch.randn(4, 3, dtype=F64, requires_grad=True)
    u = layer.u.detach().clone().requires_grad_(True)
    w = layer.w.detach().clone().requires_grad_(True)

    def log_prob(y_: torch.Tensor, u_: torch.Tensor, w_: torch.Tensor) -> torch.Tensor:
        z, ladj = _call_inverse(layer, {"u": u_, "w": w_}, y_)
        return -0.5 * (z * z).sum(-1) + ladj

    assert torch.autograd.gradcheck(log_prob, (y, u, w))
    assert torch.autograd.gradgradcheck(log_prob, (y, u, w))


def _call_inverse(layer: Planar, params: dict[str, torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer.inverse_and_ladj(y)`` with parameters replaced by the given tensors."""
    saved = {k: getattr(layer, k) for k in params}
    try:
        for k, v in params.items():
            delattr(layer, k)
            setattr(layer, k, v)
        return layer.inverse_and_ladj(y)
    finally:
        for k, v in saved.items():
            delattr(layer, k)
            layer.register_parameter(k, v)


def test_planar_float32_far_inputs_finite(device: torch.device) -> None:
    layer = perturb(Planar(4), 2.0, 0).to(device)
    y = 1e4 * torch.randn(64, 4, device=device)
    z, ladj = layer.inverse_and_ladj(y)
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    y2, _ = layer.call_and_ladj(z)
    # float32 inputs of size ~1e4: the round trip is accurate to the rounding of values that large
    assert_close(y2, y, scale=float(y.abs().max()))


def test_planar_on_device_float32(device: torch.device) -> None:
    layer = perturb(Planar(3), 0.5, 1).to(device)
    y = torch.randn(16, 3, device=device)
    z, ladj_inv = layer.inverse_and_ladj(y)
    y2, ladj = layer.call_and_ladj(z)
    assert_close(y2, y, loose=True)
    assert_close(ladj_inv, -ladj, loose=True)


def test_planar_state_dict_round_trip() -> None:
    a = perturb(Planar(3).to(F64), 1.0, 5)
    b = Planar(3).to(F64)
    b.load_state_dict(a.state_dict())
    y = torch.randn(7, 3, dtype=F64)
    assert_close(b.inverse_and_ladj(y)[0], a.inverse_and_ladj(y)[0])


def test_planar_bad_shape_raises() -> None:
    layer = Planar(3)
    with pytest.raises(ShapeError, match=r"z must have shape \(\.\.\., 3\)"):
        layer.call_and_ladj(torch.zeros(2, 4))
    with pytest.raises(ShapeError, match=r"y must have shape \(\.\.\., 3\)"):
        layer.inverse_and_ladj(torch.zeros(2, 2))


# -- composed flows from the builder --------------------------------------------------------


@pytest.mark.parametrize("kind", ["planar", "radial", "sylvester"])
def test_planar_family_flow_integrates_to_one_2d(kind: str) -> None:
    torch.manual_seed(0)
    flow = perturb(planar_flow(2, 4, kind=kind), 0.3, 2).to(F64)
    res = check_normalized(flow, ((-8.0, 8.0), (-8.0, 8.0)), num_points=321)
    assert res.passed, res


def test_planar_flow_samples_agree_with_log_prob_1d() -> None:
    """KS distance between samples and the CDF obtained by quadrature of exp(log_prob)."""
    torch.manual_seed(0)
    flow = perturb(planar_flow(1, 3), 1.0, 4).to(F64)
    n = 4000
    with torch.no_grad():
        s = flow.sample((n,))[:, 0].sort().values
        grid = torch.linspace(-12, 12, 24_001, dtype=F64)
        dens = flow.log_prob(grid[:, None]).exp()
        cdf = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(0.5 * (dens[1:] + dens[:-1]) * (grid[1] - grid[0]), 0)])
        model_cdf = torch.from_numpy(__import__("numpy").interp(s.numpy(), grid.numpy(), cdf.numpy()))
        emp_hi = torch.arange(1, n + 1, dtype=F64) / n
        ks = float(torch.maximum(emp_hi - model_cdf, model_cdf - (emp_hi - 1 / n)).max())
        y, lp = flow.sample_and_log_prob((50,))
        assert_close(flow.log_prob(y), lp)
    assert_close(cdf[-1], torch.tensor(1.0, dtype=F64), loose=True)
    assert ks < (0.5 * __import__("math").log(2 / 1e-4)) ** 0.5 / n**0.5  # KS critical value, alpha = 1e-4


def test_planar_flow_trains_with_fit() -> None:
    from fokker.train import fit

    torch.manual_seed(0)
    data = torch.randn(512, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -1.0])
    flow = planar_flow(2, 4)
    before = float(flow.loss(data).detach())
    result = fit(flow, data, steps=80, batch_size=128, lr=2e-2, progress=False)
    assert float(flow.loss(data).detach()) < before - 0.3
    assert len(result.losses) == 80


def test_part_b_layers_are_transform_modules_with_vector_metadata() -> None:
    from pyro.distributions.torch_transform import TransformModule

    from fokker.flows.batchnorm import BatchNormFlow
    from fokker.flows.continuous import ContinuousFlow
    from fokker.flows.radial import Radial
    from fokker.flows.residual import ResidualFlow
    from fokker.flows.sylvester import Sylvester

    for layer in (Planar(2), Radial(2), Sylvester(2), BatchNormFlow(2), ResidualFlow(2, hidden=(4,)), ContinuousFlow(2, hidden=(4,))):
        assert isinstance(layer, TransformModule)
        assert layer.bijective and layer.event_dim == 1
        assert layer.domain.event_dim == 1 and layer.codomain.event_dim == 1
        assert layer.inv.inv is layer
        z = torch.randn(3, 2)
        y = layer(z)
        assert layer.log_abs_det_jacobian(z, y).shape == (3,)


@pytest.mark.parametrize("builder", ["planar", "residual", "ffjord"])
def test_pyro_distribution_survives_full_batch_training(builder: str) -> None:
    """The same data tensor scored every step through Pyro's TransformedDistribution (the cache trap)."""

    torch.manual_seed(0)
    flow = {
        "planar": lambda: planar_flow(2, 2),
        "residual": lambda: residual_flow(2, 1, hidden=(8,), log_det="exact", actnorm=False),
        "ffjord": lambda: ffjord(2, hidden=(8,)),
    }[builder]()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    x = torch.randn(64, 2) * 2
    losses = []
    for _ in range(3):
        dist = flow.distribution()
        y = dist.sample((8,))  # a forward pass in between, as SVI would do
        loss = -dist.log_prob(x).mean() - 0.0 * dist.log_prob(y).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert_close(flow.distribution().log_prob(x).detach(), flow.log_prob(x).detach(), loose=True)
