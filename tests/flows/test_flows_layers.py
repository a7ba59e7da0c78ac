"""Layer internals the contract test (test_layer_contract.py) does not see: Jacobian sparsity
of couplings and autoregressive layers, MADE masks, ActNorm's data-dependent initialisation,
float32 robustness of the spline and affine maps, squeeze and shape-changing layers."""

from __future__ import annotations

import pyro.distributions as pdist
import pytest
import torch

from fokker import flows
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import assert_close, tolerance

from flows_testlib import IMAGE_SHAPE, jacobian, perturb

F64 = torch.float64


def test_coupling_jacobian_structure() -> None:
    d = 6
    mask = flows.alternating_mask(d)
    for layer in (
        flows.AffineCoupling(d, hidden=(8,), mask=mask),
        flows.SplineCoupling(d, hidden=(8,), mask=mask, bins=4, bound=2.0),
        flows.AdditiveCoupling(d, hidden=(8,), mask=mask),
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
        layer = perturb(flows.AffineCoupling(IMAGE_SHAPE[0], hidden=(8,), mask=mask)).double()
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
    # images: per channel over batch and pixels
    img = torch.randn(64, 3, 4, 4, dtype=F64) * torch.tensor([2.0, 0.5, 3.0], dtype=F64)[:, None, None] + 1
    ai = flows.ActNorm(3, event_dim=3, eps=1e-12).double()
    z, _ = ai.inverse_and_ladj(img)
    assert_close(z.mean((0, 2, 3)), torch.zeros(3, dtype=F64), loose=True)
    assert_close(z.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=F64), loose=True)


def test_actnorm_forward_first_is_not_reinitialised_by_the_inverse() -> None:
    """A fresh ActNorm used forward first: the inverse of its output is its input (it used to
    initialise from y on the inverse call, off by ~1)."""
    torch.manual_seed(0)
    a = flows.ActNorm(5)
    x = torch.randn(64, 5) * 3 + 2
    assert_close(a.inv(a(x).clone()), x)
    assert bool(a.initialized)


def test_actnorm_initialises_at_most_once_and_only_from_a_first_inverse_in_training() -> None:
    y = torch.randn(32, 3, dtype=F64) * 4 + 1
    ident = torch.zeros(3, dtype=F64)
    # eval-mode first use: no initialisation, ever
    a = flows.ActNorm(3).double().eval()
    a.inverse_and_ladj(y)
    a.train().inverse_and_ladj(y)
    assert torch.equal(a.loc.detach(), ident) and torch.equal(a.log_scale.detach(), ident)
    # an in-place change of the parameters (an optimizer step) before the first use
    b = flows.ActNorm(3).double()
    with torch.no_grad():
        b.log_scale.add_(0.5)
    b.inverse_and_ladj(y)
    assert torch.equal(b.loc.detach(), ident)
    # a loaded state dict, even one saved before any use
    c = flows.ActNorm(3).double()
    c.load_state_dict(flows.ActNorm(3).double().state_dict())
    c.inverse_and_ladj(y)
    assert torch.equal(c.loc.detach(), ident)
    # .to(dtype) is not a change: the first inverse still initialises
    e = flows.ActNorm(3).to(F64)
    e.inverse_and_ladj(y)
    assert_close(e.loc.detach(), y.mean(0))
    # the flag is in the state dict and survives save/load
    fresh = flows.ActNorm(3).double()
    fresh.load_state_dict(e.state_dict())
    assert bool(fresh.initialized) and torch.equal(fresh.loc, e.loc)
    # explicit initialisation stays available
    g = flows.ActNorm(3).double().eval()
    g.initialize(y)
    assert_close(g.loc.detach(), y.mean(0))


