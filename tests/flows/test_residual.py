"""ResidualFlow: fixed-point inverse, log-det estimators (exact / series / Russian roulette), Lipschitz bound."""

from __future__ import annotations

import pytest
import torch

from fokker.errors import NotInvertibleError, ParameterError, ShapeError
from fokker.flows import residual_flow
from fokker.flows.residual import ResidualFlow
from fokker.tolerances import Z_SCORE, assert_close, tolerance

F64 = torch.float64


def _block(log_det: str = "exact", coeff: float = 0.8, dim: int = 3, **kw: object) -> ResidualFlow:
    torch.manual_seed(3)
    return ResidualFlow(dim, hidden=(16, 16), coeff=coeff, log_det=log_det, **kw).to(F64).eval()  # type: ignore[arg-type]


def _slogdet(f, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(f, xi))[1] for xi in x])


def test_round_trips_on_arbitrary_inputs_and_exact_log_det() -> None:
    layer = _block()
    y = 4 * torch.randn(5, 3, dtype=F64)
    z, ladj_inv = layer.inverse_and_ladj(y)  # density direction y -> y + g(y)
    y_back, ladj = layer.call_and_ladj(z)  # fixed point
    assert_close(y_back, y, loose=True)
    z_arb = 4 * torch.randn(5, 3, dtype=F64)
    assert_close(layer.inverse_and_ladj(layer.call_and_ladj(z_arb)[0])[0], z_arb, loose=True)
    # log-dets vs autograd Jacobians of both directions (the fixed point is differentiated implicitly)
    assert_close(ladj_inv, _slogdet(lambda v: layer.inverse_and_ladj(v)[0], y))
    assert_close(ladj, _slogdet(lambda v: layer.call_and_ladj(v)[0], z), loose=True)
    assert_close(ladj, -ladj_inv, loose=True)
    assert_close(layer.ladj(z, y), ladj, loose=True)


def _saturated_1d(log_det: str, **kw: object) -> ResidualFlow:
    """1-D block with all-ones weights: spectral normalisation is active and g' reaches ~0.6."""
    layer = ResidualFlow(1, hidden=(16,), coeff=0.8, log_det=log_det, probe="rademacher", **kw).to(F64).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        for lin in layer.linears:
            lin.weight.fill_(1.0)
            lin.bias.zero_()
            lin.power_iteration(50)
    return layer


@pytest.mark.parametrize("num_exact_terms, geom_p", [(1, 0.5), (2, 0.3)])
def test_russian_roulette_estimator_is_unbiased(num_exact_terms: int, geom_p: float) -> None:
    """1-D, Rademacher probe: the only randomness is the roulette; mean over draws vs exact log det."""
    layer = _saturated_1d("roulette", num_exact_terms=num_exact_terms, geom_p=geom_p)
    x = torch.linspace(-8, 8, 5, dtype=F64)[:, None]
    n = 20_000
    with torch.no_grad():
        exact = torch.log1p(torch.stack([torch.autograd.functional.jacobian(layer.g, xi) for xi in x]).reshape(5))
        est = layer.log_det_jacobian(x.repeat_interleave(n, 0))[1].reshape(5, n)
        truncated = _saturated_1d("series", num_terms=2).log_det_jacobian(x)[1]
    mean, se = est.mean(1), est.std(1) / n**0.5
    # where g' = 0 the estimator is exact (se = 0): allow rounding there
    assert bool(((mean - exact).abs() <= Z_SCORE * se + tolerance(F64).atol).all()), (mean, exact, se)
    # power: the 2-term truncation is biased by many standard errors where g' is large
    assert float((truncated - exact).abs().max()) > 10 * Z_SCORE * float(se.max())


def test_russian_roulette_with_gaussian_hutchinson_probe_is_unbiased() -> None:
    layer = _block("roulette", coeff=0.7, num_exact_terms=1, geom_p=0.5)
    x = 2 * torch.randn(2, 3, dtype=F64)
    with torch.no_grad():
        exact = _slogdet(lambda v: v + layer.g(v), x)
        n = 20_000
        est = layer.log_det_jacobian(x.repeat_interleave(n, 0))[1].reshape(2, n)
    mean, se = est.mean(1), est.std(1) / n**0.5
    assert bool((se > 0).all())
    assert bool(((mean - exact).abs() <= Z_SCORE * se).all()), (mean, exact, se)


def test_long_series_equals_exact_log_det_in_1d() -> None:
    layer = _saturated_1d("series", num_terms=80)
    x = torch.linspace(-8, 8, 5, dtype=F64)[:, None]
    exact = torch.log1p(torch.stack([torch.autograd.functional.jacobian(layer.g, xi) for xi in x]).reshape(5))
    assert_close(layer.log_det_jacobian(x)[1], exact, loose=True)


def test_truncated_series_converges_to_exact() -> None:
    layer = _block("series", coeff=0.6, num_terms=25)
    x = torch.randn(1, 3, dtype=F64)
    with torch.no_grad():
        exact = _slogdet(lambda v: v + layer.g(v), x)
        n = 20_000
        est = layer.log_det_jacobian(x.expand(n, 3))[1]
    # remainder of the series after 25 terms is <= D c^26/(26 (1-c)) ~ 1e-6; Hutchinson SE dominates
    assert float((est.mean() - exact).abs()) <= Z_SCORE * float(est.std()) / n**0.5 + tolerance(F64, loose=True).atol


