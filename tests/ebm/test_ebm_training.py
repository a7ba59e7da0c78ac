"""Each EBM trainer fits a Gaussian EBM to Gaussian data: the parameters approach the data's moments."""

from __future__ import annotations

import pytest
import torch
from _ebm_gaussian import sample_gaussian

import fokker.ebm as ebm
from fokker.tolerances import assert_close
from fokker.train import fit

DT = torch.float64
M = torch.tensor([1.0, -0.5], dtype=DT)
S = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=DT) * 0.5
SIGMA_DSM = 0.3


def _data(n: int = 4000) -> torch.Tensor:
    return sample_gaussian(M, S, n, generator=torch.Generator().manual_seed(123))


def _objective(name: str):
    if name == "exact":
        return ebm.exact()
    if name == "sliced":
        return ebm.sliced(num_projections=1)
    if name == "sliced_vr":
        return ebm.sliced(num_projections=2, distribution="gaussian", variance_reduction=True)
    if name == "denoising":
        return ebm.denoising(SIGMA_DSM)
    if name == "cd_langevin":
        return ebm.contrastive_divergence(k=10, step_size=0.05)
    if name == "cd_mala":
        return ebm.contrastive_divergence(k=10, step_size=0.1, sampler="mala")
    if name == "pcd":
        return ebm.persistent_contrastive_divergence(buffer_size=1000, k=10, step_size=0.05)
    if name == "nce":
        noise = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=DT), 4 * torch.eye(2, dtype=DT))
        return ebm.nce(noise, ratio=2)
    raise AssertionError(name)


def _fit(model, data, steps, batch_size=256, lr=0.05):
    sched = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # noqa: E731
    return fit(model, data, steps=steps, batch_size=batch_size, lr=lr, scheduler=sched, progress=False)


NAMES = ["exact", "sliced", "sliced_vr", "denoising", "cd_langevin", "cd_mala", "pcd", "nce"]


@pytest.mark.parametrize("name", NAMES)
def test_trainer_fits_gaussian_ebm(name):
    data = _data()
    m_hat, S_hat = data.mean(0), torch.cov(data.T)
    # the minimizer of DSM is the noised data law N(m, S + sigma^2 I)
    S_target = S_hat + (SIGMA_DSM**2 * torch.eye(2, dtype=DT) if name == "denoising" else 0)
    model = ebm.EBM(ebm.GaussianEnergy(2, dtype=DT), _objective(name))
    g = model.energy_model
    with torch.no_grad():
        d_mu0 = float((g.loc - m_hat).norm())
        d_S0 = float((g.covariance - S_target).norm())
    result = _fit(model, data, steps=400 if name not in ("cd_mala", "pcd") else 300)
    assert len(result.losses) == result.steps
    with torch.no_grad():
        d_mu = float((g.loc - m_hat).norm())
        d_S = float((g.covariance - S_target).norm())
    # data moments are known to ~ 0.02 (se of the sample mean); minibatch / MCMC noise adds a bit
    assert d_mu < 0.08 and d_mu < 0.1 * d_mu0, (d_mu, d_mu0)
    assert d_S < 0.12 and d_S < 0.2 * d_S0, (d_S, d_S0)


def test_exact_score_matching_minimizer_is_the_sample_moments():
    """Full-batch exact SM on a Gaussian family is minimized exactly by the sample mean and covariance."""
    data = _data(500)
    model = ebm.EBM(ebm.GaussianEnergy(2, dtype=DT), "exact")
    _fit(model, data, steps=600, batch_size=500, lr=0.05)
    g = model.energy_model
    with torch.no_grad():
        assert float((g.loc - data.mean(0)).norm()) < 2e-3
        assert float((g.covariance - torch.cov(data.T, correction=0)).norm()) < 5e-3