def test_reverse_kl_training_then_log_prob_keeps_the_parameters() -> None:
    """A flow trained by reverse KL (forward calls only) keeps its ActNorm parameters when
    log_prob is called in training mode afterwards."""
    torch.manual_seed(0)
    flow = flows.nice(2, 2, (8,)).double()
    target = torch.distributions.MultivariateNormal(torch.tensor([1.0, -2.0], dtype=F64), torch.eye(2, dtype=F64) * 0.25)
    opt = torch.optim.Adam(flow.parameters(), lr=2e-2)
    for _ in range(30):
        y, lp = flow.sample_and_log_prob((64,))
        loss = (lp - target.log_prob(y)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {k: v.clone() for k, v in flow.state_dict().items()}
    samples = flow.sample((16,), generator=torch.Generator().manual_seed(1))
    flow.log_prob(torch.randn(100, 2, dtype=F64) * 10)  # training mode, a batch unlike the samples
    for k, v in flow.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(flow.sample((16,), generator=torch.Generator().manual_seed(1)), samples)


def test_float32_spline_far_outside_box_and_affine_on_huge_activations() -> None:
    spline = flows.RationalQuadratic(bins=8, bound=3.0)
    x = torch.tensor([-1e30, -1e6, -3.0, -2.999, 0.0, 2.999, 3.0, 1e6, 1e30, 1e38])
    params = 50 * torch.randn(x.shape[0], spline.num_params)
    params.requires_grad_(True)
    y, l = spline.forward(x, params)
    xb, lb = spline.inverse(y, params)
    assert torch.isfinite(y).all() and torch.isfinite(l).all() and torch.isfinite(xb).all()
    assert torch.equal(y[[0, 1, 7, 8, 9]], x[[0, 1, 7, 8, 9]])  # identity tails
    # the round trip inside the box is accurate to float32 rounding of values up to ~3
    assert_close(xb[2:7], x[2:7], scale=3.0)
    assert torch.equal(xb[[0, 1, 7, 8, 9]], x[[0, 1, 7, 8, 9]])
    (g,) = torch.autograd.grad((y.sum() + l.sum() + xb.sum() + lb.sum()), params)
    assert torch.isfinite(g).all()
    # inverse of values far outside, then forward again
    yy = torch.tensor([-1e30, 1e30, -1e4, 1e4])
    p2 = 50 * torch.randn(4, spline.num_params)
    assert torch.isfinite(spline.inverse(yy, p2)[0]).all()
    # affine coupling with exploding conditioner activations stays finite and invertible
    layer = flows.AffineCoupling(4, hidden=(8,))
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(1e4)
    x = 100 * torch.randn(16, 4)
    y, ladj = layer.call_and_ladj(x)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    # |s| < scale_bound per transformed coordinate (2 of the 4), up to float32 rounding
    assert (ladj.abs() <= 2 * 7.0 * (1 + tolerance(torch.float32).rtol)).all()
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
    flow = perturb(flows.glow((2, 4, 4), levels=2, depth=1, hidden=4, mask="checkerboard"), scale=0.05).double()
    x = torch.randn(2, 2, 4, 4, dtype=F64)
    z, ladj_inv = flow.inverse_and_ladj(x)
    J = jacobian(lambda v: flow.inverse_and_ladj(v)[0], x[0])
    assert_close(ladj_inv[0], torch.linalg.slogdet(J)[1], loose=True)
    assert_close(flow.forward_and_ladj(z)[0], x, loose=True)


def test_squeeze_shapes_in_a_transformed_distribution() -> None:
    """Squeeze changes the event shape: forward_shape / inverse_shape say so, and a
    TransformedDistribution with it reports the right event shape and scores its own samples."""
    layer = flows.Squeeze((1, 4, 4))
    assert tuple(layer.forward_shape((1, 4, 4))) == (4, 2, 2)
    assert tuple(layer.forward_shape((7, 1, 4, 4))) == (7, 4, 2, 2)
    assert tuple(layer.inverse_shape((4, 2, 2))) == (1, 4, 4)
    assert tuple(layer.inverse_shape((7, 4, 2, 2))) == (7, 1, 4, 4)
    base = pdist.Normal(torch.zeros(1, 4, 4, dtype=F64), 1.0).to_event(3)
    td = pdist.TransformedDistribution(base, [layer])
    assert td.event_shape == (4, 2, 2) and td.batch_shape == ()
    y = td.sample((5,))
    assert y.shape == (5, 4, 2, 2)
    # a permutation: the density of y is the base density of the unsqueezed value
    assert_close(td.log_prob(y), base.log_prob(flows.unsqueeze(y)))
    # in a Flow, the base gets the noise-side shape and sampling / scoring agree
    flow = flows.Flow([layer, perturb(flows.ActNorm(4, event_dim=3))], (4, 2, 2)).double()
    assert flow.base_event_shape == (1, 4, 4)
    s, lp = flow.sample_and_log_prob((3,))
    assert s.shape == (3, 4, 2, 2)
    assert_close(flow.log_prob(s), lp)
    assert_close(flow.distribution().log_prob(s), lp)
    with pytest.raises(ShapeError, match="forward_shape"):
        layer.forward_shape((2, 4, 4))
    with pytest.raises(ParameterError, match="even"):
        flows.Squeeze((1, 3, 4))
