"""Shared helpers for the flow tests: layer factories, the layer contract and autograd oracles."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as pdist
import torch
from torch import nn

from fokker import flows
from fokker.checks import check_inverse, check_log_det
from fokker.tolerances import assert_close

CTX = 3  # context size used by the conditional layers


@torch.no_grad()
def perturb(module: nn.Module, scale: float = 0.3, seed: int = 1) -> nn.Module:
    """Add seeded noise to every parameter so no layer sits at its (identity) init.

    The in-place change also tells an ActNorm that its parameters were set (no
    data-dependent initialisation afterwards).
    """
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))
    return module


@dataclass(frozen=True)
class LayerCase:
    """A public layer in a test configuration.

    ``make()`` returns the layer (float32, unperturbed); ``event_shape`` of its input (noise
    side); ``context_dim``; ``loose``: its inverse or log-det goes through an iterative solver
    (ODE, fixed point) so rounding tolerances are replaced by the loose ones in float64;
    ``train_is_bijective``: False for batch norm, whose training mode normalises by the batch;
    ``real_codomain``: False for layers onto a subset (softplus, tanh): their inverse is tested on
    their own outputs only.
    """

    make: Callable[[], flows.Bijection]
    event_shape: tuple[int, ...]
    context_dim: int = 0
    loose: bool = False
    train_is_bijective: bool = True
    scale: float = 0.3  # size of the parameter perturbation (deep image stacks need less to stay well conditioned)
    real_codomain: bool = True


D = 4
IMAGE_SHAPE = (2, 4, 4)


def _multiscale() -> flows.Bijection:
    return flows.glow(IMAGE_SHAPE, levels=2, depth=1, hidden=4).transforms[0]


# every public Bijection class appears at least once (tests/flows/test_layer_contract.py checks this)
LAYERS: dict[str, LayerCase] = {
    "Coupling": LayerCase(lambda: flows.Coupling(flows.Affine(), flows.alternating_mask(D), (8,)), (D,)),
    "AdditiveCoupling": LayerCase(lambda: flows.AdditiveCoupling(D, (8,)), (D,)),
    "AffineCoupling": LayerCase(lambda: flows.AffineCoupling(D, (8,), mask=flows.alternating_mask(D)), (D,)),
    "SplineCoupling": LayerCase(lambda: flows.SplineCoupling(D, (8,), bins=4, bound=2.0), (D,)),
    "MaskedAutoregressive": LayerCase(
        lambda: flows.MaskedAutoregressive(flows.RationalQuadratic(4, 2.0), D, (8,), rank=torch.tensor([3, 1, 4, 2])), (D,)
    ),
    "MAF": LayerCase(lambda: flows.MAF(D, (8,)), (D,)),
    "IAF": LayerCase(lambda: flows.IAF(D, (8,), rank=torch.arange(D, 0, -1)), (D,)),
    "SplineAutoregressive": LayerCase(lambda: flows.SplineAutoregressive(D, (8,), bins=4, bound=2.0), (D,)),
    "SplineAutoregressive(forward)": LayerCase(
        lambda: flows.SplineAutoregressive(D, (8,), bins=4, bound=2.0, one_pass="forward"), (D,)
    ),
    "ActNorm": LayerCase(lambda: flows.ActNorm(D), (D,)),
    "ActNorm(image)": LayerCase(lambda: flows.ActNorm(IMAGE_SHAPE[0], event_dim=3), IMAGE_SHAPE),
    "InvertibleLinear": LayerCase(lambda: flows.InvertibleLinear(D), (D,)),
    "InvertibleConv1x1": LayerCase(lambda: flows.InvertibleConv1x1(IMAGE_SHAPE[0]), IMAGE_SHAPE),
    "Permute": LayerCase(lambda: flows.Permute([2, 0, 3, 1]), (D,)),
    "Reverse": LayerCase(lambda: flows.Reverse(D), (D,)),
    "Squeeze": LayerCase(lambda: flows.Squeeze(IMAGE_SHAPE), IMAGE_SHAPE),
    "Multiscale": LayerCase(_multiscale, IMAGE_SHAPE, scale=0.05),
    "AffineCoupling(image)": LayerCase(
        lambda: flows.AffineCoupling(IMAGE_SHAPE[0], (4,), mask=flows.checkerboard_mask(IMAGE_SHAPE)), IMAGE_SHAPE
    ),
    "Planar": LayerCase(lambda: flows.Planar(D), (D,)),
    "Radial": LayerCase(lambda: flows.Radial(D), (D,)),
    "Sylvester": LayerCase(lambda: flows.Sylvester(D, hidden=3), (D,)),
    "BatchNormFlow": LayerCase(lambda: flows.BatchNormFlow(D), (D,), train_is_bijective=False),
    "ResidualFlow": LayerCase(lambda: flows.ResidualFlow(D, hidden=(8,), log_det="exact"), (D,), loose=True),
    "ContinuousFlow": LayerCase(
        lambda: flows.ContinuousFlow(3, hidden=(8,), rtol=1e-7, atol=1e-7), (3,), loose=True
    ),
    # monotone maps with a root-finding inverse, block autoregressive
    "NeuralAutoregressive": LayerCase(lambda: flows.NeuralAutoregressive(D, (8,), num_units=4), (D,)),
    "UnconstrainedNeuralAutoregressive": LayerCase(
        lambda: flows.UnconstrainedNeuralAutoregressive(D, (8,), signal=3, integrand_hidden=(8,), num_nodes=16),
        (D,), loose=True,  # the map is a quadrature of the integral whose exact log-derivative is the log-det
    ),
    "SumOfSquaresAutoregressive": LayerCase(
        lambda: flows.SumOfSquaresAutoregressive(D, (8,), degree=3, num_polynomials=2, bound=3.0), (D,)
    ),
    "Coupling(DeepSigmoid)": LayerCase(lambda: flows.Coupling(flows.DeepSigmoid(3), flows.half_mask(D), (8,)), (D,)),
    "BlockAutoregressive": LayerCase(lambda: flows.BlockAutoregressive(D, (3, 2)), (D,)),
    # elementwise, fixed, linear, image
    "Elementwise(SumOfSquares)": LayerCase(lambda: flows.Elementwise(flows.SumOfSquares(2, 2, bound=3.0), D), (D,)),
    "ElementwiseSpline": LayerCase(lambda: flows.ElementwiseSpline(D, bins=4, bound=2.0), (D,)),
    "LeakyReLU": LayerCase(lambda: flows.LeakyReLU(0.2), (D,)),
    "Softplus": LayerCase(lambda: flows.Softplus(), (D,), real_codomain=False),
    "Tanh": LayerCase(lambda: flows.Tanh(), (D,), real_codomain=False),
    "SoftClip(image)": LayerCase(lambda: flows.SoftClip(2.0, event_dim=3), IMAGE_SHAPE, real_codomain=False),
    "Householder": LayerCase(lambda: flows.Householder(D, 3), (D,)),
    "MatrixExponential": LayerCase(lambda: flows.MatrixExponential(D), (D,)),
    "Orthogonal": LayerCase(lambda: flows.Orthogonal(D), (D,)),
    "EmergingConv": LayerCase(lambda: flows.EmergingConv(IMAGE_SHAPE[0]), IMAGE_SHAPE, scale=0.1),
    # conditional layers
    "NeuralAutoregressive|ctx": LayerCase(lambda: flows.NeuralAutoregressive(D, (8,), context_dim=CTX, num_units=3), (D,), CTX),
    "BlockAutoregressive|ctx": LayerCase(lambda: flows.BlockAutoregressive(D, (2,), context_dim=CTX), (D,), CTX),
    "ElementwiseSpline|ctx": LayerCase(
        lambda: flows.ElementwiseSpline(D, bins=4, bound=2.0, context_dim=CTX, hidden=(8,)), (D,), CTX
    ),
    "Elementwise(Affine)|ctx": LayerCase(lambda: flows.Elementwise(flows.Affine(), D, CTX, (8,)), (D,), CTX),
    "InvertibleLinear|ctx": LayerCase(lambda: flows.InvertibleLinear(D, context_dim=CTX, hidden=(8,)), (D,), CTX),
    "Householder|ctx": LayerCase(lambda: flows.Householder(D, 2, context_dim=CTX, hidden=(8,)), (D,), CTX),
    "MatrixExponential|ctx": LayerCase(lambda: flows.MatrixExponential(D, context_dim=CTX, hidden=(8,)), (D,), CTX),
    "Orthogonal|ctx": LayerCase(lambda: flows.Orthogonal(D, context_dim=CTX, hidden=(8,)), (D,), CTX),
    "AdditiveCoupling|ctx": LayerCase(lambda: flows.AdditiveCoupling(D, (8,), context_dim=CTX), (D,), CTX),
    "AffineCoupling|ctx": LayerCase(lambda: flows.AffineCoupling(D, (8,), context_dim=CTX), (D,), CTX),
    "SplineCoupling|ctx": LayerCase(
        lambda: flows.SplineCoupling(D, (8,), context_dim=CTX, bins=4, bound=2.0), (D,), CTX
    ),
    "MAF|ctx": LayerCase(lambda: flows.MAF(D, (8,), context_dim=CTX), (D,), CTX),
    "IAF|ctx": LayerCase(lambda: flows.IAF(D, (8,), context_dim=CTX), (D,), CTX),
    "SplineAutoregressive|ctx": LayerCase(
        lambda: flows.SplineAutoregressive(D, (8,), context_dim=CTX, bins=4, bound=2.0), (D,), CTX
    ),
}

# builder name -> factory(features, context_dim) of a small flow, for every builder
BUILDERS: dict[str, Callable[[int, int], flows.Flow]] = {
    "nice": lambda d, c: flows.nice(d, 2, (8,), context_dim=c),
    "realnvp": lambda d, c: flows.realnvp(d, 2, (8,), context_dim=c),
    "maf": lambda d, c: flows.maf(d, 2, (8,), context_dim=c),
    "iaf": lambda d, c: flows.iaf(d, 2, (8,), context_dim=c),
    "nsf": lambda d, c: flows.nsf(d, 2, (8,), context_dim=c, bins=4, bound=2.0),
    "nsf_ar": lambda d, c: flows.nsf(d, 2, (8,), context_dim=c, kind="autoregressive", bins=4, bound=2.0),
    "naf": lambda d, c: flows.naf(d, 2, (8,), context_dim=c, num_units=3),
    "unaf": lambda d, c: flows.unaf(d, 2, (8,), context_dim=c, signal=2, integrand_hidden=(8,), num_nodes=16),
    "sospf": lambda d, c: flows.sospf(d, 2, (8,), context_dim=c, degree=2, num_polynomials=2),
    "bnaf": lambda d, c: flows.bnaf(d, 2, (3,), context_dim=c),
}
CONDITIONAL_BUILDERS = sorted(BUILDERS)
UNCONDITIONAL_BUILDERS: dict[str, Callable[[], flows.Flow]] = {
    "glow": lambda: flows.glow((1, 4, 4), levels=2, depth=1, hidden=4),
    "glow(emerging)": lambda: flows.glow((1, 4, 4), levels=2, depth=1, hidden=4, conv="emerging"),
    "planar_flow": lambda: flows.planar_flow(3, 2),
    "planar_flow(radial)": lambda: flows.planar_flow(3, 2, kind="radial"),
    "planar_flow(sylvester)": lambda: flows.planar_flow(3, 2, kind="sylvester", hidden=2),
    "residual_flow": lambda: flows.residual_flow(3, 2, (8,), log_det="exact"),
    "ffjord": lambda: flows.ffjord(2, hidden=(8,), rtol=1e-7, atol=1e-7),
}


def jacobian(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Dense Jacobian of ``f`` at one event ``x`` (flattened to a square matrix)."""
    J = torch.autograd.functional.jacobian(f, x)
    return J.reshape(x.numel(), x.numel())


