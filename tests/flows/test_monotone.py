"""Monotone maps with a root-finding inverse (NAF's deep sigmoid, UMNN, sum of squares) and the
block neural autoregressive layer, against independent computations: the naive formula, a
high-order quadrature of the derivative, finite-difference gradients, the autograd Jacobian's
triangular structure; brackets hold the root and extreme inputs invert."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker import flows
from fokker.tolerances import assert_close

from flows_testlib import jacobian, perturb

F64 = torch.float64


def _gl(num: int, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``(..., num)`` and weights of a ``num``-point Gauss-Legendre rule on ``[a, b]``."""
    u, w = np.polynomial.legendre.leggauss(num)
    u, w = torch.tensor(u, dtype=F64), torch.tensor(w, dtype=F64)
    mid, half = (a + b)[..., None] / 2, (b - a)[..., None] / 2
    return mid + half * u, half * w


def test_deep_sigmoid_is_the_formula_of_huang_et_al() -> None:
    """``g(y) = logit(sum_k w_k sigmoid(a_k y + b_k))`` written naively (moderate y, float64), and
    ``log g'`` against autograd of the naive formula."""
    torch.manual_seed(0)
    m = flows.DeepSigmoid(5)
    params = torch.randn(40, m.num_params, dtype=F64)
    y = (3 * torch.randn(40, dtype=F64)).requires_grad_(True)
    log_a, b, w = params.unflatten(-1, (3, 5)).unbind(-2)
    a = torch.exp(7 * torch.tanh(log_a / 7))
    s = (torch.softmax(w, -1) * torch.sigmoid(a * y[:, None] + b)).sum(-1)
    naive = torch.log(s) - torch.log1p(-s)
    (dnaive,) = torch.autograd.grad(naive.sum(), y)
    x, log_dg = m.density(y, params)
    assert_close(x, naive)
    assert_close(log_dg, torch.log(dnaive))
    # raw zeros: the identity
    x0, l0 = m.density(y.detach(), torch.zeros(40, m.num_params, dtype=F64))
    assert_close(x0, y.detach())
    assert_close(l0, torch.zeros(40, dtype=F64))


def test_sum_of_squares_is_the_integral_of_its_squared_polynomials() -> None:
    """``g(y) - g(0)`` against a 64-point Gauss-Legendre rule applied to ``slope + mean_k p_k(s / L)^2``
    (exact for these degrees), and the linear tails beyond ``+-L``."""
    torch.manual_seed(1)
    L, D, K, slope = 3.0, 3, 2, 1e-3
    m = flows.SumOfSquares(D, K, bound=L, slope=slope)
    params = torch.randn(30, m.num_params, dtype=F64)
    coef = params[:, :-1].unflatten(-1, (K, D + 1)).clone()
    coef[..., 0] += 1

    def dg(s: torch.Tensor) -> torch.Tensor:  # s (30, n)
        t = s / L
        p = sum(coef[:, None, :, l] * t[..., None] ** l for l in range(D + 1))  # (30, n, K)
        return slope + (p * p).mean(-1)

    y = torch.linspace(-L, L, 30, dtype=F64)
    nodes, weights = _gl(64, torch.zeros_like(y), y)
    ref = (dg(nodes) * weights).sum(-1)
    g, log_dg = m.density(y, params)
    g0, _ = m.density(torch.zeros_like(y), params)
    assert_close(g - g0, ref, scale=10.0)  # values up to ~10
    assert_close(torch.exp(log_dg), dg(y[:, None])[:, 0])
    # beyond the box: the tangent line at the edge
    far = torch.full_like(y, 1e6)
    edge = torch.full_like(y, L)
    g_far, l_far = m.density(far, params)
    g_edge, l_edge = m.density(edge, params)
    assert_close(g_far, g_edge + torch.exp(l_edge) * (1e6 - L), scale=float(g_far.abs().max()))
    assert_close(l_far, l_edge)


def test_unconstrained_monotone_quadrature_is_accurate() -> None:
    """The 32-node map against a 400-node rule of the same integrand (its exact log-derivative is
    ``log f``): the quadrature error of the default map is far below float32 rounding."""
    torch.manual_seed(2)
    m = perturb(flows.UnconstrainedMonotone(signal=3, hidden=(16, 16)), scale=0.5).double()
    params = torch.randn(20, m.num_params, dtype=F64)
    y = torch.linspace(-6, 6, 20, dtype=F64)
    g, log_dg = m.density(y, params)
    nodes, weights = _gl(400, torch.zeros_like(y), y)
    h = params[:, :-1]

    def f(t: torch.Tensor) -> torch.Tensor:  # the documented integrand exp(B tanh(MLP(t, h) / B)), B = 7
        out = m.integrand(torch.cat([t[..., None], h[:, None, :].expand(*t.shape, 3)], -1))[..., 0]
        return torch.exp(7 * torch.tanh(out / 7))

    with torch.no_grad():
        ref = params[:, -1] + (f(nodes) * weights).sum(-1)
        f_end = f(y[:, None])[:, 0]
    assert float((g - ref).abs().max()) < 1e-9
    assert_close(torch.exp(log_dg), f_end)


