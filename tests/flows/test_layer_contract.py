"""The Pyro / torch / zuko contract of every public layer and of every builder's Flow.

What Pyro's transform harness (tests/distributions/test_transforms.py: inverse, shapes
through ``TransformedDistribution`` and ``forward_shape``/``inverse_shape``, log-det vs a
numerical Jacobian, a few MLE steps) and zuko's (test_transforms.py / test_flows.py: call,
inverse, Jacobian and inverse Jacobian vs ``slogdet``, ``call_and_ladj``, eval mode, saving)
check, written here for fokker layers and extended: float32 and float64, train and eval
mode, empty batches, caches off, state_dict round trip, ``.to(float64)``, gradients to every
parameter, ``TransformedDistribution`` scoring its own samples, Pyro's conditional protocol.
"""

from __future__ import annotations

import inspect

import pyro.distributions as pdist
import pytest
import torch

from fokker import flows
from fokker.errors import ShapeError
from fokker.tolerances import assert_close

from flows_testlib import (
    CTX,
    LAYERS,
    ForwardLogDetOff,
    ForwardOffSomewhere,
    InverseLogDetOff,
    InverseMapOff,
    LadjOff,
    LayerCase,
    assert_layer_contract,
    perturb,
)

F64 = torch.float64


def test_every_public_layer_class_is_in_the_contract() -> None:
    public = {
        name for name in flows.__all__
        if inspect.isclass(getattr(flows, name)) and issubclass(getattr(flows, name), flows.Bijection)
        and getattr(flows, name) is not flows.Bijection
    }
    covered = {type(case.make()).__name__ for case in LAYERS.values()}
    assert public <= covered, f"layers without a contract test: {sorted(public - covered)}"


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_contract(name: str, dtype: torch.dtype, train: bool, device: torch.device) -> None:
    assert_layer_contract(LAYERS[name], dtype, train, device)


# -- the contract test itself must reject broken layers (caches off: inverses are computed) --
class _EmptyBatchFails(flows.Planar):
    def call_and_ladj(self, z, context=None):
        if z.numel() == 0:
            raise RuntimeError("cannot reshape tensor of 0 elements")
        return super().call_and_ladj(z, context)


class _StateNotSaved(flows.ActNorm):
    """A hidden attribute changes the output but is not in the state dict."""

    def __init__(self, features: int) -> None:
        super().__init__(features)
        self.shift = torch.randn(features)

    def call_and_ladj(self, x, context=None):
        y, ladj = super().call_and_ladj(x, context)
        return y + self.shift, ladj

    def inverse_and_ladj(self, y, context=None):
        return super().inverse_and_ladj(y - self.shift, context)


