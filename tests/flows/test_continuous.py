"""ContinuousFlow (FFJORD): exact change of variables for linear fields, Hutchinson, adjoint, NFE,
the exact trace by default, and round trips within the requested tolerance (next to zuko's CNF)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fokker.errors import ParameterError, ShapeError
from fokker.flows import ContinuousFlow, ffjord
from fokker.tolerances import Z_SCORE, assert_close

F64 = torch.float64


class Linear(nn.Module):
    """``f(t, x) = A x``: ``x(T) = expm(T A) x(0)``, ``log det = T tr A``."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x @ self.A.T


def _A(d: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.6 * torch.randn(d, d, generator=g, dtype=F64)


def test_linear_field_matches_closed_form_change_of_variables(device: torch.device) -> None:
    A, T = _A().to(device), 1.3
    flow = ffjord(3, T=T, trace="exact", rtol=1e-10, atol=1e-10, vector_field=Linear(A)).to(device=device, dtype=F64)
    x = torch.randn(16, 3, dtype=F64, device=device)
    # closed form: z = expm(-T A) x, log p(x) = log N(z; 0, I) - T tr A
    z = x @ torch.linalg.matrix_exp(-T * A).T
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - T * torch.trace(A)
    assert_close(flow.log_prob(x), expected, loose=True)
    layer = flow.transforms[0]
    x2, ladj = layer.call_and_ladj(z)
    assert_close(x2, x, loose=True)
    assert_close(ladj, (T * torch.trace(A)).expand(16), loose=True)
    assert layer.nfe > 0 and layer.total_nfe >= layer.nfe


def test_score_through_the_ode_is_the_closed_form_and_reaches_the_field() -> None:
    """Second-order: d/dx log p(x) by autograd, then backward of its norm into A."""
    A, T = _A(2, 1), 0.8
    flow = ffjord(2, T=T, trace="exact", rtol=1e-10, atol=1e-10, vector_field=Linear(A)).double()
    x = torch.randn(5, 2, dtype=F64, requires_grad=True)
    (score,) = torch.autograd.grad(flow.log_prob(x).sum(), x, create_graph=True)
    M = torch.linalg.matrix_exp(-T * A)
    assert_close(score, -(x @ M.T) @ M, loose=True)
    score.pow(2).sum().backward()
    grad_A = flow.transforms[0].vector_field.A.grad
    assert grad_A is not None and bool(torch.isfinite(grad_A).all()) and float(grad_A.abs().sum()) > 0


def test_hutchinson_trace_is_unbiased_for_a_linear_field() -> None:
    A, T = _A(4, 2), 1.0
    layer = ContinuousFlow(4, Linear(A), T=T, trace="hutchinson", noise="gaussian", rtol=1e-8, atol=1e-8)
    n = 4000
    with torch.no_grad():
        _, ladj = layer.call_and_ladj(torch.randn(n, 4, dtype=F64))
    # per example ladj = T eps^T A eps with an independent Gaussian probe per example:
    # mean T tr(A), variance 2 T^2 ||(A + A^T)/2||_F^2 (the estimator is random, not the exact trace)
    exact = T * torch.trace(A)
    assert float((ladj.mean() - exact).abs()) <= Z_SCORE * float(ladj.std()) / n**0.5
    sym = (A + A.T) / 2
    var_exact = 2 * T**2 * float((sym**2).sum())
    centred = ladj - ladj.mean()
    var_hat = float((centred**2).mean())
    se_var = float(((centred**4).mean() - var_hat**2).sqrt()) / n**0.5
    assert abs(var_hat - var_exact) <= Z_SCORE * se_var


def test_adjoint_gradients_match_direct_backprop() -> None:
    torch.manual_seed(0)
    direct = ContinuousFlow(2, hidden=(8,), T=0.7, trace="exact", rtol=1e-9, atol=1e-9).to(F64)
    adjoint = ContinuousFlow(2, hidden=(8,), T=0.7, trace="exact", rtol=1e-9, atol=1e-9, adjoint=True).to(F64)
    adjoint.load_state_dict(direct.state_dict())
    x = torch.randn(6, 2, dtype=F64)
    for layer in (direct, adjoint):
        z, ladj = layer.inverse_and_ladj(x)
        (0.5 * (z * z).sum() - ladj.sum()).backward()
    for p, q in zip(direct.parameters(), adjoint.parameters()):
        assert_close(q.grad, p.grad, loose=True)


def test_round_trip_nonlinear_field_and_log_det_vs_autograd() -> None:
    torch.manual_seed(1)
    layer = ContinuousFlow(2, hidden=(16,), T=1.0, trace="exact", rtol=1e-10, atol=1e-10).to(F64)
    y = torch.randn(3, 2, dtype=F64)
    z, ladj_inv = layer.inverse_and_ladj(y)
    assert_close(layer.call_and_ladj(z)[0], y, loose=True)
    for yi, li in zip(y, ladj_inv):
        J = torch.autograd.functional.jacobian(lambda v: layer.inverse_and_ladj(v)[0], yi)
        assert_close(torch.linalg.slogdet(J)[1], li, loose=True)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ParameterError, match="trace must be one of"):
        ContinuousFlow(2, trace="skilling")
    with pytest.raises(ParameterError, match="T must be a positive"):
        ContinuousFlow(2, T=0.0)
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 2\)"):
        ContinuousFlow(2).call_and_ladj(torch.zeros(4, 3))