MAPS = {
    "DeepSigmoid": lambda: flows.DeepSigmoid(4),
    "SumOfSquares": lambda: flows.SumOfSquares(3, 2, bound=4.0),
    "UnconstrainedMonotone": lambda: perturb(flows.UnconstrainedMonotone(2, (8,), num_nodes=16, bound=4.0)),
}


@pytest.mark.parametrize("name", sorted(MAPS))
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), log_mag=st.floats(-3, 8))
def test_bracket_holds_the_root_and_the_inverse_is_exact_at_any_scale(name: str, seed: int, log_mag: float) -> None:
    """``g(lo) <= x <= g(hi)`` for inputs from 1e-3 to 1e8 (both signs) and ``g(g^{-1}(x)) = x``."""
    torch.manual_seed(seed)
    m = MAPS[name]()
    if isinstance(m, torch.nn.Module):
        m.double()
    params = torch.randn(16, m.num_params, dtype=F64)
    x = torch.randn(16, dtype=F64).sign() * 10**log_mag * torch.rand(16, dtype=F64).add(0.5)
    lo, hi = m.bracket(x, params)
    assert bool((lo <= hi).all())
    slack = 1e-10 * (x.abs() + 1)  # on the linear tails lo = hi = the root: equality up to rounding
    assert bool((m.density(lo, params)[0] <= x + slack).all())
    assert bool((m.density(hi, params)[0] >= x - slack).all())
    y, ladj = m.forward(x, params)
    back, log_dg = m.density(y, params)
    assert_close(back, x, scale=float(x.abs().max()))
    assert_close(ladj, -log_dg)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_extreme_float32_inputs_stay_finite(name: str) -> None:
    torch.manual_seed(3)
    m = MAPS[name]()
    params = torch.randn(4, m.num_params)
    x = torch.tensor([1e30, -1e30, 3e4, -7.0])
    y, ladj = m.forward(x, params)
    assert bool(torch.isfinite(y).all() and torch.isfinite(ladj).all())
    back, _ = m.density(y, params)
    assert_close(back, x, scale=float(x.abs().max()))


@pytest.mark.parametrize("name", ["DeepSigmoid", "SumOfSquares"])
def test_sampling_direction_has_exact_first_and_second_derivatives(name: str) -> None:
    """The root ``g^{-1}(x; theta)`` is differentiated through two Newton steps at the converged
    root: finite differences of the whole solve (gradcheck, gradgradcheck) agree."""
    torch.manual_seed(4)
    m = MAPS[name]()
    x = torch.randn(3, dtype=F64, requires_grad=True)
    params = (0.5 * torch.randn(3, m.num_params, dtype=F64)).requires_grad_(True)

    def f(x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return m.forward(x, params)

    assert torch.autograd.gradcheck(f, (x, params))
    assert torch.autograd.gradgradcheck(f, (x, params))


def test_block_autoregressive_jacobian_is_lower_triangular_with_positive_diagonal() -> None:
    """Density direction: ``dx_i/dy_j = 0`` for ``j > i`` (autograd), diagonal positive, and the
    log-det is the sum of the log-diagonal (independent of the layer's own bookkeeping)."""
    torch.manual_seed(5)
    layer = perturb(flows.BlockAutoregressive(4, (3, 3)), scale=0.5).double()
    for y in torch.randn(3, 4, dtype=F64):
        J = jacobian(lambda v: layer.inverse_and_ladj(v)[0], y)
        assert float(J.triu(1).abs().max()) == 0.0
        assert bool((torch.diagonal(J) > 0).all())
        assert_close(layer.inverse_and_ladj(y)[1], torch.log(torch.diagonal(J)).sum())


def test_block_autoregressive_sampling_gradient_and_extreme_inputs() -> None:
    """``d`` Newton steps after the sequential solve give exact first derivatives (gradcheck against
    finite differences of the whole inverse), and far-out noise inverts."""
    torch.manual_seed(6)
    layer = perturb(flows.BlockAutoregressive(3, (2,), context_dim=2), scale=0.5).double()
    x = torch.randn(2, 3, dtype=F64, requires_grad=True)
    c = torch.randn(2, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c: layer.call_and_ladj(x, c), (x, c))
    far = torch.tensor([[1e6, -1e6, 50.0]], dtype=F64)
    y, _ = layer.call_and_ladj(far, c[:1].detach())
    assert_close(layer.inverse_and_ladj(y, c[:1].detach())[0], far, scale=1e6)