def slogdet_autograd(layer: flows.Bijection, z: torch.Tensor) -> torch.Tensor:
    """``log|det dT/dz|`` of a vector layer at each row of ``z`` from the autograd Jacobian."""
    return torch.stack([torch.linalg.slogdet(jacobian(lambda v: layer.call_and_ladj(v)[0], zi))[1] for zi in z])


def flow_log_prob_autograd(flow: flows.Flow, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``log p(x)`` by the change of variables with the autograd Jacobian of the whole inverse map.

    ``x`` is ``(n, d)``, ``context`` ``(n, c)`` or ``None``: event by event,
    ``log N(z; 0, I) + log|det dz/dx|`` with ``z = T^{-1}(x)`` from ``flow.inverse_and_ladj``'s
    map only (its log-det output is not used).
    """
    out = []
    for i in range(x.shape[0]):
        ci = None if context is None else context[i]

        def inv(v: torch.Tensor, ci: torch.Tensor | None = ci) -> torch.Tensor:
            return flow.inverse_and_ladj(v, ci)[0]

        z = inv(x[i])
        J = jacobian(inv, x[i])
        base = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum()
        out.append(base + torch.linalg.slogdet(J)[1])
    return torch.stack(out)


def _outputs(
    layer: flows.Bijection, v: torch.Tensor, ctx: torch.Tensor | None, real_codomain: bool = True
) -> list[torch.Tensor]:
    y, ladj = layer.call_and_ladj(v, ctx)
    same = layer.forward_shape(v.shape) == v.shape and real_codomain
    x, ladj_inv = layer.inverse_and_ladj(v if same else y, ctx)
    return [y, ladj, x, ladj_inv]


def assert_layer_contract(
    case: LayerCase, dtype: torch.dtype, train: bool, device: torch.device = torch.device("cpu"), seed: int = 0
) -> None:
    """The contract of a fokker layer (Pyro's and zuko's transform harnesses, extended).

    Raises ``AssertionError`` (with the failing check) when the layer breaks it; see
    tests/flows/test_layer_contract.py for the layers, and for deliberately broken layers it
    must reject.
    """
    torch.manual_seed(seed)
    layer = perturb(case.make(), scale=case.scale, seed=seed + 1).to(device=device, dtype=dtype).train(train)
    ctx = torch.randn(CTX, dtype=dtype, device=device) if case.context_dim else None
    ev = case.event_shape
    k = len(ev)
    # metadata: a TransformModule, bijective, consistent event dims, forward/inverse shapes
    assert isinstance(layer, pdist.TransformModule) and layer.bijective
    assert layer.domain.event_dim == layer.codomain.event_dim == layer.event_dim == k
    out_ev = tuple(layer.forward_shape(ev))
    assert tuple(layer.inverse_shape(out_ev)) == ev
    assert tuple(layer.forward_shape((5, 3) + ev)) == (5, 3) + out_ev
    t = layer.condition(ctx) if ctx is not None else layer
    assert isinstance(t, torch.distributions.Transform) and t.event_dim == k
    assert t._cache_size == 0, "caches must be off by default"
    x = 1.5 * torch.randn(6, *ev, dtype=dtype, device=device)
    # round trips and log-dets on every path, against autograd (the checkers are tested
    # against broken layers in tests/checks/test_flow_checks.py)
    if train and not case.train_is_bijective:
        y, ladj = layer.call_and_ladj(x, ctx)
        assert y.shape == (6, *out_ev) and ladj.shape == (6,)
    else:
        loose = case.loose and dtype == torch.float64
        if tuple(out_ev) == ev:
            # y defaults to x (any point of R^d inverts); a layer onto a subset inverts its own outputs
            y_in = None if case.real_codomain else t(x).detach()
            res = check_inverse(layer, x, y_in, context=ctx, loose=loose)
            assert res.passed, res
        else:  # shape changing: round trip of x only (y has the output shape)
            y = layer.call_and_ladj(x, ctx)[0]
            assert y.shape == (6, *out_ev)
            assert_close(layer.inverse_and_ladj(y, ctx)[0], x)
        if tuple(out_ev) == ev:
            res = check_log_det(layer, x[:3], context=ctx, loose=loose)
            assert res.passed, res
        # TransformedDistribution(base, [layer]) reports its event shape and scores its own samples
        base = pdist.Normal(torch.zeros(ev, dtype=dtype, device=device), 1.0).to_event(k)
        td = pdist.TransformedDistribution(base, [t])
        assert tuple(td.event_shape) == out_ev
        z = base.sample((5,))
        y, ladj = layer.call_and_ladj(z, ctx)
        assert_close(td.log_prob(y), base.log_prob(z) - ladj, loose=case.loose)
    # empty batch
    empty = torch.zeros(0, *ev, dtype=dtype, device=device)
    y0, l0 = layer.call_and_ladj(empty, ctx)
    x0, li0 = layer.inverse_and_ladj(y0, ctx)
    assert y0.shape == (0, *out_ev) and l0.shape == (0,) and x0.shape == (0, *ev) and li0.shape == (0,)
    # gradients reach every parameter, in the density direction (inverse) and the sampling one
    params = [p for p in layer.parameters() if p.requires_grad]
    if params:
        xg = layer.call_and_ladj(x, ctx)[0].detach()
        z, ladj_inv = layer.inverse_and_ladj(xg, ctx)
        y2, ladj2 = layer.call_and_ladj(x, ctx)
        loss = (z**2).sum() + ladj_inv.sum() + (y2**2).sum() + ladj2.sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        names = [n for n, p in layer.named_parameters() if p.requires_grad]
        missing = [n for n, g in zip(names, grads) if g is None or not bool(g.abs().sum() > 0)]
        assert not missing, f"no gradient reaches {missing}"
    # state_dict round trip into a fresh layer gives identical outputs; .to(float64) works
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh = case.make().to(device=device, dtype=dtype).train(train)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    layer.eval(), fresh.eval()
    for a, b in zip(_outputs(layer, x, ctx, case.real_codomain), _outputs(fresh, x, ctx, case.real_codomain)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    wide = layer.to(torch.float64)
    y64 = wide.call_and_ladj(x.double(), None if ctx is None else ctx.double())[0]
    assert y64.dtype == torch.float64


# -- deliberately broken layers: one wrong path each (the checkers and the contract must reject them) --
class ForwardLogDetOff(flows.AffineCoupling):
    """``call_and_ladj``'s log-det is off by 0.05 nats (the map is right)."""

    def call_and_ladj(self, x, context=None):
        y, ladj = super().call_and_ladj(x, context)
        return y, ladj + 0.05


class InverseLogDetOff(flows.AffineCoupling):
    """``inverse_and_ladj``'s log-det (the path log_prob and training use) is off by 0.05."""

    def inverse_and_ladj(self, y, context=None):
        x, ladj = super().inverse_and_ladj(y, context)
        return x, ladj + 0.05


class LadjOff(flows.MAF):
    """Only ``ladj`` (and so the torch protocol's ``log_abs_det_jacobian``) is off by 0.05."""

    def ladj(self, x, y, context=None):
        return super().ladj(x, y, context) + 0.05


class InverseMapOff(flows.AffineCoupling):
    """The inverse map is wrong by 1e-2 (its log-det is right)."""

    def inverse_and_ladj(self, y, context=None):
        x, ladj = super().inverse_and_ladj(y, context)
        return x + 1e-2, ladj


class ForwardOffSomewhere(flows.MAF):
    """The sampling path ``call`` is wrong where the first coordinate exceeds 1."""

    def call(self, x, context=None):
        y = super().call(x, context)
        return torch.where(x[..., :1] > 1, y + 0.1, y)
