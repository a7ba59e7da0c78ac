"""Bad input as a new user would try it: a clear fokker error naming the argument, never a raw
torch error deep in a network; empty batches work."""

from __future__ import annotations

import pytest
import torch

from fokker import flows
from fokker.errors import DeviceDtypeError, NonFiniteError, ParameterError, ShapeError

from flows_testlib import BUILDERS, CTX, UNCONDITIONAL_BUILDERS


@pytest.mark.parametrize("bad", [torch.float16, torch.float64])
def test_dtype_mismatch_names_the_argument_and_the_flow_dtype(bad: torch.dtype) -> None:
    flow = flows.maf(3, 2, (8,), context_dim=2)
    x, c = torch.randn(4, 3), torch.randn(4, 2)
    with pytest.raises(DeviceDtypeError, match=rf"x has dtype {bad} but the flow has dtype torch.float32"):
        flow.log_prob(x.to(bad), c)
    with pytest.raises(DeviceDtypeError, match=rf"context has dtype {bad} but the flow has dtype torch.float32"):
        flow.log_prob(x, c.to(bad))
    with pytest.raises(DeviceDtypeError, match=rf"context has dtype {bad}"):
        flow.sample((2,), c.to(bad))
    with pytest.raises(DeviceDtypeError, match=rf"context has dtype {bad}"):
        flow.distribution(c.to(bad))
    with pytest.raises(DeviceDtypeError, match=rf"x has dtype {bad}"):
        flow.loss((x.to(bad), c))
    plain = flows.nsf(3, 2, (8,)).double()
    with pytest.raises(DeviceDtypeError, match=r"x has dtype torch.float32 but the flow has dtype torch.float64"):
        plain.log_prob(torch.randn(4, 3))
    with pytest.raises(DeviceDtypeError, match="floating-point"):
        plain.log_prob(torch.zeros(4, 3, dtype=torch.long))


def test_device_mismatch_names_the_argument() -> None:
    """A tensor on another device is rejected before any computation (the meta device stands in for a
    second device on CPU-only machines; CUDA is used where present)."""
    other = "cuda" if torch.cuda.is_available() else "meta"
    flow = flows.maf(3, 2, (8,))
    with pytest.raises(DeviceDtypeError, match=f"x is on device {other}"):
        flow.log_prob(torch.randn(4, 3, device=other))


@pytest.mark.parametrize("name", sorted(BUILDERS) + sorted(UNCONDITIONAL_BUILDERS))
def test_empty_batch(name: str) -> None:
    if name in BUILDERS:
        flow, ctx = BUILDERS[name](3, 2), torch.randn(0, 2)
    else:
        flow, ctx = UNCONDITIONAL_BUILDERS[name](), None
    x = torch.zeros(0, *flow.event_shape)
    lp = flow.log_prob(x, ctx)
    assert lp.shape == (0,)
    assert flow.loss(x if ctx is None else (x, ctx)).isnan()  # the mean of nothing
    assert flow.sample((0,), None if ctx is None else torch.randn(2)).shape == (0, *flow.event_shape)
    y, lpy = flow.sample_and_log_prob(0, None if ctx is None else torch.randn(2))
    assert y.shape == (0, *flow.event_shape) and lpy.shape == (0,)
    assert flow.distribution(None if ctx is None else torch.randn(2)).log_prob(x).shape == (0,)


def test_sample_shape_must_be_non_negative_integers() -> None:
    flow = flows.maf(2, 1, (4,))
    for bad in [(-1,), -3, (2.5,), "10", (True,), None]:
        with pytest.raises(ParameterError, match="sample_shape must be a tuple of non-negative integers"):
            flow.sample(bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="sample_shape"):
        flow.rsample((-1,))
    with pytest.raises(ParameterError, match="sample_shape"):
        flow.sample_and_log_prob((3, -2))
    assert flow.sample(3).shape == (3, 2) and flow.sample(torch.Size([2, 1])).shape == (2, 1, 2)


HIDDEN_BAD = [(0,), (8, -1), (8.0,), 8, "64", (True,)]


@pytest.mark.parametrize("hidden", HIDDEN_BAD, ids=[repr(h) for h in HIDDEN_BAD])
def test_hidden_sizes_are_validated_everywhere(hidden: object) -> None:
    msg = r"hidden must be a sequence of positive integers"
    for make in (
        lambda: flows.maf(2, hidden=hidden), lambda: flows.iaf(2, hidden=hidden),
        lambda: flows.nsf(2, hidden=hidden), lambda: flows.nsf(2, hidden=hidden, kind="autoregressive"),
        lambda: flows.realnvp(2, hidden=hidden), lambda: flows.nice(2, hidden=hidden),
        lambda: flows.residual_flow(2, hidden=hidden), lambda: flows.ffjord(2, hidden=hidden),
        lambda: flows.MAF(2, hidden), lambda: flows.AffineCoupling(2, hidden), lambda: flows.MADE(2, 2, hidden),
        lambda: flows.ResidualFlow(2, hidden), lambda: flows.ContinuousFlow(2, hidden=hidden),
        lambda: flows.TimeMLP(2, hidden), lambda: flows.MLP(2, 2, hidden),
        lambda: flows.naf(2, hidden=hidden), lambda: flows.unaf(2, hidden=hidden), lambda: flows.sospf(2, hidden=hidden),
        lambda: flows.bnaf(2, hidden=hidden), lambda: flows.BlockAutoregressive(2, hidden),
        lambda: flows.UnconstrainedMonotone(hidden=hidden), lambda: flows.ElementwiseSpline(2, context_dim=1, hidden=hidden),
        lambda: flows.Householder(2, context_dim=1, hidden=hidden), lambda: flows.MatrixExponential(2, hidden=hidden),
        lambda: flows.InvertibleLinear(2, context_dim=1, hidden=hidden),
    ):
        with pytest.raises(ParameterError, match=msg):
            make()


