"""Importance weights of DDS / PIS / DIS: independent path densities, unbiasedness, bounds,
zero variance under the closed-form optimal control, losses and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from fokker.errors import (
    DeviceDtypeError,
    NoExactSamplesError,
    NonFiniteError,
    ParameterError,
    TrainingDivergedError,
)
from fokker.importance import LogZEstimate
from fokker.samplers import DDS, DIS, PIS, GaussianOptimalControl, PISGradNet
from fokker.targets.base import CallableTarget
from fokker.tolerances import Z_SCORE, assert_close, tolerance

from .conftest import LOG_Z, DiagGaussian, make_gaussian


def _scaled_optimal(sampler, scale):
    """The closed-form optimal control times ``scale``: a deliberately imperfect control."""
    opt = GaussianOptimalControl(sampler, sampler.target.mean, sampler.target.var)

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.opt = opt
            self.w = torch.nn.Parameter(torch.tensor(float(scale), dtype=torch.float64))

        def forward(self, x, t, feature):
            return self.w * self.opt(x, t)

    return Scaled()


def _build(kind, device, K=12, **kw):
    target = make_gaussian(device)
    if kind == "DDS":
        s = DDS(target, num_steps=K, T=6.0, sigma=1.0, beta=0.8, width=8, **kw)
    elif kind == "PIS":
        s = PIS(target, num_steps=K, width=8, **kw)
    else:
        s = DIS(target, num_steps=K, width=8, **kw)
    return s.to(device, torch.float64)


def _perturb(sampler):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sampler.net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))


def _normal_lp(y, mean, std):
    return Normal(mean, std).log_prob(y).sum(-1)


@pytest.mark.parametrize("kind", ["DDS", "PIS", "DIS"])
def test_log_weight_equals_independent_path_density_ratio(kind, device):
    """log w = log [gamma(y_K) prod B_k(y_k|y_{k+1})] - log [p_0(y_0) prod q_k(y_{k+1}|y_k)],
    with every density written out from the definitions with torch.distributions."""
    s = _build(kind, device)
    _perturb(s)
    with torch.no_grad():
        _, log_w, path = s.rollout(64, return_path=True)
        t = s.times.to(device)
        K = s.num_steps
        log_target = s.target.log_prob(path[-1])
        log_model = torch.zeros_like(log_w)
        for k in range(K):
            y, y1, h = path[k], path[k + 1], t[k + 1] - t[k]
            f = s.control(k, y)
            if kind == "DDS":
                a, alpha = torch.exp(-s.beta * h), 1 - torch.exp(-2 * s.beta * h)
                std = s.sigma * alpha.sqrt()
                log_model += _normal_lp(y1, a * y + 2 * s.sigma**2 * (1 - a) * f, std)
                log_target += _normal_lp(y, a * y1, std)  # OU reversal = same kernel
            elif kind == "PIS":
                log_model += _normal_lp(y1, y + s.sigma**2 * h * f, s.sigma * h.sqrt())
                if k > 0:  # Brownian bridge from y_{k+1} back to the origin (y_0 = 0 for both laws)
                    log_target += _normal_lp(y, t[k] / t[k + 1] * y1, s.sigma * (t[k] * h / t[k + 1]).sqrt())
            else:
                b = s.beta_min + (s.beta_max - s.beta_min) * (s.T - t[k]) / s.T
                b1 = s.beta_min + (s.beta_max - s.beta_min) * (s.T - t[k + 1]) / s.T
                log_model += _normal_lp(y1, y + h * (0.5 * b * y + b * f), (b * h).sqrt())
                log_target += _normal_lp(y, y1 - 0.5 * h * b1 * y1, (b1 * h).sqrt())
        if kind in ("DDS", "DIS"):  # both start from N(0, I); P* has no initial factor
            log_model += _normal_lp(path[0], torch.zeros_like(path[0]), torch.tensor(1.0, device=device))
        if kind == "PIS":
            assert float(path[0].abs().max()) == 0.0
    assert_close(log_w, log_target - log_model, loose=True)


@pytest.mark.parametrize("kind", ["DDS", "PIS", "DIS"])
def test_importance_weights_are_unbiased_for_Z(kind, device):
    """E_Q[w] = Z for any control (here: half the optimal one), up to Monte-Carlo error."""
    s = _build(kind, device, K=16)
    s.net = _scaled_optimal(s, 0.5).to(device)
    _, lw = s.sample(20000)
    w = torch.exp(lw - LOG_Z)
    assert abs(float(w.mean()) - 1.0) <= Z_SCORE * float(w.std()) / math.sqrt(w.numel())


class CountingGaussian(DiagGaussian):
    """The test Gaussian counting the points at which its log density and its score are evaluated."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.evaluations = 0

    def _log_prob(self, x):
        self.evaluations += x.shape[0]
        return super()._log_prob(x)

    def _score(self, x):
        self.evaluations += x.shape[0]
        return super()._score(x)


