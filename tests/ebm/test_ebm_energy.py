"""EnergyModel / GaussianEnergy as Targets, the EBM object, objective plumbing and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

import fokker.ebm as ebm
from fokker.errors import ConvergenceWarning, DeviceDtypeError, NonFiniteError, ParameterError, ShapeError
from fokker.targets import Target
from fokker.tolerances import Z_SCORE, assert_close


def _gauss(dtype=torch.float64, device="cpu"):
    loc = torch.tensor([0.5, -1.0, 2.0], dtype=dtype, device=device)
    A = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, -0.4], [0.0, -0.4, 0.7]], dtype=dtype, device=device)
    return ebm.GaussianEnergy(3, loc=loc, precision=A), loc, A


def test_gaussian_energy_is_a_normalizable_target(device, dtype):
    g, loc, P = _gauss(dtype, device)
    assert isinstance(g, Target) and g.dim == 3
    x = torch.randn(4, 2, 3, dtype=dtype, device=device)
    r = x - loc
    ref = -0.5 * torch.einsum("...i,ij,...j->...", r, P, r) + 0.5 * torch.logdet(P) - 1.5 * math.log(2 * math.pi)
    assert_close(g.log_prob(x) - g.log_Z, ref, loose=True)
    assert_close(g.precision, P, loose=True)
    assert_close(g.score(x), -(x - loc) @ P, loose=True)
    lp, s = g.log_prob_and_score(x)
    assert_close(s, -(x - loc) @ P, loose=True)
    assert g.has_exact_samples


def test_gaussian_energy_exact_samples_have_its_moments():
    g, loc, P = _gauss()
    n = 50_000
    x = g.sample((n,))
    cov = torch.linalg.inv(P)
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert torch.all((x.mean(0) - loc).abs() <= Z_SCORE * se_mean)
    # var of the sample covariance entry (i, j) is (S_ii S_jj + S_ij^2) / n for Gaussians
    se_cov = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov**2) / n)
    assert torch.all((torch.cov(x.T) - cov).abs() <= Z_SCORE * se_cov)


def test_energy_model_wraps_a_network():
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model = ebm.EnergyModel(net, dim=2)
    x = torch.randn(5, 2)
    assert_close(model.log_prob(x), -net(x).squeeze(-1))
    assert_close(model.energy(x), net(x).squeeze(-1))
    assert model.log_Z is None and not model.has_exact_samples
    # score by autograd
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xg).sum(), xg)
    assert_close(model.score(x), -g)


def test_energy_model_bad_inputs():
    model = ebm.EnergyModel(torch.nn.Linear(2, 3), dim=2)
    with pytest.raises(ShapeError, match="energies of shape"):
        model.log_prob(torch.zeros(4, 2))
    good = ebm.EnergyModel(torch.nn.Linear(2, 1), dim=2)
    with pytest.raises(ShapeError, match="x must have shape"):
        good.log_prob(torch.zeros(4, 3))
    with pytest.raises(NonFiniteError, match="x contains"):
        good.log_prob(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(DeviceDtypeError, match="dtype"):
        good.log_prob(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ParameterError, match="dim"):
        ebm.EnergyModel(torch.nn.Linear(2, 1), dim=0)
    with pytest.raises(ParameterError, match="positive definite"):
        ebm.GaussianEnergy(2, precision=-torch.eye(2))
    with pytest.raises(ParameterError, match="symmetric"):
        ebm.GaussianEnergy(2, precision=torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ShapeError, match="loc must have shape"):
        ebm.GaussianEnergy(2, loc=torch.zeros(3))
    with pytest.raises(ShapeError, match="precision must have shape"):
        ebm.GaussianEnergy(2, precision=torch.eye(3))


def test_ebm_sample_matches_gaussian_moments():
    """EBM.sample runs parallel MALA chains; after mixing, mean and covariance match the closed form."""
    g, loc, P = _gauss()
    model = ebm.EBM(g, "exact")
    n = 4000
    x = model.sample((n,), num_steps=300, seed=0)
    assert x.shape == (n, 3)
    cov = torch.linalg.inv(P)
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert torch.all((x.mean(0) - loc).abs() <= Z_SCORE * se_mean)
    se_cov = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov**2) / n)
    assert torch.all((torch.cov(x.T) - cov).abs() <= Z_SCORE * se_cov)
    assert model.sample((2, 5), num_steps=2).shape == (2, 5, 3)
    # mcmc() gives the fokker.mcmc result with diagnostics; 8 chains of 50 draws are too short to
    # converge, and its diagnostics say so
    with pytest.warns(ConvergenceWarning, match="R-hat"):
        res = model.mcmc(num_chains=8, num_samples=50, warmup=50, seed=1)
    assert res.samples.shape == (8, 50, 3)
    init = torch.zeros(2, 3, dtype=torch.float64)
    assert model.sample((2,), num_steps=1, init=init, seed=0).shape == init.shape
    with pytest.raises(ShapeError, match="init must have shape"):
        model.sample((2,), init=torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(DeviceDtypeError, match="init has dtype torch.float32"):
        model.sample((2,), init=torch.zeros(2, 3))


def test_ebm_sample_is_reproducible_from_its_generator():
    g, _, _ = _gauss()
    model = ebm.EBM(g, "exact")
    before = torch.random.get_rng_state()
    a = model.sample(5, num_steps=20, seed=3)
    b = model.sample((5,), num_steps=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a, b) and a.shape == (5, 3)
    assert not torch.equal(a, model.sample(5, num_steps=20, seed=4))


def test_ebm_construction_and_loss_errors():
    with pytest.raises(ParameterError, match="dim is required"):
        ebm.EBM(torch.nn.Linear(2, 1))
    with pytest.raises(ParameterError, match="nce"):
        ebm.EBM(ebm.GaussianEnergy(2), objective="nce")
    model = ebm.EBM(torch.nn.Linear(2, 1), objective="cd", dim=2)
    assert isinstance(model.objective, ebm.ContrastiveDivergence)
    with pytest.raises(ShapeError, match="batch must have shape"):
        model.loss(torch.zeros(4, 3))
    with pytest.raises(ShapeError, match="batch must have shape"):
        model.loss(torch.zeros(2, 4, 2))
    with pytest.raises(ParameterError, match="log Z is unknown"):
        model.normalized_log_prob(torch.zeros(1, 2))
    assert model.log_Z is None
    for name, cls in [("exact", ebm.ExactScoreMatching), ("sliced", ebm.SlicedScoreMatching),
                      ("denoising", ebm.DenoisingScoreMatching), ("pcd", ebm.PersistentContrastiveDivergence)]:
        assert isinstance(ebm.make_objective(name), cls)


def test_objective_parameter_errors():
    with pytest.raises(ParameterError, match="sampler"):
        ebm.contrastive_divergence(sampler="hmc")
    with pytest.raises(ParameterError, match="noise_scale"):
        ebm.contrastive_divergence(sampler="mala", noise_scale=0.1)
    with pytest.raises(ParameterError, match="k must be"):
        ebm.contrastive_divergence(k=0)
    with pytest.raises(ParameterError, match="step_size"):
        ebm.contrastive_divergence(step_size=0.0)
    with pytest.raises(ParameterError, match="energy_reg"):
        ebm.contrastive_divergence(energy_reg=-1.0)
    with pytest.raises(ParameterError, match="reinit_prob"):
        ebm.persistent_contrastive_divergence(reinit_prob=1.5)
    with pytest.raises(ParameterError, match="ratio"):
        ebm.nce(torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)), ratio=0)
    with pytest.raises(ParameterError, match="event shape"):
        ebm.nce(torch.distributions.Normal(0.0, 1.0))
    with pytest.raises(ParameterError, match="exact samples"):
        ebm.nce(ebm.EnergyModel(torch.nn.Linear(2, 1), dim=2))
    with pytest.raises(TypeError, match="noise must be"):
        ebm.nce("gaussian")
    bad_dim = ebm.nce(torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3)))
    with pytest.raises(ParameterError, match="dimension 3"):
        ebm.EBM(ebm.GaussianEnergy(2), bad_dim)
    bad_dtype = ebm.nce(torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)))
    with pytest.raises(DeviceDtypeError, match="noise samples"):
        ebm.EBM(ebm.GaussianEnergy(2, dtype=torch.float64), bad_dtype)


def test_nce_accepts_a_normalized_target_as_noise():
    noise = ebm.GaussianEnergy(2, precision=0.25 * torch.eye(2, dtype=torch.float64))  # log_Z known, exact samples
    obj = ebm.nce(noise, ratio=1.5)
    model = ebm.EBM(ebm.GaussianEnergy(2, dtype=torch.float64), obj)
    loss = model.loss(torch.randn(10, 2, dtype=torch.float64))
    loss.backward()
    assert obj.log_Z.grad is not None
    # the noise is not part of the trained parameters
    assert all(p is not q for p in model.parameters() for q in noise.parameters())


def test_replay_buffer_restart_fraction_and_round_trip():
    buf = ebm.ReplayBuffer(500, reinit_prob=0.05, init=lambda n: torch.full((n, 2), 7.0))
    buf.fill(2, torch.float32, torch.device("cpu"))
    assert torch.all(buf.data == 7.0)
    buf.data.zero_()
    n = 20_000
    x0, idx = buf.draw(n)
    frac = float((x0[:, 0] == 7.0).double().mean())
    assert abs(frac - 0.05) <= Z_SCORE * math.sqrt(0.05 * 0.95 / n)
    x1, i1 = buf.draw(100, generator=torch.Generator().manual_seed(1))
    x2, i2 = buf.draw(num_samples=100, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x1, x2) and torch.equal(i1, i2)
    buf.update(idx[:3], torch.ones(3, 2))
    assert torch.all(buf.data[idx[:3]] == 1.0)
    # a PCD objective saved in a model's state_dict loads into a fresh one (the buffer is resized)
    a = ebm.EBM(ebm.GaussianEnergy(2), ebm.persistent_contrastive_divergence(buffer_size=50, k=2))
    a.loss(torch.randn(8, 2))
    b = ebm.EBM(ebm.GaussianEnergy(2), ebm.persistent_contrastive_divergence(buffer_size=50, k=2))
    b.objective.buffer.data = torch.empty(0)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.objective.buffer.data, a.objective.buffer.data)


def test_pcd_writes_negatives_back_and_energy_reg():
    torch.manual_seed(0)
    obj = ebm.persistent_contrastive_divergence(buffer_size=64, reinit_prob=0.0, k=3, step_size=0.01, energy_reg=1.0)
    model = ebm.EBM(ebm.GaussianEnergy(2), obj)
    before = obj.buffer.data.clone()
    loss = model.loss(torch.randn(16, 2))
    changed = (obj.buffer.data != before).any(-1)
    assert 0 < int(changed.sum()) <= 16
    loss.backward()
    assert model.energy_model.loc.grad is not None
    assert float(obj.last_accept_rate) == 1.0