BROKEN = {
    "inverse map": LayerCase(lambda: InverseMapOff(4, (8,)), (4,)),
    "inverse log-det": LayerCase(lambda: InverseLogDetOff(4, (8,)), (4,)),
    "forward log-det": LayerCase(lambda: ForwardLogDetOff(4, (8,)), (4,)),
    "ladj": LayerCase(lambda: LadjOff(4, (8,)), (4,)),
    "forward map on some inputs": LayerCase(lambda: ForwardOffSomewhere(4, (8,)), (4,)),
    "empty batch": LayerCase(lambda: _EmptyBatchFails(4), (4,)),
    "state not in state_dict": LayerCase(lambda: _StateNotSaved(4), (4,)),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_layer_contract_rejects_broken_layers(name: str) -> None:
    with pytest.raises((AssertionError, RuntimeError)):
        assert_layer_contract(BROKEN[name], torch.float32, train=False)


# -- Pyro's conditional protocol ---------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in sorted(LAYERS) if LAYERS[n].context_dim])
def test_conditional_layers_in_pyro_conditional_transformed_distribution(name: str) -> None:
    """``ConditionalTransformedDistribution(base, [layer, unconditional layer]).condition(c)``: a
    distribution over x whose log_prob is the change of variables with that context."""
    layer = perturb(LAYERS[name].make()).double()
    scale = perturb(flows.ActNorm(4)).double()
    assert isinstance(layer, pdist.conditional.ConditionalTransform)
    base = pdist.Normal(torch.zeros(4, dtype=F64), 1.0).to_event(1)
    cond = pdist.ConditionalTransformedDistribution(base, [layer, scale])
    c = torch.randn(5, CTX, dtype=F64)
    d = cond.condition(c)
    assert d.batch_shape == (5,) and d.event_shape == (4,)
    y = d.sample()
    assert y.shape == (5, 4)
    z1, l1 = scale.inverse_and_ladj(y)
    z0, l0 = layer.inverse_and_ladj(z1, c)
    assert_close(d.log_prob(y), base.log_prob(z0) + l0 + l1)
    with pytest.raises(ShapeError, match="conditional"):
        layer(torch.zeros(4, dtype=F64))  # a conditional layer needs a context


# -- every builder's Flow ---------------------------------------------------------------------
BUILT = {
    "nice": lambda: flows.nice(3, 2, (8,)),
    "nice|ctx": lambda: flows.nice(3, 2, (8,), context_dim=2),
    "realnvp|ctx": lambda: flows.realnvp(3, 2, (8,), context_dim=2),
    "maf|ctx": lambda: flows.maf(3, 2, (8,), context_dim=2),
    "iaf": lambda: flows.iaf(3, 2, (8,)),
    "nsf|ctx": lambda: flows.nsf(3, 2, (8,), context_dim=2, bins=4, bound=2.0),
    "nsf_ar": lambda: flows.nsf(3, 2, (8,), kind="autoregressive", bins=4, bound=2.0),
    "naf|ctx": lambda: flows.naf(3, 2, (8,), context_dim=2, num_units=3),
    "unaf": lambda: flows.unaf(3, 2, (8,), signal=2, integrand_hidden=(8,), num_nodes=16),
    "sospf|ctx": lambda: flows.sospf(3, 2, (8,), context_dim=2, degree=2, num_polynomials=2),
    "bnaf|ctx": lambda: flows.bnaf(3, 2, (3,), context_dim=2),
    "glow": lambda: flows.glow((1, 4, 4), levels=2, depth=1, hidden=4),
    "glow(emerging)": lambda: flows.glow((1, 4, 4), levels=2, depth=1, hidden=4, conv="emerging"),
    "planar_flow": lambda: flows.planar_flow(3, 2),
    "planar_flow(sylvester)": lambda: flows.planar_flow(3, 2, kind="sylvester", hidden=2),
    "residual_flow": lambda: flows.residual_flow(3, 2, (8,), log_det="exact"),
    "ffjord": lambda: flows.ffjord(2, hidden=(8,), rtol=1e-7, atol=1e-7),
}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(BUILT))
def test_builder_flow_contract(name: str, train: bool) -> None:
    """log_prob vs the autograd change of variables of the whole flow (float64), the Pyro
    distribution, sample_and_log_prob, gradients, empty batches, state_dict and float32."""
    from flows_testlib import flow_log_prob_autograd

    torch.manual_seed(0)
    flow = perturb(BUILT[name](), scale=0.2).double().train(train)
    ev = flow.event_shape
    ctx = torch.randn(4, flow.context_dim, dtype=F64) if flow.context_dim else None
    x = torch.randn(4, *ev, dtype=F64)
    lp = flow.log_prob(x, ctx)
    loose = "ffjord" in name or "residual" in name or "unaf" in name  # ODE, series, quadrature
    ref = flow_log_prob_autograd(flow, x.reshape(4, -1).reshape(4, *ev), ctx) if len(ev) == 1 else None
    if ref is not None:
        assert_close(lp, ref, loose=loose)
    assert_close(flow.distribution(ctx).log_prob(x), lp, loose=loose)
    y, lpy = flow.sample_and_log_prob((2,), ctx)
    assert y.shape == (2, *((4,) if ctx is not None else ()), *ev)
    assert_close(flow.log_prob(y, ctx), lpy, loose=True)
    # gradients reach every parameter through the training loss
    params = dict(flow.named_parameters())
    grads = torch.autograd.grad(flow.loss(x if ctx is None else (x, ctx)), list(params.values()), allow_unused=True)
    assert all(g is not None for g in grads), [n for n, g in zip(params, grads) if g is None]
    # empty batch
    assert flow.log_prob(torch.zeros(0, *ev, dtype=F64), None if ctx is None else ctx[:0]).shape == (0,)
    assert flow.sample((0,), None if ctx is None else ctx[:1]).shape[0] == 0
    # state_dict into a fresh flow: identical log_prob; float32 copy agrees
    flow.eval()
    fresh = BUILT[name]().double().eval()
    fresh.load_state_dict(flow.state_dict())
    torch.testing.assert_close(fresh.log_prob(x, ctx), flow.log_prob(x, ctx), rtol=0, atol=0)
    f32 = fresh.float()
    assert_close(f32.log_prob(x.float(), None if ctx is None else ctx.float()), flow.log_prob(x, ctx).float(), loose=True)