def _ess_by_definition(log_w: torch.Tensor) -> float:
    """(sum w)^2 / (n sum w^2), written out in float64 after shifting by the largest log weight."""
    w = torch.exp(log_w.double() - log_w.double().max())
    return float(w.sum() ** 2 / (log_w.numel() * (w * w).sum()))


@pytest.mark.parametrize("kind", ["DDS", "PIS", "DIS"])
def test_elbo_below_log_z_below_eubo(kind, device):
    s = _build(kind, device, K=16)
    s.net = _scaled_optimal(s, 0.5).to(device)
    base = s.target
    counting = CountingGaussian(base.mean, base.var, LOG_Z)
    object.__setattr__(s, "target", counting)  # same law, counted evaluations
    res = s.log_Z(4000, generator=torch.Generator(device=device).manual_seed(1))
    assert isinstance(res, LogZEstimate) and res.num_samples == 4000
    assert res.samples.shape == (4000, 2) and res.log_weights.shape == (4000,)
    assert res.elbo <= res.log_Z  # Jensen, deterministic for the same sample
    assert res.elbo - Z_SCORE * res.elbo_stderr <= LOG_Z
    assert res.eubo is not None and res.eubo + Z_SCORE * res.details["eubo_stderr"] >= LOG_Z
    assert res.eubo - res.elbo > 0.0  # KL(P*||Q) + KL(Q||P*)
    # the estimates are those of the returned weights, against their definitions
    assert_close(torch.tensor(res.ess), torch.tensor(_ess_by_definition(res.log_weights)))
    assert_close(torch.tensor(res.log_Z), torch.logsumexp(res.log_weights.double().cpu(), 0) - math.log(4000))
    # K + 1 = 17 evaluations per path (K scores for the control feature, log gamma at the end), EUBO paths alike
    assert res.num_target_evals == counting.evaluations == 2 * 4000 * 17


@pytest.mark.parametrize(
    "kind,kw", [("DDS", dict(num_steps=64, T=10.0, beta=1.0, sigma=1.0)), ("PIS", dict(num_steps=64))]
)
def test_ess_of_optimal_control_near_one_and_of_zero_control_far_below(kind, kw, device):
    """With the closed-form optimal control the log weights are nearly Gaussian with a small variance v,
    so the ESS is the log-normal value exp(-v) (E[w]^2 / E[w^2] for log w ~ N(m, v)): its deficit 1 - ESS
    matches 1 - exp(-v) to 10%, and ESS > 0.95.  The zero control (the reference process) is far below."""
    target = make_gaussian(device)
    cls = {"DDS": DDS, "PIS": PIS}[kind]
    s = cls(target, width=8, **kw).to(device, torch.float64)
    zero = s.log_Z(4000, eubo=False, generator=torch.Generator(device=device).manual_seed(2))
    s.net = GaussianOptimalControl(s, target.mean, target.var)
    opt = s.log_Z(4000, eubo=False, generator=torch.Generator(device=device).manual_seed(2))
    lognormal = math.exp(-float(opt.log_weights.var()))
    assert abs((1 - opt.ess) - (1 - lognormal)) <= 0.1 * (1 - lognormal), (opt.ess, lognormal)
    assert opt.ess > 0.95
    assert zero.ess < 0.5


