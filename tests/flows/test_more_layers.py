"""Fixed elementwise bijections, Householder / matrix-exponential / orthogonal layers, conditional
linear layers and emerging convolutions, against independent computations (torch's own transforms,
the exponential's power series, orthogonality and determinants of the dense matrix, per-context
loops, the Jacobian's sparsity) and the normalisation of flows onto bounded sets."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import transforms as T

from fokker import flows
from fokker.checks import check_normalized
from fokker.errors import DomainError
from fokker.tolerances import assert_close

from flows_testlib import jacobian, perturb

F64 = torch.float64


@pytest.mark.parametrize(
    "layer, reference",
    [
        (flows.Softplus(event_dim=0), T.SoftplusTransform()),
        (flows.Tanh(event_dim=0), T.TanhTransform()),
    ],
    ids=["Softplus", "Tanh"],
)
def test_fixed_layers_match_torch_transforms(layer: flows.Bijection, reference: T.Transform) -> None:
    x = torch.linspace(-6, 6, 101, dtype=F64)
    y, ladj = layer.call_and_ladj(x)
    assert_close(y, reference(x))
    assert_close(ladj, reference.log_abs_det_jacobian(x, reference(x)))
    back, ladj_inv = layer.inverse_and_ladj(y)
    assert_close(back, x, scale=6.0)
    assert_close(ladj_inv, -ladj, scale=12.0)


def test_leaky_relu_and_soft_clip_formulas() -> None:
    x = torch.linspace(-50, 50, 198, dtype=F64).reshape(-1, 3)
    y, ladj = flows.LeakyReLU(0.1).call_and_ladj(x)
    assert_close(y, torch.nn.functional.leaky_relu(x, 0.1), scale=50.0)
    assert_close(ladj, (x < 0).sum(-1).to(F64) * math.log(0.1), scale=100.0)
    y, ladj = flows.SoftClip(2.0).call_and_ladj(x)
    assert_close(y, x / (1 + x.abs() / 2))
    assert bool((y.abs() < 2).all())
    dydx = 1 / (1 + x.abs() / 2) ** 2  # d/dx x / (1 + |x|/B)
    assert_close(ladj, torch.log(dydx).sum(-1), scale=30.0)


def test_values_outside_the_image_raise_domain_errors() -> None:
    with pytest.raises(DomainError, match=r"y must lie in the image of Tanh \(\(-1, 1\)\); 1 value\(s\) outside"):
        flows.Tanh().inverse_and_ladj(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(DomainError, match=r"image of Softplus \(\(0, inf\)\)"):
        flows.Softplus().inverse_and_ladj(torch.tensor([[0.5, -1.0]]))
    with pytest.raises(DomainError, match=r"image of SoftClip \(\(-3, 3\)\)"):
        flows.SoftClip(3.0).inverse_and_ladj(torch.tensor([[-3.5, 0.0]]))
    flow = flows.Flow([flows.MAF(2, (8,)), flows.Softplus()], 2)
    with pytest.raises(DomainError, match="Softplus"):
        flow.log_prob(torch.tensor([[1.0, -0.5]]))


@pytest.mark.parametrize("last", ["Tanh", "SoftClip"])
def test_flow_onto_a_bounded_set_integrates_to_one(last: str) -> None:
    """A flow ending in tanh / soft clip is a density on the open box: its mass there is 1."""
    torch.manual_seed(0)
    end = flows.Tanh() if last == "Tanh" else flows.SoftClip(1.0)
    flow = perturb(flows.Flow([flows.AffineCoupling(2, (8,)), flows.Orthogonal(2), end], 2), scale=0.3).double()
    edge = 1 - 1e-9
    res = check_normalized(flow, ((-edge, edge), (-edge, edge)), num_points=401)
    assert res.passed, res


def test_householder_and_orthogonal_matrices() -> None:
    """The dense matrices ``W`` (images of the unit vectors): orthogonal, ``det = (-1)^K`` for K
    reflections and ``+1`` for the rotation."""
    torch.manual_seed(1)
    eye = torch.eye(5, dtype=F64)
    for layer, det in ((flows.Householder(5, 3), -1.0), (flows.Householder(5, 2), 1.0), (flows.Orthogonal(5), 1.0)):
        layer = perturb(layer, scale=0.5).double()
        W = layer.call_and_ladj(eye)[0].T  # column j = W e_j
        assert_close(W.T @ W, eye)
        assert_close(torch.linalg.det(W), torch.tensor(det, dtype=F64))


def test_matrix_exponential_is_the_power_series() -> None:
    torch.manual_seed(2)
    layer = perturb(flows.MatrixExponential(4), scale=0.4).double()
    M = layer.weight.detach()
    series, term = torch.eye(4, dtype=F64), torch.eye(4, dtype=F64)
    for k in range(1, 40):
        term = term @ M / k
        series = series + term
    x = torch.randn(6, 4, dtype=F64)
    y, ladj = layer.call_and_ladj(x)
    assert_close(y, x @ series.T)
    assert_close(ladj, torch.trace(M).expand(6))


@pytest.mark.parametrize(
    "make",
    [
        lambda: flows.InvertibleLinear(3, context_dim=2, hidden=(8,)),
        lambda: flows.Householder(3, 2, context_dim=2, hidden=(8,)),
        lambda: flows.MatrixExponential(3, context_dim=2, hidden=(8,)),
        lambda: flows.Orthogonal(3, context_dim=2, hidden=(8,)),
        lambda: flows.ElementwiseSpline(3, 4, 2.0, context_dim=2, hidden=(8,)),
    ],
    ids=["InvertibleLinear", "Householder", "MatrixExponential", "Orthogonal", "ElementwiseSpline"],
)
def test_conditional_linear_layers_use_each_examples_context(make) -> None:
    """A batch with one context per example equals the example-by-example loop, and the context
    changes the map (after the zero-initialised context network is perturbed)."""
    torch.manual_seed(3)
    layer = perturb(make(), scale=0.5).double()
    x, c = torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64)
    y, ladj = layer.call_and_ladj(x, c)
    for i in range(5):
        yi, li = layer.call_and_ladj(x[i], c[i])
        assert_close(y[i], yi)
        assert_close(ladj[i], li)
    y_other = layer.call_and_ladj(x, c.flip(0))[0]
    assert float((y_other - y).detach().abs().max()) > 1e-3
    # x broadcast against a batch of contexts
    assert layer.call_and_ladj(x[0], c)[0].shape == (5, 3)


def test_emerging_convolution_is_local_and_sees_both_sides() -> None:
    """Density direction of a 3x3 emerging convolution: ``dx[:, h, w] / dy[:, h', w']`` vanishes for
    ``|h - h'| > 1`` (one causal and one anti-causal 3x3 kernel) and is non-zero for pixels above
    *and* below (the receptive field emerges from the two triangular ones)."""
    torch.manual_seed(4)
    C, H, W = 2, 5, 5
    layer = perturb(flows.EmergingConv(C), scale=0.3).double()
    y = torch.randn(C, H, W, dtype=F64)
    J = jacobian(lambda v: layer.inverse_and_ladj(v)[0], y).reshape(C, H, W, C, H, W)
    rows = torch.arange(H)
    far = (rows[:, None] - rows[None, :]).abs() > 1  # (h, h')
    assert float(J.permute(1, 4, 0, 2, 3, 5)[far].abs().max()) == 0.0
    centre = J[:, 2, 2]  # output pixel (2, 2), all channels: (C, C, H, W) over inputs
    assert float(centre[:, :, 1].abs().max()) > 0 and float(centre[:, :, 3].abs().max()) > 0
