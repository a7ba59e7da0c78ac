"""Every layer: inverse both ways, log-det vs autograd slogdet (float64), inverse log-det,
Jacobian sparsity, gradients to every parameter, double backward, state_dict round trip,
torch Transform metadata."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import constraints

from fokker import flows
from fokker.errors import ShapeError
from fokker.tolerances import assert_close

from flows_testlib import CTX, IMAGE_LAYERS, IMAGE_SHAPE, VECTOR_LAYERS, jacobian, make_vector_layer, perturb

F64 = torch.float64


@pytest.mark.parametrize("name", sorted(VECTOR_LAYERS))
@settings(max_examples=4)
@given(d=st.integers(2, 5), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_vector_layer_inverse_and_log_det(name: str, d: int, batch: int, seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    layer, ctx = make_vector_layer(name, d, F64, device)
    x = 2 * torch.randn(batch, d, dtype=F64, device=device)
    y, ladj = layer.call_and_ladj(x, ctx)
    assert y.shape == x.shape and ladj.shape == (batch,)
    assert_close(layer.call(x, ctx), y)  # value-only sampling path
    # inverse both ways on arbitrary inputs
    x_back, ladj_inv = layer.inverse_and_ladj(y, ctx)
    assert_close(x_back, x, loose=True)
    assert_close(ladj_inv, -ladj, loose=True)
    y2 = 3 * torch.randn(batch, d, dtype=F64, device=device)
    assert_close(layer.call_and_ladj(layer.inverse_and_ladj(y2, ctx)[0], ctx)[0], y2, loose=True)
    # log-det vs slogdet of the autograd Jacobian, both directions
    for i in range(batch):
        J = jacobian(lambda v: layer.call_and_ladj(v, ctx)[0], x[i])
        assert_close(ladj[i], torch.linalg.slogdet(J)[1], loose=True)
        Jinv = jacobian(lambda v: layer.inverse_and_ladj(v, ctx)[0], y[i])
        assert_close(ladj_inv[i], torch.linalg.slogdet(Jinv)[1], loose=True)
    # torch Transform protocol agrees with the fast path
    t = layer.condition(ctx)
    assert_close(t(x), y)
    assert_close(t.log_abs_det_jacobian(x, y), ladj, loose=True)
    assert_close(t.inv(y), x, loose=True)


@pytest.mark.parametrize("name", sorted(IMAGE_LAYERS))
def test_image_layer_inverse_and_log_det(name: str, device: torch.device) -> None:
    layer = perturb(IMAGE_LAYERS[name]()).to(device=device, dtype=F64)
    x = torch.randn(2, *IMAGE_SHAPE, dtype=F64, device=device)
    y, ladj = layer.call_and_ladj(x)
    x_back, ladj_inv = layer.inverse_and_ladj(y)
    assert_close(x_back, x, loose=True)
    assert_close(ladj_inv, -ladj, loose=True)
    y2 = torch.randn(2, *IMAGE_SHAPE, dtype=F64, device=device)
    assert_close(layer.call_and_ladj(layer.inverse_and_ladj(y2)[0])[0], y2, loose=True)
    J = jacobian(lambda v: layer.call_and_ladj(v)[0], x[0])
    assert_close(ladj[0], torch.linalg.slogdet(J)[1], loose=True)
    # gradients reach every parameter; second order through the density direction
    xg = x.clone().requires_grad_(True)
    z, l = layer.inverse_and_ladj(xg)
    logp = (-0.5 * z**2).sum() + l.sum()
    (gx,) = torch.autograd.grad(logp, xg, create_graph=True)
    params = list(layer.parameters())
    grads = torch.autograd.grad((gx**2).sum() + logp, params)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_coupling_jacobian_structure() -> None:
    d = 6
    mask = flows.alternating_mask(d)
    for layer in (
        flows.AffineCoupling(mask, hidden=(8,)),
        flows.SplineCoupling(mask, hidden=(8,), bins=4, bound=2.0),
        flows.AdditiveCoupling(mask, hidden=(8,)),
    ):
        layer = perturb(layer).double()
        x = torch.randn(d, dtype=F64)
        J = jacobian(lambda v: layer.call_and_ladj(v)[0], x)
        a, b = mask, ~mask
        # copied part: identity rows
        assert torch.equal(J[a], torch.eye(d, dtype=F64)[a])
        # transformed part: no dependence on the other transformed coordinates
        Jbb = J[b][:, b]
        assert torch.equal(Jbb - torch.diag(torch.diagonal(Jbb)), torch.zeros_like(Jbb))
        # and it does depend on the conditioning part (non-trivial conditioner)
        assert J[b][:, a].abs().sum() > 0


def test_image_coupling_masks_respected() -> None:
    for mask in (flows.checkerboard_mask(IMAGE_SHAPE), flows.channel_mask(IMAGE_SHAPE, flip=True)):
        layer = perturb(flows.AffineCoupling(mask, hidden=(8,))).double()
        x = torch.randn(IMAGE_SHAPE, dtype=F64)
        J = jacobian(lambda v: layer.call_and_ladj(v)[0], x)
        m = mask.reshape(-1)
        assert torch.equal(J[m], torch.eye(m.numel(), dtype=F64)[m])
        Jbb = J[~m][:, ~m]
        assert torch.equal(Jbb - torch.diag(torch.diagonal(Jbb)), torch.zeros_like(Jbb))


@pytest.mark.parametrize("one_pass", ["inverse", "forward"])
def test_autoregressive_jacobian_is_triangular_in_order(one_pass: str) -> None:
    d = 5
    rank = torch.tensor([3, 1, 5, 2, 4])
    layer = perturb(flows.MaskedAutoregressive(flows.Affine(), d, (12, 12), rank=rank, one_pass=one_pass, activation=torch.nn.Tanh)).double()
    x = torch.randn(d, dtype=F64)
    J = jacobian(lambda v: layer.call_and_ladj(v)[0], x)
    later = rank[None, :] > rank[:, None]  # J[i, j] must vanish when rank j > rank i
    assert torch.equal(J[later], torch.zeros(int(later.sum()), dtype=F64))
    assert J[~later & ~torch.eye(d, dtype=torch.bool)].abs().min() > 0  # every allowed entry is used


def test_made_masks_exact_dependencies() -> None:
    d, ctx = 4, 2
    made = perturb(flows.MADE(d, 3, (10, 10), context_dim=ctx, rank=torch.tensor([2, 4, 1, 3]), activation=torch.nn.Tanh)).double()
    x, c = torch.randn(d, dtype=F64), torch.randn(ctx, dtype=F64)
    Jx = torch.autograd.functional.jacobian(lambda v: made(v, c), x)  # (d, 3, d)
    Jc = torch.autograd.functional.jacobian(lambda v: made(x, v), c)  # (d, 3, ctx)
    allowed = made.rank[None, :] < made.rank[:, None]
    assert torch.equal((Jx.abs().sum(1) > 0), allowed)
    assert (Jc.abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", sorted(VECTOR_LAYERS))
def test_gradients_reach_every_parameter_and_double_backward(name: str) -> None:
    d = 4
    layer, ctx = make_vector_layer(name, d, F64, torch.device("cpu"))
    params = [p for p in layer.parameters()]
    x = torch.randn(7, d, dtype=F64, requires_grad=True)
    for direction in ("forward", "inverse"):
        fn = layer.call_and_ladj if direction == "forward" else layer.inverse_and_ladj
        out, ladj = fn(x, ctx)
        loss = (out**2).sum() + ladj.sum()
        if not params:
            continue
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            assert g is not None and g.abs().sum() > 0, f"{name}: no gradient ({direction})"
    # second order: gradient of a function of the input-gradient (score matching)
    out, ladj = layer.inverse_and_ladj(x, ctx)
    logp = (-0.5 * out**2).sum() + ladj.sum()
    (gx,) = torch.autograd.grad(logp, x, create_graph=True)
    target = params + [x] if params else [x]
    g2 = torch.autograd.grad((gx**2).sum(), target, allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in g2)
    assert g2[-1] is not None


@pytest.mark.parametrize("name", sorted(VECTOR_LAYERS) + sorted(IMAGE_LAYERS))
def test_state_dict_round_trip(name: str) -> None:
    if name in VECTOR_LAYERS:
        layer, ctx = make_vector_layer(name, 4, torch.float32, torch.device("cpu"))
        fresh = VECTOR_LAYERS[name][0](4)
        x = torch.randn(3, 4)
    else:
        layer, ctx = perturb(IMAGE_LAYERS[name]()), None
        fresh = IMAGE_LAYERS[name]()
        x = torch.randn(3, *IMAGE_SHAPE)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    fresh.eval(), layer.eval()
    torch.testing.assert_close(fresh.call_and_ladj(x, ctx), layer.call_and_ladj(x, ctx), rtol=0, atol=0)
    torch.testing.assert_close(fresh.inverse_and_ladj(x, ctx), layer.inverse_and_ladj(x, ctx), rtol=0, atol=0)


def test_transform_metadata() -> None:
    layer = flows.MAF(3)
    assert layer.bijective and layer.event_dim == 1
    assert layer.domain.event_dim == 1 and layer.codomain.event_dim == 1
    assert isinstance(layer.domain, constraints.independent)
    img = flows.InvertibleConv1x1(2)
    assert img.event_dim == 3 and img.codomain.event_dim == 3
    assert isinstance(layer, torch.nn.Module) and isinstance(layer, torch.distributions.Transform)
    from pyro.distributions.torch_transform import TransformModule

    assert isinstance(layer, TransformModule)


def test_actnorm_data_dependent_init() -> None:
    d = 4
    y = torch.randn(512, d, dtype=F64) * torch.tensor([0.1, 1.0, 5.0, 20.0], dtype=F64) + torch.tensor([3.0, -1.0, 0.0, 7.0], dtype=F64)
    an = flows.ActNorm(d, eps=1e-12).double()
    x, _ = an.inverse_and_ladj(y)
    assert_close(x.mean(0), torch.zeros(d, dtype=F64), loose=True)
    assert_close(x.std(0, unbiased=False), torch.ones(d, dtype=F64), loose=True)
    # a second batch does not re-initialize
    loc = an.loc.detach().clone()
    an.inverse_and_ladj(y + 10)
    assert torch.equal(an.loc.detach(), loc)
    # after initialization, eval and train modes agree
    an.eval()
    x_eval, l_eval = an.inverse_and_ladj(y)
    an.train()
    x_train, l_train = an.inverse_and_ladj(y)
    assert torch.equal(x_eval, x_train) and torch.equal(l_eval, l_train)
    # the flag travels in the state dict
    fresh = flows.ActNorm(d).double()
    fresh.load_state_dict(an.state_dict())
    assert fresh._initialized
    # images: per channel over batch and pixels
    img = torch.randn(64, 3, 4, 4, dtype=F64) * torch.tensor([2.0, 0.5, 3.0], dtype=F64)[:, None, None] + 1
    ai = flows.ActNorm(3, event_dim=3, eps=1e-12).double()
    z, _ = ai.inverse_and_ladj(img)
    assert_close(z.mean((0, 2, 3)), torch.zeros(3, dtype=F64), loose=True)
    assert_close(z.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=F64), loose=True)


def test_float32_spline_far_outside_box_and_affine_on_huge_activations() -> None:
    spline = flows.RationalQuadratic(bins=8, bound=3.0)
    x = torch.tensor([-1e30, -1e6, -3.0, -2.999, 0.0, 2.999, 3.0, 1e6, 1e30, 1e38])
    params = 50 * torch.randn(x.shape[0], spline.num_params)
    params.requires_grad_(True)
    y, l = spline.forward(x, params)
    xb, lb = spline.inverse(y, params)
    assert torch.isfinite(y).all() and torch.isfinite(l).all() and torch.isfinite(xb).all()
    assert torch.equal(y[[0, 1, 7, 8, 9]], x[[0, 1, 7, 8, 9]])  # identity tails
    torch.testing.assert_close(xb, x, rtol=1e-4, atol=1e-3)
    (g,) = torch.autograd.grad((y.sum() + l.sum() + xb.sum() + lb.sum()), params)
    assert torch.isfinite(g).all()
    # inverse of values far outside, then forward again
    yy = torch.tensor([-1e30, 1e30, -1e4, 1e4])
    p2 = 50 * torch.randn(4, spline.num_params)
    assert torch.isfinite(spline.inverse(yy, p2)[0]).all()
    # affine coupling with exploding conditioner activations stays finite and invertible
    layer = flows.AffineCoupling(flows.half_mask(4), hidden=(8,))
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(1e4)
    x = 100 * torch.randn(16, 4)
    y, ladj = layer.call_and_ladj(x)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    assert (ladj.abs() <= 2 * 7.0 + 1e-4).all()  # |s| < scale_bound per transformed coordinate
    xb, _ = layer.inverse_and_ladj(y)
    assert torch.isfinite(xb).all()


def test_spline_matches_autograd_derivative_and_identity_at_zero() -> None:
    spline = flows.RationalQuadratic(bins=5, bound=2.5)
    x = torch.linspace(-4, 4, 101, dtype=F64, requires_grad=True)
    params = torch.randn(101, spline.num_params, dtype=F64)
    y, l = spline.forward(x, params)
    (dy,) = torch.autograd.grad(y.sum(), x)
    assert_close(l, torch.log(dy), loose=True)
    assert (dy > 0).all()  # monotone
    y0, l0 = spline.forward(x, torch.zeros_like(params))
    assert_close(y0, x.detach())
    assert_close(l0, torch.zeros_like(l0))


def test_bad_input_messages() -> None:
    layer = flows.MAF(3)
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 3\)"):
        layer.call_and_ladj(torch.randn(2, 4))
    cond = flows.MAF(3, context_dim=CTX)
    with pytest.raises(ShapeError, match="context"):
        cond.call_and_ladj(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="context"):
        cond(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="unconditional"):
        layer.call_and_ladj(torch.randn(2, 3), torch.randn(2, CTX))
    from fokker.errors import ParameterError

    with pytest.raises(ParameterError, match="mask"):
        flows.Coupling(flows.Affine(), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ParameterError, match="one_pass"):
        flows.MaskedAutoregressive(flows.Affine(), 3, one_pass="sideways")
    with pytest.raises(ParameterError, match="perm"):
        flows.Permute([0, 0, 1])
    with pytest.raises(ParameterError, match="bins"):
        flows.RationalQuadratic(bins=0)
    with pytest.raises(ParameterError, match="scale_bound"):
        flows.Affine(scale_bound=-1.0)


def test_squeeze_is_a_permutation_and_inverts() -> None:
    x = torch.randn(3, 2, 4, 6, dtype=F64)
    s = flows.squeeze(x)
    assert s.shape == (3, 8, 2, 3)
    assert torch.equal(flows.unsqueeze(s), x)
    # each output channel is one pixel of every 2x2 block: a permutation of the entries
    assert torch.equal(torch.sort(s.reshape(3, -1)).values, torch.sort(x.reshape(3, -1)).values)
    assert torch.equal(s[0, :4, 0, 0], torch.stack([x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]))
    layer = flows.Squeeze((2, 4, 6))
    y, ladj = layer.call_and_ladj(x)
    assert torch.equal(y, s) and torch.equal(ladj, torch.zeros(3, dtype=F64))
    xb, lb = layer.inverse_and_ladj(y)
    assert torch.equal(xb, x) and torch.equal(lb, torch.zeros(3, dtype=F64))
    J = jacobian(lambda v: flows.squeeze(v), x[0])
    assert torch.equal(J.abs().sum(0), torch.ones(48, dtype=F64)) and torch.equal(J.abs().sum(1), torch.ones(48, dtype=F64))
    from fokker.errors import ParameterError

    with pytest.raises(ParameterError, match="even"):
        flows.Squeeze((1, 3, 4))
    with pytest.raises(ShapeError, match="x must have shape"):
        layer.call_and_ladj(torch.randn(2, 4, 4))


def test_glow_checkerboard_variant_log_det() -> None:
    flow = perturb(flows.glow((2, 4, 4), levels=2, steps=1, hidden=4, mask="checkerboard")).double()
    x = torch.randn(2, 2, 4, 4, dtype=F64)
    z, ladj_inv = flow.inverse_and_ladj(x)
    J = jacobian(lambda v: flow.inverse_and_ladj(v)[0], x[0])
    assert_close(ladj_inv[0], torch.linalg.slogdet(J)[1], loose=True)
    assert_close(flow.forward_and_ladj(z)[0], x, loose=True)