@pytest.mark.parametrize(
    "kind,small,large,kw",
    [
        ("DDS", 32, 128, dict(T=10.0, beta=1.0, sigma=1.0, spacing="cosine")),
        ("PIS", 32, 128, {}),
        ("DIS", 128, 512, {}),
    ],
)
def test_optimal_control_gives_vanishing_log_weight_variance(kind, small, large, kw, device):
    """Closed-form optimal control: Var(log w) -> 0 like 1/K (discretization only), log Z exact."""
    target = make_gaussian(device)
    cls = {"DDS": DDS, "PIS": PIS, "DIS": DIS}[kind]
    var = {}
    for K in (small, large):
        s = cls(target, num_steps=K, width=8, **kw).to(device, torch.float64)
        s.net = GaussianOptimalControl(s, target.mean, target.var)
        _, lw = s.sample(2000)
        assert lw.dtype == torch.float64
        var[K] = float(lw.var())
        imp_se = float(torch.exp(lw - lw.max()).std() / torch.exp(lw - lw.max()).mean()) / math.sqrt(2000)
        assert abs(float(torch.logsumexp(lw, 0)) - math.log(2000) - LOG_Z) <= Z_SCORE * imp_se
    # Var(log w) = c / K + O(1/K^2): the ratio is small / large = 1/4 up to the second-order term
    # (a control that is not optimal keeps a variance floor and fails this)
    assert var[large] <= 0.4 * var[small]


def test_losses_and_gradient_paths(device):
    """KL differentiates through the target at y_K; log-variance never calls it on a graph."""
    calls: list[bool] = []
    base = make_gaussian(device)

    def log_gamma(x):
        calls.append(x.requires_grad)
        return base.log_prob_unchecked(x)

    for loss in ("kl", "lv"):
        target = CallableTarget(log_gamma, 2, log_Z=LOG_Z)
        s = DDS(target, num_steps=6, width=8, loss=loss).to(device, torch.float64)
        _perturb(s)
        s.check_target()
        calls.clear()
        val = s.loss(32)
        val.backward()
        grads = [p.grad for p in s.net.parameters()]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)
        terminal = calls[-1]
        assert terminal is (loss == "kl")


def test_sample_and_float32(device):
    s = PIS(make_gaussian(device, torch.float32), num_steps=5, width=8).to(device)
    x, lw = s.sample(10, batch_size=4)
    assert x.shape == (10, 2) and lw.shape == (10,)
    assert x.dtype == torch.float32 and x.device.type == device.type
    x, lw = s.sample((2, 3))
    assert x.shape == (2, 3, 2) and lw.shape == (2, 3)


@pytest.mark.parametrize("cls", [DDS, PIS, DIS])
def test_sampler_follows_a_float64_target(cls, device):
    """The default network is built in the target's dtype and device: a float64 target gives float64
    samples and weights (before: a float32 network fed float32 states to the float64 target)."""

    class FullCovGaussian(CallableTarget):  # a user's model: a matmul with its float64 buffer
        def __init__(self):
            super().__init__(lambda x: -0.5 * ((x @ self.prec) * x).sum(-1), 2, name="fullcov")
            self.register_buffer("prec", torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64, device=device))

    s = cls(FullCovGaussian(), num_steps=4, width=8)
    x, lw = s.sample(16, generator=torch.Generator(device=device).manual_seed(0))
    assert x.dtype == lw.dtype == torch.float64 and x.device.type == device.type
    assert all(p.dtype == torch.float64 for p in s.net.parameters())