def test_ffjord_integrates_to_one_and_samples_match_log_prob_1d() -> None:
    torch.manual_seed(0)
    flow = ffjord(1, hidden=(16,), T=1.0, rtol=1e-8, atol=1e-8).to(F64)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(3)
    grid = torch.linspace(-10, 10, 2001, dtype=F64)[:, None]
    with torch.no_grad():
        dens = flow.log_prob(grid).exp()
    mass = float(torch.trapezoid(dens, grid[:, 0]))
    assert_close(torch.tensor(mass, dtype=F64), torch.tensor(1.0, dtype=F64), loose=True)
    y, lp = flow.sample_and_log_prob((10,))
    assert_close(flow.log_prob(y.detach()), lp.detach(), loose=True)


def test_exact_trace_by_default_up_to_32_features_so_log_prob_is_deterministic() -> None:
    torch.manual_seed(0)
    for d in (5, 32):
        layer = ContinuousFlow(d, hidden=(8,), rtol=1e-6, atol=1e-6).to(F64)
        assert layer.exact_trace and not layer.stochastic_log_det
        x = torch.randn(3, d, dtype=F64)
        with torch.no_grad():
            a, b = layer.inverse_and_ladj(x)[1], layer.inverse_and_ladj(x)[1]
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    big = ContinuousFlow(33, hidden=(8,))
    assert not big.exact_trace and big.stochastic_log_det
    assert ContinuousFlow(40, hidden=(8,), trace="exact").exact_trace
    # Hutchinson is reproducible from a generator, through the Flow too
    flow = ffjord(3, hidden=(8,), trace="hutchinson").double()
    x = torch.randn(4, 3, dtype=F64)
    with torch.no_grad():
        l1 = flow.log_prob(x, generator=torch.Generator().manual_seed(5))
        l2 = flow.log_prob(x, generator=torch.Generator().manual_seed(5))
        l3 = flow.log_prob(x, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(l1, l2, rtol=0, atol=0)
    assert (l1 - l3).abs().max() > 0


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float64, 1e-5), (torch.float64, 1e-8)])
def test_round_trip_meets_the_requested_tolerance_like_zukos_cnf(dtype: torch.dtype, tol: float) -> None:
    """|T^{-1}(T(x)) - x| <= 4 (atol + rtol |x|) for every coordinate of every sample of a batch.

    torchdiffeq's default RMS error norm averaged the error over the batch, so single samples
    missed the tolerance by 10-25 times; zuko's CNF (max norm) on the same vector field meets
    a similar bound.
    """
    import zuko

    torch.manual_seed(0)
    layer = ContinuousFlow(3, hidden=(32, 32), rtol=tol, atol=tol, trace="exact").to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(2)  # a field far from the identity
    x = torch.randn(256, 3, dtype=dtype)
    with torch.no_grad():
        y, ladj = layer.call_and_ladj(x)
        x_back, ladj_back = layer.inverse_and_ladj(y)
    bound = 4 * tol * (1 + x.abs())
    assert bool(((x_back - x).abs() <= bound).all()), float(((x_back - x).abs() / bound).max())
    assert bool(((ladj_back + ladj).abs() <= 4 * tol * (1 + ladj.abs())).all())
    field = layer.vector_field
    theirs = zuko.transforms.FreeFormJacobianTransform(
        lambda t, v: field(t, v), 0.0, 1.0, tuple(layer.parameters()), atol=tol, rtol=tol, exact=True
    )
    with torch.no_grad():
        z_back = theirs.inv(theirs(x))
        y_theirs = theirs(x)
    # the same order of accuracy: both within a few tolerances of each other and of x
    assert bool(((z_back - x).abs() <= 10 * bound).all())
    assert bool(((y_theirs - y).abs() <= 10 * bound).all())


def test_empty_batch_and_bad_dtype() -> None:
    layer = ContinuousFlow(2, hidden=(4,))
    y, ladj = layer.call_and_ladj(torch.zeros(0, 2))
    assert y.shape == (0, 2) and ladj.shape == (0,)
    flow = ffjord(2, hidden=(4,))
    from fokker.errors import DeviceDtypeError

    with pytest.raises(DeviceDtypeError, match="x has dtype torch.float64"):
        flow.log_prob(torch.zeros(3, 2, dtype=F64))
