"""CMCD and MCD: the exact discrete weights against independently written path densities,
unbiasedness, ELBO <= log Z <= EUBO, the closed-form transport control, gradients and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from fokker.errors import ParameterError, ShapeError
from fokker.samplers import CMCD, MCD, GaussianOptimalControl
from fokker.tolerances import Z_SCORE, assert_close

from .conftest import LOG_Z, make_gaussian

CLASSES = {"CMCD": CMCD, "MCD": MCD}


def _perturbed(kind, device, K=6, scale=0.2, **kw):
    s = CLASSES[kind](make_gaussian(device), num_steps=K, step_size=0.15, width=8, **kw).to(device, torch.float64)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(device))
    return s


def _annealed_score(s, k, y):
    """grad of (1 - beta_k) log N(y; m0, s0^2) + beta_k log gamma(y) by autograd of the written-out density."""
    beta = s.betas()[k].detach()
    m0, s0 = s.base_loc.detach(), torch.exp(s.base_log_scale.detach())
    yg = y.detach().requires_grad_(True)
    lp = (1 - beta) * Normal(m0, s0).log_prob(yg).sum(-1) + beta * s.target.log_prob(yg)
    (g,) = torch.autograd.grad(lp.sum(), yg)
    return g


@pytest.mark.parametrize("kind", ["CMCD", "MCD"])
def test_log_weight_equals_independent_path_density_ratio(kind, device):
    s = _perturbed(kind, device)
    cf, cb = (1.0, -1.0) if kind == "CMCD" else (0.0, 1.0)
    with torch.no_grad():
        _, log_w, path = s.rollout(64, return_path=True, generator=torch.Generator(device=device).manual_seed(0))
    h = s.step_sizes().detach()
    m0, s0 = s.base_loc.detach(), torch.exp(s.base_log_scale.detach())
    expected = s.target.log_prob(path[-1]) - Normal(m0, s0).log_prob(path[0]).sum(-1)
    for k in range(s.num_steps):
        y, y1 = path[k], path[k + 1]
        with torch.no_grad():
            u, u1 = s.control(k, y), s.control(k + 1, y1)
        fwd = Normal(y + h[k] * (_annealed_score(s, k, y) + cf * u), torch.sqrt(2 * h[k]))
        bwd = Normal(y1 + h[k] * (_annealed_score(s, k + 1, y1) + cb * u1), torch.sqrt(2 * h[k]))
        expected += bwd.log_prob(y).sum(-1) - fwd.log_prob(y1).sum(-1)
    assert_close(log_w, expected, loose=True, scale=float(expected.abs().max()))
    betas = s.betas().detach()
    assert float((betas[1:] - betas[:-1]).min()) > 0 and float(betas[-1]) == 1.0


def _half_optimal(s):
    opt = GaussianOptimalControl(s, s.target.mean, s.target.var)

    class Half(torch.nn.Module):
        def forward(self, x, t, feature):
            return 0.5 * opt(x, t)

    return Half()


@pytest.mark.parametrize("kind", ["CMCD", "MCD"])
def test_weights_unbiased_and_bounds(kind, device):
    """E w = Z for an imperfect control; ELBO <= log Z <= EUBO with their Monte-Carlo errors."""
    s = CLASSES[kind](make_gaussian(device), num_steps=12, step_size=0.1, width=8).to(device, torch.float64)
    if kind == "CMCD":
        s.net = _half_optimal(s)
    else:
        s = _perturbed(kind, device, K=12, scale=0.05)
    res = s.log_Z(8000, generator=torch.Generator(device=device).manual_seed(1))
    w = torch.exp(res.log_weights - LOG_Z)
    assert abs(float(w.mean()) - 1.0) <= Z_SCORE * float(w.std()) / math.sqrt(w.numel())
    assert res.elbo - Z_SCORE * res.elbo_stderr <= LOG_Z <= res.eubo + Z_SCORE * res.details["eubo_stderr"]
    assert res.eubo - res.elbo > 0.05  # an imperfect control leaves a gap that the bounds see


def test_transport_control_gives_vanishing_log_weight_variance(device):
    """The closed-form transport field of the Gaussian path: log Z exact and Var(log w) ~ 1/K at a fixed
    total Langevin time; the zero control (unadjusted Langevin AIS) keeps a floor."""
    target = make_gaussian(device)
    var, zero = {}, {}
    for K in (32, 128):
        s = CMCD(target, num_steps=K, step_size=2.0 / K, width=8).to(device, torch.float64)
        est0 = s.log_Z(2000, eubo=False, generator=torch.Generator(device=device).manual_seed(3))
        s.net = GaussianOptimalControl(s, target.mean, target.var)
        est = s.log_Z(2000, eubo=False, generator=torch.Generator(device=device).manual_seed(3))
        assert abs(est.log_Z - LOG_Z) <= Z_SCORE * est.stderr
        var[K], zero[K] = float(est.log_weights.var()), float(est0.log_weights.var())
    assert var[128] <= 0.4 * var[32]
    assert zero[128] > 0.5 * zero[32] and zero[128] > 20 * var[128]


@pytest.mark.parametrize("kind", ["CMCD", "MCD"])
def test_losses_reach_every_learned_part(kind, device):
    for loss in ("lv", "kl"):
        s = _perturbed(kind, device, loss=loss)
        s.zero_grad()
        s.loss(32).backward()
        for name in ("base_loc", "base_log_scale", "schedule_logits", "log_step_scale"):
            g = getattr(s, name).grad
            assert g is not None and float(g.abs().max()) > 0, (loss, name)
        assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in s.net.parameters())


def test_kl_gradient_matches_finite_differences(device):
    """The reparameterized KL gradient includes the second derivatives of log gamma inside the drift:
    compared with central differences of the loss on common random numbers (float64).  The network's
    score feature is used without gradient (DDS's stop-gradient), so its gain is zeroed here."""
    s = _perturbed("CMCD", device, loss="kl")
    with torch.no_grad():
        s.net.time_gain[-1].weight.zero_()
        s.net.time_gain[-1].bias.zero_()

    def loss():
        _, lw = s.rollout(16, generator=torch.Generator(device=device).manual_seed(4))
        return -lw.mean()

    s.zero_grad()
    loss().backward()
    grad = s.base_loc.grad.clone()
    eps = 1e-5
    fd = torch.zeros_like(grad)
    with torch.no_grad():
        for i in range(grad.numel()):
            s.base_loc[i] += eps
            up = float(loss())
            s.base_loc[i] -= 2 * eps
            down = float(loss())
            s.base_loc[i] += eps
            fd[i] = (up - down) / (2 * eps)
    assert_close(grad, fd, loose=True, scale=10.0)  # central differences: error ~ eps^2 * third derivative


def test_fixed_base_and_bad_input(device):
    target = make_gaussian(device)
    prior = MultivariateNormal(torch.zeros(2, dtype=torch.float64, device=device),
                               2.0 * torch.eye(2, dtype=torch.float64, device=device))
    s = CMCD(target, num_steps=8, width=8, base=prior).to(device, torch.float64)
    x, lw = s.sample(16, generator=torch.Generator(device=device).manual_seed(0))
    assert x.shape == (16, 2) and lw.shape == (16,) and not s.base_loc.requires_grad
    # the initial factor is the fixed base's density: the weight of the zero-length path is gamma / p_0
    s0 = CMCD(target, num_steps=1, width=8, base=prior, step_size=1e-12).to(device, torch.float64)
    with torch.no_grad():
        _, lw0, path = s0.rollout(8, return_path=True)
    assert_close(lw0, target.log_prob(path[-1]) - prior.log_prob(path[0]), loose=True, scale=10.0)
    wrong = MultivariateNormal(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"base must be one distribution over R\^2.*got event_shape \(3,\)"):
        CMCD(target, base=wrong)
    with pytest.raises(ShapeError, match="schedule must have shape"):
        CMCD(target, num_steps=4, schedule=torch.linspace(0, 1, 4))
    with pytest.raises(ParameterError, match="increase strictly"):
        MCD(target, num_steps=2, schedule=torch.tensor([0.0, 0.7, 0.5]))
    with pytest.raises(ParameterError, match="step_size"):
        CMCD(target, step_size=0.0)
