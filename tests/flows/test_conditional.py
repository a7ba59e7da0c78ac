"""Conditional flows end to end: every builder that takes ``context_dim``, every context shape.

Unconditional layers inside a conditional flow (NICE's ActNorm scaling) must not receive the
context, in the fast paths and in ``distribution(context)``.  ``log_prob`` is checked against
two independent computations: the Pyro ``TransformedDistribution`` path (torch protocol on
conditioned views) and the change of variables with the autograd Jacobian of the inverse map
(float64).
"""

from __future__ import annotations

import pyro.distributions as pdist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker.tolerances import assert_close
from fokker.train import fit

from flows_testlib import BUILDERS, CONDITIONAL_BUILDERS, flow_log_prob_autograd, perturb

F64 = torch.float64

# (x batch, context batch): broadcasting in both directions, and several batch dims
SHAPES = {
    "one context for a batch": ((3,), ()),
    "a context per example": ((3,), (3,)),
    "one x for a batch of contexts": ((), (3,)),
    "broadcast 2-d": ((2, 1), (1, 3)),
}


@pytest.mark.parametrize("shapes", sorted(SHAPES))
@pytest.mark.parametrize("name", CONDITIONAL_BUILDERS)
@settings(max_examples=3)
@given(d=st.integers(2, 4), context_dim=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_conditional_builder_end_to_end(name: str, shapes: str, d: int, context_dim: int, seed: int) -> None:
    torch.manual_seed(seed)
    xb, cb = SHAPES[shapes]
    flow = perturb(BUILDERS[name](d, context_dim), scale=0.2, seed=seed).double()
    x = 1.5 * torch.randn(*xb, d, dtype=F64)
    ctx = torch.randn(*cb, context_dim, dtype=F64)
    batch = torch.broadcast_shapes(xb, cb)
    lp = flow.log_prob(x, ctx)
    assert lp.shape == batch
    # independent 1: the Pyro distribution (torch protocol, conditioned views, plain TransformedDistribution)
    dist = flow.distribution(ctx)
    assert dist.event_shape == (d,) and dist.batch_shape == cb
    assert_close(dist.log_prob(x), lp)
    plain = pdist.TransformedDistribution(dist.base_dist, list(dist.transforms))
    assert_close(plain.log_prob(x), lp)
    # independent 2: autograd Jacobian of the inverse map, event by event
    xe = x.expand(*batch, d).reshape(-1, d)
    ce = ctx.expand(*batch, context_dim).reshape(-1, context_dim)
    assert_close(lp.reshape(-1), flow_log_prob_autograd(flow, xe, ce))
    # sampling: shapes, reparameterization, the one-pass log-density
    s = flow.sample((2,), ctx)
    assert s.shape == (2, *cb, d) and not s.requires_grad
    r = flow.rsample((2,), ctx)
    assert r.requires_grad and r.shape == (2, *cb, d)
    y, lpy = flow.sample_and_log_prob((2,), ctx)
    assert y.shape == (2, *cb, d) and lpy.shape == (2, *cb)
    assert_close(lpy, flow.log_prob(y, ctx), loose=True)
    ys = dist.sample((2,))
    assert ys.shape == (2, *cb, d)
    assert_close(dist.log_prob(ys), flow.log_prob(ys, ctx))
    # the training loss takes an (x, context) pair
    assert_close(flow.loss((x.expand(*batch, d), ctx.expand(*batch, context_dim))), -lp.mean())


@pytest.mark.parametrize("name", CONDITIONAL_BUILDERS)
def test_conditional_builder_fits(name: str) -> None:
    """``fit`` on (x, context) pairs: a context-dependent Gaussian, the loss decreases a lot."""
    torch.manual_seed(0)
    c = torch.randn(512, 1)
    x = torch.randn(512, 2) * 0.3 + 2.0 * c
    flow = BUILDERS[name](2, 1)
    before = float(flow.loss((x, c)).detach())
    res = fit(flow, (x, c), steps=40, batch_size=128, lr=1e-2, progress=False)
    assert len(res.losses) == 40
    # the marginal spread of x is ~2 while given c it is 0.3: log(2 / 0.3) ~ 1.9 nats to gain per coordinate
    assert float(flow.loss((x, c)).detach()) < before - 1.0