def test_counts_and_sizes_are_validated() -> None:
    cases = [
        (lambda: flows.maf(0), r"features must be an integer >= 1; got 0"),
        (lambda: flows.maf(2.0), r"features must be an integer >= 1; got 2.0"),  # type: ignore[arg-type]
        (lambda: flows.realnvp(1), r"features must be an integer >= 2; got 1"),
        (lambda: flows.nice(3, transforms=0), r"transforms must be an integer >= 1; got 0"),
        (lambda: flows.nsf(3, bins=0), r"bins must be an integer >= 1; got 0"),
        (lambda: flows.nsf(3, kind="radial"), r"kind must be 'coupling' or 'autoregressive'"),
        (lambda: flows.maf(3, context_dim=-1), r"context_dim must be a non-negative integer"),
        (lambda: flows.glow((1, 6, 6), levels=2), r"divisible by 2\*\*levels=4"),
        (lambda: flows.glow((1, 4, 4), depth=0), r"depth must be an integer >= 1"),
        (lambda: flows.planar_flow(2, kind="planar", hidden=2), r"hidden is the number of Sylvester units"),
        (lambda: flows.ResidualFlow(2, num_terms=0, log_det="series"), r"num_terms must be an integer >= 1"),
        (lambda: flows.Sylvester(2, hidden=3), r"hidden must be an integer <= features=2"),
        (lambda: flows.Coupling(flows.Affine(), torch.ones(4, dtype=torch.bool)), "mask must have both"),
        (lambda: flows.Coupling("affine", flows.half_mask(4)), "transform must be an ElementwiseMap"),  # type: ignore[arg-type]
        (lambda: flows.MaskedAutoregressive(flows.Affine(), 3, one_pass="sideways"), "one_pass"),
        (lambda: flows.Permute([0, 0, 1]), "perm must be a permutation"),
        (lambda: flows.RationalQuadratic(bins=0), "bins must be an integer"),
        (lambda: flows.Affine(scale_bound=-1.0), "scale_bound must be a positive"),
        (lambda: flows.MAF(2, activation=torch.relu), "activation must be an nn.Module class"),  # type: ignore[arg-type]
        (lambda: flows.naf(2, num_units=0), r"num_units must be an integer >= 1; got 0"),
        (lambda: flows.sospf(2, degree=-1), r"degree must be an integer >= 0; got -1"),
        (lambda: flows.sospf(2, slope=0.0), r"slope must be a positive"),
        (lambda: flows.unaf(2, num_nodes=0), r"num_nodes must be an integer >= 1; got 0"),
        (lambda: flows.unaf(2, integrand_hidden=(0,)), r"integrand_hidden must be a sequence of positive integers"),
        (lambda: flows.bnaf(2, hidden=()), r"hidden must hold at least one layer size"),
        (lambda: flows.bnaf(2, transforms=0), r"transforms must be an integer >= 1; got 0"),
        (lambda: flows.Householder(3, num_reflections=0), r"num_reflections must be an integer >= 1"),
        (lambda: flows.EmergingConv(2, kernel_size=2), r"kernel_size must be odd; got 2"),
        (lambda: flows.LeakyReLU(0.0), r"negative_slope must be a positive"),
        (lambda: flows.SoftClip(-1.0), r"bound must be a positive"),
        (lambda: flows.Tanh(event_dim=-1), r"event_dim must be an integer >= 0"),
        (lambda: flows.glow((1, 4, 4), conv="3x3"), r"conv must be '1x1' or 'emerging'; got '3x3'"),
        (lambda: flows.InvertibleLinear(2, event_dim=3, context_dim=2), r"context_dim > 0 is supported for vectors"),
        (lambda: flows.Elementwise("affine", 2), "transform must be an ElementwiseMap"),  # type: ignore[arg-type]
    ]
    for make, msg in cases:
        with pytest.raises(ParameterError, match=msg):
            make()


def test_shape_and_context_errors() -> None:
    flow = flows.maf(3, 2, (8,))
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 3\); got shape \(4, 2\)"):
        flow.log_prob(torch.randn(4, 2))
    with pytest.raises(NonFiniteError, match="x contains 1 non-finite"):
        flow.log_prob(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        flow.log_prob([[0.0, 0.0, 0.0]])  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="unconditional"):
        flow.sample((2,), context=torch.zeros(2))
    with pytest.raises(ShapeError, match="batch must be a tensor or an"):
        flow.loss((torch.zeros(2, 3),))
    cond = flows.maf(3, 2, (8,), context_dim=CTX)
    with pytest.raises(ShapeError, match=rf"context must be a tensor of shape \(\.\.\., {CTX}\)"):
        cond.log_prob(torch.randn(2, 3))
    with pytest.raises(ShapeError, match=rf"context must have shape \(\.\.\., {CTX}\); got shape \(2, 2\)"):
        cond.sample((2,), torch.randn(2, 2))
    layer = flows.MAF(3, context_dim=CTX)
    with pytest.raises(ShapeError, match="context"):
        layer.call_and_ladj(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="is conditional"):
        layer(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="unconditional"):
        flows.MAF(3).call_and_ladj(torch.randn(2, 3), torch.randn(2, CTX))
    with pytest.raises(ParameterError, match="pass context_dim to Flow"):
        flows.Flow([layer], 3)
    with pytest.raises(ShapeError, match=r"mask must have shape \(3,\) or \(3, H, W\) for features=3; got shape \(2,\)"):
        flows.AffineCoupling(3, mask=torch.tensor([True, False]))