def test_lipschitz_bound_holds_after_training_steps() -> None:
    torch.manual_seed(0)
    layer = ResidualFlow(2, hidden=(32,), coeff=0.9, log_det="exact").train()
    opt = torch.optim.Adam(layer.parameters(), lr=5e-2)
    x = torch.randn(128, 2)
    for _ in range(60):
        # push g to be as expansive as possible: spectral normalisation must hold it back
        loss = -(layer.g(x) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    layer.eval()
    assert float(layer.lipschitz_bound()) < 1.0
    # and the Lipschitz constant of g itself, measured by autograd Jacobians, is below the bound
    xs = 3 * torch.randn(64, 2)
    jac_norms = torch.stack(
        [torch.linalg.matrix_norm(torch.autograd.functional.jacobian(layer.g, xi), ord=2) for xi in xs]
    )
    assert float(jac_norms.max()) <= float(layer.lipschitz_bound()) * (1 + tolerance(torch.float32).rtol)


def test_second_order_gradients_through_log_det() -> None:
    layer = _block("exact", dim=2)
    y = torch.randn(3, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda v: layer.inverse_and_ladj(v)[1], (y,))

    roulette = _block("roulette", dim=2)

    def seeded(v: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(11)  # same probe and truncation on every call
        return roulette.inverse_and_ladj(v)[1]

    assert torch.autograd.gradgradcheck(seeded, (y,))


def test_fixed_point_gradient_matches_inverse_jacobian() -> None:
    layer = _block("exact")
    z = torch.randn(2, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: layer.call_and_ladj(v)[0], (z,))


def test_flow_log_prob_matches_manual_change_of_variables(device: torch.device) -> None:
    torch.manual_seed(0)
    flow = residual_flow(2, transforms=2, hidden=(16,), log_det="exact", actnorm=False).to(device=device, dtype=F64)
    flow.eval()
    x = torch.randn(7, 2, dtype=F64, device=device)
    z, total = x, torch.zeros(7, dtype=F64, device=device)
    for block in reversed(flow.transforms):
        jac = torch.stack([torch.autograd.functional.jacobian(lambda v: v + block.g(v), zi) for zi in z])
        total = total + torch.linalg.slogdet(jac)[1]
        z = z + block.g(z)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + total
    assert_close(flow.log_prob(x), expected.detach(), loose=True)


def test_non_convergence_and_bad_arguments_raise() -> None:
    layer = _block(max_iter=2)
    with pytest.raises(NotInvertibleError, match="max_iter=2"):
        layer.call_and_ladj(torch.randn(4, 3, dtype=F64))
    with pytest.raises(ParameterError, match=r"coeff must lie in \(0, 1\)"):
        ResidualFlow(2, coeff=1.0)
    with pytest.raises(ParameterError, match="log_det must be one of"):
        ResidualFlow(2, log_det="neumann")
    with pytest.raises(ShapeError, match=r"y must have shape \(\.\.\., 3\)"):
        layer.inverse_and_ladj(torch.zeros(2, 2, dtype=F64))


def test_residual_flow_integrates_to_one_and_samples_match_log_prob() -> None:
    torch.manual_seed(0)
    flow = residual_flow(2, transforms=2, hidden=(16,), log_det="exact", actnorm=False).to(F64).eval()
    with torch.no_grad():
        for block in flow.transforms:
            for lin in block.linears:
                lin.weight.mul_(5)  # saturate the spectral bound so the flow is far from identity
    g = torch.linspace(-7, 7, 201, dtype=F64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = float(flow.log_prob(pts).exp().sum()) * float(g[1] - g[0]) ** 2
    assert abs(mass - 1) < 2e-3
    y, lp = flow.sample_and_log_prob((20,))
    assert_close(flow.log_prob(y.detach()), lp.detach(), loose=True)


def test_state_dict_round_trip_includes_power_iteration_buffers() -> None:
    a = _block("exact")
    a.train()
    a.g(torch.randn(4, 3, dtype=F64))  # one power-iteration step moves the buffers
    b = ResidualFlow(3, hidden=(16, 16), coeff=0.8, log_det="exact").to(F64)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    y = torch.randn(5, 3, dtype=F64)
    za, la = a.inverse_and_ladj(y)
    zb, lb = b.inverse_and_ladj(y)
    assert_close(zb, za)
    assert_close(lb, la)


def test_float32_sampling_with_a_saturated_flow(device: torch.device) -> None:
    torch.manual_seed(0)
    flow = residual_flow(2, transforms=2, hidden=(16,)).to(device)
    with torch.no_grad():
        for layer in flow.transforms:
            if isinstance(layer, ResidualFlow):
                for lin in layer.linears:
                    lin.weight.mul_(10)
    x = flow.sample((1000,))
    assert x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    # the samples invert back to base draws: z = x + g(x) per block, round trip within float32 tolerance
    for layer in flow.transforms:
        if isinstance(layer, ResidualFlow):
            y = 3 * torch.randn(64, 2, device=device)
            z = layer.inverse_and_ladj(y)[0]
            assert_close(layer.call_and_ladj(z)[0], y, loose=True)


def test_two_train_mode_passes_before_one_backward() -> None:
    """Power iteration updates buffers in place; graphs built before must still backpropagate."""
    torch.manual_seed(0)
    flow = residual_flow(2, transforms=1, hidden=(8,), log_det="roulette", actnorm=False).train()
    loss = flow.loss(torch.randn(16, 2)) + flow.loss(torch.randn(16, 2))
    loss.backward()
    assert all(p.grad is not None for p in flow.parameters())


def test_stochastic_log_det_is_reproducible_from_a_generator() -> None:
    flow = residual_flow(2, transforms=2, hidden=(8,), log_det="roulette").double().eval()
    assert flow.transforms[0].stochastic_log_det and not ResidualFlow(2, log_det="exact").stochastic_log_det
    x = torch.randn(16, 2, dtype=F64)
    with torch.no_grad():
        a = flow.log_prob(x, generator=torch.Generator().manual_seed(1))
        b = flow.log_prob(x, generator=torch.Generator().manual_seed(1))
        c = flow.log_prob(x, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
