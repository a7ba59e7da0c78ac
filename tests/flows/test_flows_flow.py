"""Composed flows: normalization by quadrature, sampling vs density, conditional flows per
context, Pyro integration, full-batch training loops, copies, dtype/device following."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from scipy import stats

from fokker import flows
from fokker.checks import check_normalized
from fokker.errors import ShapeError
from fokker.tolerances import Z_SCORE, assert_close, tolerance
from fokker.train import fit

from flows_testlib import perturb

F64 = torch.float64


def _flow_1d() -> flows.Flow:
    layers = [
        flows.SplineAutoregressive(1, hidden=(8,), bins=5, bound=3.0),
        flows.MAF(1, hidden=(8,)),
        flows.SplineAutoregressive(1, hidden=(8,), bins=4, bound=2.0),
    ]
    return perturb(flows.Flow(layers, 1), scale=0.2).double()


def _flow_2d() -> flows.Flow:
    layers = [
        flows.SplineCoupling(2, hidden=(8,), bins=4, bound=3.0),
        flows.AffineCoupling(2, hidden=(8,), mask=flows.half_mask(2, flip=True)),
        flows.InvertibleLinear(2),
        flows.MAF(2, hidden=(8,)),
        flows.ActNorm(2),
    ]
    return perturb(flows.Flow(layers, 2), scale=0.2).double()


def test_log_prob_integrates_to_one_1d(device: torch.device) -> None:
    flow = _flow_1d().to(device)
    res = check_normalized(flow, (-40.0, 40.0), num_points=40001)
    assert res.passed, res


def test_log_prob_integrates_to_one_2d(device: torch.device) -> None:
    flow = _flow_2d().to(device)
    res = check_normalized(flow, ((-10.0, 10.0), (-10.0, 10.0)), num_points=601)
    assert res.passed, res


def test_sample_matches_density_ks_1d() -> None:
    flow = _flow_1d()
    with torch.no_grad():
        x = torch.linspace(-40, 40, 40001, dtype=F64)
        pdf = flow.log_prob(x[:, None]).exp()
        cdf = torch.cumulative_trapezoid(pdf, x)
        cdf = torch.cat([cdf.new_zeros(1), cdf]) / cdf[-1]
        s = flow.sample((4000,))[:, 0]
    res = stats.kstest(s.numpy(), lambda v: np.interp(v, x.numpy(), cdf.numpy()))
    assert res.pvalue > 1e-3, res


def test_linear_flow_is_the_gaussian_it_should_be(device: torch.device) -> None:
    # y = D (W x) + b with x ~ N(0, I): exactly N(b, (DW)(DW)^T)
    lin, an = flows.InvertibleLinear(3), flows.ActNorm(3)
    flow = perturb(flows.Flow([lin, an], 3)).to(device=device, dtype=F64)
    A = torch.exp(an.log_scale)[:, None] * lin.weight()
    mvn = torch.distributions.MultivariateNormal(an.loc.detach(), covariance_matrix=(A @ A.T).detach())
    y = torch.randn(10, 3, dtype=F64, device=device) * 2
    with torch.no_grad():
        assert_close(flow.log_prob(y), mvn.log_prob(y))
        n = 20000
        s = flow.sample((n,))
    se = mvn.stddev / math.sqrt(n)
    assert ((s.mean(0) - mvn.mean).abs() <= Z_SCORE * se).all()
    # covariance entries: SE of a sample covariance for Gaussians sqrt((S_ij^2 + S_ii S_jj) / n)
    S = mvn.covariance_matrix
    se_cov = torch.sqrt((S**2 + torch.outer(S.diagonal(), S.diagonal())) / n)
    assert ((torch.cov(s.T) - S).abs() <= Z_SCORE * se_cov).all()


def test_sample_and_log_prob_equals_log_prob_of_sample(device: torch.device) -> None:
    for flow in (_flow_2d(), flows.iaf(3, 2, (8,)).double(), flows.nsf(3, 2, (8,), kind="autoregressive").double()):
        flow = perturb(flow).to(device)
        y, lp = flow.sample_and_log_prob((64,))
        assert y.shape == (64, flow.event_shape[0]) and lp.shape == (64,)
        assert_close(lp, flow.log_prob(y), loose=True)
        d = flow.distribution()
        assert_close(d.log_prob(y), lp, loose=True)


def test_rsample_is_differentiable() -> None:
    flow = perturb(flows.realnvp(2, 2, (8,))).double()
    y = flow.rsample((32,))
    params = list(flow.parameters())
    grads = torch.autograd.grad((y**2).sum(), params)
    assert all(g.abs().sum() > 0 for g in grads)
    y2, lp = flow.sample_and_log_prob((32,))
    grads = torch.autograd.grad(lp.sum() + y2.sum(), params)
    assert all(g.abs().sum() > 0 for g in grads)
    assert not flow.sample((4,)).requires_grad


class _AtContext:
    """The density ``x -> p(x | c)`` of a conditional flow at one context (for check_normalized)."""

    def __init__(self, flow: flows.Flow, c: torch.Tensor) -> None:
        self.flow, self.c, self.event_shape = flow, c, flow.event_shape

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x, self.c)


def test_conditional_flow_per_context(device: torch.device) -> None:
    flow = perturb(flows.nsf(2, 2, (8,), context_dim=2, bins=4, bound=3.0), scale=0.1).to(device=device, dtype=F64)
    c1 = torch.tensor([1.0, -2.0], dtype=F64, device=device)
    c2 = torch.tensor([-1.5, 0.5], dtype=F64, device=device)
    res = check_normalized(_AtContext(flow, c2), ((-10.0, 10.0), (-10.0, 10.0)), num_points=601, device=device)
    assert res.passed, res
    # the context matters: the two densities differ by far more than the tolerance
    pts = torch.randn(64, 2, dtype=F64, device=device)
    with torch.no_grad():
        assert (flow.log_prob(pts, c1) - flow.log_prob(pts, c2)).abs().max() > 100 * tolerance(F64, loose=True).atol
    # batched contexts: each row uses its own context
    ctx = torch.stack([c1, c2])
    x = torch.randn(2, 2, dtype=F64, device=device)
    lp = flow.log_prob(x, ctx)
    assert_close(lp, torch.stack([flow.log_prob(x[0], c1), flow.log_prob(x[1], c2)]))
    with pytest.raises(ShapeError, match="context"):
        flow.log_prob(x)


def test_flow_in_pyro_model_and_svi_guide() -> None:
    pyro.clear_param_store()
    data = torch.tensor([[1.0, -0.5], [1.2, -0.7], [0.8, -0.2]])
    guide_flow = flows.iaf(2, 2, (8,))

    def model(obs: torch.Tensor) -> None:
        z = pyro.sample("z", pdist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
        with pyro.plate("data", obs.shape[0]):
            pyro.sample("obs", pdist.Normal(z, 1.0).to_event(1), obs=obs)

    def guide(obs: torch.Tensor) -> None:
        pyro.module("flow", guide_flow)
        pyro.sample("z", guide_flow.distribution(cache_size=1))

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    before = [p.detach().clone() for p in guide_flow.parameters()]
    losses = [svi.step(data) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)
    assert all((p.detach() - b).abs().max() > 0 for p, b in zip(guide_flow.parameters(), before))
    # a flow as a prior inside a model
    prior = flows.maf(2, 2, (8,))
    tr = pyro.poutine.trace(lambda: pyro.sample("x", prior.distribution())).get_trace()
    x = tr.nodes["x"]["value"]
    tr.compute_log_prob()
    assert_close(tr.nodes["x"]["log_prob"], prior.log_prob(x), loose=True)


def test_full_batch_training_reuses_one_data_tensor() -> None:
    """The same data tensor every step through every path (torch's identity cache would hand
    back a stale x from a freed graph): every step computes, and the loss goes down."""
    torch.manual_seed(0)
    x = torch.randn(64, 3) * 2 + 1  # the SAME tensor object every step (full-batch training)
    for flow in (flows.maf(3, 2, (8,)), flows.nsf(3, 2, (8,)), flows.iaf(3, 2, (8,)), flows.nice(3, 2, (8,))):
        opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
        d_fixed = flow.distribution()
        first = float(flow.loss(x).detach())
        for _ in range(3):
            for loss_fn in (
                lambda: -flow.distribution().log_prob(x).mean(),
                lambda: -d_fixed.log_prob(x).mean(),
                lambda: flow.loss(x),
            ):
                opt.zero_grad()
                loss = loss_fn()
                assert_close(loss, flow.loss(x), loose=True)  # no stale value from an earlier step
                loss.backward()
                opt.step()
            # reverse-KL style: sample, then score the sample (cached, as an SVI guide), backward
            d = flow.distribution(cache_size=1)
            z = d.rsample((16,))
            loss = (d.log_prob(z) + 0.5 * (z**2).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert float(flow.loss(x).detach()) < first


def test_fit_trains_a_flow_with_ema_and_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    data = torch.randn(512, 2) * torch.tensor([0.5, 2.0]) + torch.tensor([1.0, -1.0])
    flow = flows.realnvp(2, 2, (16,))
    res = fit(flow, data, steps=60, batch_size=128, lr=1e-2, ema=0.9, checkpoint=tmp_path / "ck.pt",
              checkpoint_every=30, progress=False)
    assert len(res.losses) == 60 and all(math.isfinite(v) for v in res.losses)
    assert np.mean(res.losses[-10:]) < np.mean(res.losses[:10])
    assert res.ema is not None
    with torch.no_grad():
        assert torch.isfinite(res.ema.module.log_prob(data)).all()
    cond = flows.maf(2, 2, (8,), context_dim=1)
    res = fit(cond, (data, data[:, :1]), steps=5, batch_size=64, progress=False)
    assert all(math.isfinite(v) for v in res.losses)


def test_copies_after_use_are_identical() -> None:
    """deepcopy (EMA) and whole-module pickling after the flows were used."""
    for build in (lambda: flows.nsf(3, 2, (8,)), lambda: flows.maf(3, 2, (8,), context_dim=2),
                  lambda: flows.glow((1, 4, 4), levels=1, depth=1, hidden=4), lambda: flows.nice(3, 2, (8,))):
        flow = perturb(build())
        x = torch.randn(5, *flow.event_shape)
        ctx = torch.randn(5, 2) if flow.context_dim else None
        ref = flow.log_prob(x, ctx)
        flow.distribution(ctx, cache_size=1).rsample()
        for other in (copy.deepcopy(flow), _pickle_round_trip(flow)):
            torch.testing.assert_close(other.log_prob(x, ctx), ref, rtol=0, atol=0)


def _pickle_round_trip(module: torch.nn.Module) -> torch.nn.Module:
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_builders_shapes_and_dtype_device_follow(device: torch.device) -> None:
    for flow in (flows.nice(4), flows.realnvp(4, mask="half"), flows.maf(4), flows.iaf(4),
                 flows.nsf(4), flows.nsf(4, kind="autoregressive"), flows.maf(1), flows.nsf(1, kind="autoregressive")):
        flow = flow.to(device=device, dtype=F64)
        d = flow.event_shape[0]
        x = torch.randn(3, 2, d, dtype=F64, device=device)
        lp = flow.log_prob(x)
        assert lp.shape == (3, 2) and lp.dtype == F64 and lp.device.type == device.type
        assert flow.sample((4, 5)).shape == (4, 5, d)
    g = flows.glow((1, 8, 8), levels=2, depth=1, hidden=8).to(device)
    img = torch.randn(6, 1, 8, 8, device=device)
    assert g.log_prob(img).shape == (6,)
    assert g.sample((2,)).shape == (2, 1, 8, 8)


def test_flow_accepts_plain_torch_and_pyro_transforms() -> None:
    import pyro.distributions.transforms as pt
    from torch.distributions.transforms import ExpTransform

    layers = [perturb(flows.MAF(2, hidden=(8,))), pt.affine_coupling(2, hidden_dims=[8]), ExpTransform()]
    flow = flows.Flow(layers, 2).double()
    y = flow.sample((6,))
    assert (y > 0).all()
    ref = torch.distributions.TransformedDistribution(
        torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2, dtype=F64), 1.0), 1), layers
    )
    assert_close(flow.log_prob(y), ref.log_prob(y), loose=True)
    x, lp = flow.sample_and_log_prob((6,))
    assert_close(lp, ref.log_prob(x), loose=True)


def test_generator_makes_sampling_reproducible_and_leaves_the_global_rng_alone() -> None:
    """Base noise from generator= (a custom base that takes no generator runs in rng_scope)."""
    custom = flows.Flow([perturb(flows.MAF(2, (8,)))], 2, base=pdist.Normal(torch.zeros(2), 2.0).to_event(1))
    for flow in (perturb(flows.iaf(2, 2, (8,))), custom):
        state = torch.get_rng_state()
        a = flow.sample((5,), generator=torch.Generator().manual_seed(7))
        b, lp = flow.sample_and_log_prob((5,), generator=torch.Generator().manual_seed(7))
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(a, b.detach())
        assert_close(lp, flow.log_prob(b))
        c = flow.sample((5,), generator=torch.Generator().manual_seed(8))
        assert not torch.equal(a, c)