def test_nce_recovers_log_Z_of_gaussian_ebm():
    """The learned NCE normalizer equals the closed-form log Z of the fitted energy, and the true one."""
    data = _data()
    obj = _objective("nce")
    model = ebm.EBM(ebm.GaussianEnergy(2, dtype=DT), obj)
    _fit(model, data, steps=400)
    g = model.energy_model
    true_log_Z = 0.5 * 2 * torch.log(torch.tensor(2 * torch.pi, dtype=DT)) + 0.5 * torch.logdet(S)
    assert abs(float(obj.log_Z.detach()) - g.log_Z) < 0.05
    assert abs(float(obj.log_Z.detach()) - float(true_log_Z)) < 0.1
    # an energy with a closed-form log Z reports it; a black-box energy reports the NCE estimate
    x = data[:5]
    ref = torch.distributions.MultivariateNormal(g.loc.detach(), g.covariance.detach()).log_prob(x)
    assert model.log_Z == g.log_Z
    assert_close(model.normalized_log_prob(x).detach(), ref)
    black_box = ebm.EBM(ebm.EnergyModel(g.energy, dim=2), obj)
    assert black_box.log_Z == float(obj.log_Z.detach())
    # the learned log Z is within 0.05 of the true one (asserted above): so is the normalized density
    torch.testing.assert_close(black_box.normalized_log_prob(x).detach(), ref, rtol=0, atol=0.05)


def test_nce_with_frozen_energy_estimates_log_Z():
    """With the energy fixed at the data law, NCE's only free parameter c converges to log Z."""
    data = _data(20_000)
    energy = ebm.GaussianEnergy(2, loc=M, precision=torch.linalg.inv(S))
    energy.requires_grad_(False)
    obj = ebm.nce(torch.distributions.MultivariateNormal(M, 2 * S), ratio=4)
    model = ebm.EBM(energy, obj)
    _fit(model, data, steps=300, batch_size=2000, lr=0.05)
    assert abs(float(obj.log_Z.detach()) - energy.log_Z) < 0.03


def test_neural_energy_trains_with_fit_and_loss_decreases():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1)).double()
    model = ebm.EBM(net, objective="sliced", dim=2)
    result = fit(model, _data(1000), steps=150, batch_size=128, lr=1e-2, progress=False)
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-20:]) / 20
    assert last < first


def test_fit_with_ema_checkpoint_and_resume_keeps_pcd_buffer_and_nce_log_Z(tmp_path):
    """EBM objectives' state (replay buffer, learned log Z) goes through fit's EMA copy and checkpoints."""
    data = _data(512)
    ck = tmp_path / "pcd.pt"

    def make():
        torch.manual_seed(0)  # the buffer is filled at construction
        return ebm.EBM(ebm.GaussianEnergy(2, dtype=DT), ebm.persistent_contrastive_divergence(buffer_size=64, k=2))

    full = make()
    fit(full, data, steps=20, batch_size=64, lr=0.01, progress=False, seed=0)
    part = make()
    fit(part, data, steps=10, batch_size=64, lr=0.01, progress=False, checkpoint=ck, checkpoint_every=10, ema=0.9,
        seed=0)
    resumed = make()
    fit(resumed, data, steps=20, batch_size=64, lr=0.01, progress=False, checkpoint=ck, checkpoint_every=10, ema=0.9,
        seed=0)
    torch.testing.assert_close(resumed.objective.buffer.data, full.objective.buffer.data)
    torch.testing.assert_close(resumed.energy_model.loc, full.energy_model.loc)

    noise = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=DT), 4 * torch.eye(2, dtype=DT))
    model = ebm.EBM(ebm.GaussianEnergy(2, dtype=DT), ebm.nce(noise))
    res = fit(model, data, steps=5, batch_size=64, lr=0.01, progress=False, ema=0.5)
    assert res.ema is not None and "objective.log_Z" in dict(res.ema.module.named_parameters())


@pytest.mark.parametrize("name", ["exact", "cd_mala"])
def test_float32_training_on_device(name, device):
    """float32 parameters and data on every device: the fit follows the inputs' dtype and device."""
    data = _data(2000).to(device, torch.float32)
    obj = _objective(name)
    model = ebm.EBM(ebm.GaussianEnergy(2, dtype=torch.float32, device=device), obj)
    _fit(model, data, steps=200)
    g = model.energy_model
    assert g.loc.dtype == torch.float32 and g.loc.device.type == device.type
    with torch.no_grad():
        assert float((g.loc - data.mean(0)).norm()) < 0.08
        assert float((g.covariance - torch.cov(data.T)).norm()) < 0.12