def test_network_of_another_dtype_than_the_target_raises():
    target = make_gaussian()  # float64
    with pytest.raises(DeviceDtypeError, match=r"net has dtype torch\.float32.*target 'diag_gaussian' has dtype torch\.float64"):
        DDS(target, num_steps=4, net=PISGradNet(2, 8))
    s = PIS(target, num_steps=4, width=8)
    s.net = PISGradNet(2, 8)  # swapped in after construction: caught before the first rollout
    with pytest.raises(DeviceDtypeError, match="float32.*float64"):
        s.sample(4)
    with pytest.raises(ParameterError, match="net must be a torch.nn.Module"):
        DIS(target, num_steps=4, net=lambda x, t, f: x)


@pytest.mark.parametrize("cls", [DDS, PIS, DIS])
def test_generator_reproduces_draws_and_leaves_global_rng_alone(cls):
    s = cls(make_gaussian(), num_steps=5, width=8)
    _perturb(s)
    state = torch.get_rng_state()
    xa, la = s.sample(32, generator=torch.Generator().manual_seed(7))
    ea = s.log_Z(64, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)  # every draw came from the generators
    xb, lb = s.sample(32, generator=torch.Generator().manual_seed(7))
    eb = s.log_Z(64, generator=torch.Generator().manual_seed(8))
    assert torch.equal(xa, xb) and torch.equal(la, lb)
    assert ea.log_Z == eb.log_Z and ea.eubo == eb.eubo and torch.equal(ea.samples, eb.samples)
    xc, _ = s.sample(32, generator=torch.Generator().manual_seed(9))
    assert not torch.equal(xa, xc)


def test_bad_inputs():
    tg = make_gaussian()
    with pytest.raises(ParameterError, match="sigma"):
        DDS(tg, sigma=-1.0)
    with pytest.raises(ParameterError, match="loss"):
        PIS(tg, loss="forward_kl")
    with pytest.raises(ParameterError, match="spacing"):
        DIS(tg, spacing="cubic")
    with pytest.raises(ParameterError, match="num_steps"):
        DDS(tg, num_steps=0)
    with pytest.raises(ParameterError, match="beta_max"):
        DIS(tg, beta_min=2.0, beta_max=1.0)
    no_samples = CallableTarget(lambda x: -0.5 * (x**2).sum(-1), 2)
    with pytest.raises(NoExactSamplesError, match="EUBO"):
        PIS(no_samples, num_steps=3, width=8).eubo_log_weights(5)
    assert PIS(no_samples, num_steps=3, width=8).log_Z(20).eubo is None


def test_non_finite_target_reported_before_training():
    bad = CallableTarget(lambda x: torch.where(x[..., 0] > 0, torch.nan, -0.5 * (x**2).sum(-1)), 2, name="half_nan")
    s = DDS(bad, num_steps=4, width=8)
    with pytest.raises(NonFiniteError, match="half_nan.*log_prob is NaN/inf"):
        s.fit(steps=3, progress=False)


def test_divergence_stops_with_last_good_checkpoint(tmp_path):
    state = {"calls": 0}

    def log_gamma(x):
        state["calls"] += 1
        lp = -0.5 * (x**2).sum(-1)
        return lp if state["calls"] < 60 else lp * torch.nan

    s = PIS(CallableTarget(log_gamma, 2, name="turns_nan"), num_steps=4, width=8)
    ckpt = tmp_path / "pis.pt"
    with pytest.raises(TrainingDivergedError, match="diverged"):
        s.fit(steps=50, batch_size=16, checkpoint=ckpt, checkpoint_every=2, progress=False, max_bad_steps=2)
    saved = torch.load(ckpt, weights_only=False)
    assert all(bool(torch.isfinite(v).all()) for v in saved["model"].values())
    assert all(bool(torch.isfinite(p).all()) for p in s.net.parameters())


def test_state_dict_round_trip_reproduces_samples():
    a = DDS(make_gaussian(), num_steps=5, width=8).double()
    _perturb(a)
    b = DDS(make_gaussian(), num_steps=5, width=8).double()
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {f"net.{k}" for k in a.net.state_dict()}  # the target is not saved/trained
    xa, la = a.sample(16, generator=torch.Generator().manual_seed(3))
    xb, lb = b.sample(16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(xa, xb) and torch.equal(la, lb)
