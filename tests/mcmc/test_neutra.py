"""NeuTra (Hoffman et al. 2019): the pulled-back density against an autograd Jacobian, an exact transport
gives a standard normal, and HMC through a fitted flow recovers the funnel's neck."""

from __future__ import annotations

import math

import pytest
import torch

from fokker import flows, mcmc, targets
from fokker.errors import ShapeError
from fokker.tolerances import Z_SCORE, assert_close


def test_pull_back_density_matches_autograd_jacobian(device: torch.device) -> None:
    """log gamma~(z) = log gamma(T(z)) + log|det dT/dz| with the determinant of the autograd Jacobian."""
    torch.manual_seed(0)
    flow = flows.realnvp(3, transforms=2, hidden=(8,)).to(device, torch.float64)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    target = targets.Funnel(3).to(device, torch.float64)
    pulled = mcmc.NeuTraTarget(target, flow)
    z = torch.randn(5, 3, dtype=torch.float64, device=device)
    want = []
    for zi in z:
        jac = torch.autograd.functional.jacobian(lambda v: flow.forward_and_ladj(v[None])[0][0], zi)
        want.append(target.log_prob(pulled.push_forward(zi[None]))[0] + torch.linalg.slogdet(jac)[1])
    assert_close(pulled.log_prob(z), torch.stack(want))
    assert pulled.log_Z == target.log_Z


def test_exact_transport_pulls_back_to_a_standard_normal() -> None:
    """T(z) = m + s z for a Gaussian target e^c N(m, s^2): the pull-back is e^c N(0, I) exactly."""
    c = 0.7
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 3.0], dtype=torch.float64)
    normal = torch.distributions.Normal(m, s)
    target = targets.CallableTarget(lambda x: normal.log_prob(x).sum(-1) + c, dim=2)
    flow = flows.Flow([flows.ActNorm(2)], 2).double()
    layer = flow.transforms[0]
    with torch.no_grad():
        layer.loc.copy_(m)
        layer.log_scale.copy_(s.log())
    z = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pulled = mcmc.NeuTraTarget(target, flow)
    assert_close(pulled.log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + c)
    assert_close(pulled.push_forward(z), m + s * z)


def test_neutra_hmc_reaches_the_funnel_neck() -> None:
    """Funnel(3) (x0 ~ N(0, 9)): after a short reverse-KL fit, HMC in the flow's latent space gives the mean of
    x0 and the mass of the neck P(x0 < -3) = Phi(-1) within Z_SCORE Monte-Carlo errors (from the bulk ESS), with
    R-hat < 1.05; the samples, log_prob and constrained fields are in the target's space."""
    target = targets.Funnel(3).to(torch.float64)
    torch.manual_seed(0)
    flow = flows.realnvp(3, transforms=2, hidden=(32,)).double()
    flows.fit_to_target(flow, target, 200, lr=3e-3, batch_size=128, num_samples=16, seed=0, progress=False)
    res = mcmc.neutra(target, flow, mcmc.HMC(num_steps=4), num_chains=8, num_samples=150, warmup=150, seed=0, progress=False)
    x0 = res.samples[..., 0]
    assert res.samples.shape == (8, 150, 3)
    assert_close(res.log_prob, target.log_prob(res.samples))
    assert res.kernel_diagnostics["latent_samples"].shape == (8, 150, 3)
    ess = float(res.ess_bulk()[0])
    assert float(res.rhat().max()) < 1.05
    assert abs(float(x0.mean())) <= Z_SCORE * 3.0 / math.sqrt(ess)
    p = 0.5 * math.erfc(1 / math.sqrt(2))  # Phi(-1)
    neck = float((x0 < -3).double().mean())
    assert abs(neck - p) <= Z_SCORE * math.sqrt(p * (1 - p) / ess)
    # the check has power: plain HMC with the same budget finds (almost) none of the neck
    plain = mcmc.sample(target, mcmc.HMC(num_steps=4), num_chains=8, num_samples=150, warmup=150, seed=0, progress=False)
    assert float((plain.samples[..., 0] < -3).double().mean()) < p / 4


def test_neutra_bad_input() -> None:
    with pytest.raises(ShapeError, match=r"the flow must map R\^3 to R\^3"):
        mcmc.NeuTraTarget(targets.Funnel(3), flows.realnvp(2, transforms=1, hidden=(4,)))
    with pytest.raises(TypeError, match="flow must be a fokker.flows.Flow"):
        mcmc.NeuTraTarget(targets.Funnel(3), torch.nn.Linear(3, 3))


def test_neutra_same_seed_same_draws_and_global_rng_untouched() -> None:
    target = targets.Funnel(2).to(torch.float64)
    flow = flows.Flow([flows.ActNorm(2)], 2).double()
    before = torch.random.get_rng_state()
    a = mcmc.neutra(target, flow, mcmc.HMC(num_steps=2), num_chains=2, num_samples=5, warmup=5, seed=3, progress=False)
    b = mcmc.neutra(target, flow, mcmc.HMC(num_steps=2), num_chains=2, num_samples=5, warmup=5,
                    generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.samples, b.samples)
