"""Annealing: AIS / SMC log Z against closed forms, AIS unbiasedness in exp-space, NCSN annealed Langevin."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from fokker import mcmc, targets
from fokker.errors import ParameterError, ShapeError
from fokker.targets import CallableTarget
from fokker.tolerances import Z_SCORE

from .mcmc_testlib import CorrelatedGaussian


def _iso(d: int, s: float, device="cpu") -> Independent:
    return Independent(Normal(torch.zeros(d, dtype=torch.float64, device=device), s * torch.ones(d, dtype=torch.float64, device=device)), 1)


def _within(res: mcmc.AISResult, truth: float, k: float = 3.0) -> None:
    assert math.isfinite(res.log_Z_se) and res.log_Z_se > 0
    assert abs(res.log_Z - truth) < k * res.log_Z_se, f"log Z {res.log_Z:.4f} +- {res.log_Z_se:.4f} vs {truth:.4f}"


@pytest.mark.parametrize("cls", [mcmc.AIS, mcmc.SMC])
def test_log_z_of_shifted_correlated_gaussian(cls, device: torch.device) -> None:
    """gamma = exp(c) N(mu, Sigma): log Z = c exactly."""
    g = CorrelatedGaussian(10, device=device)
    c = 3.7
    target = CallableTarget(lambda x: g.log_prob_unchecked(x) + c, dim=10)
    kernel = mcmc.HMC(step_size=0.2, num_steps=4)
    res = cls(target, _iso(10, 2.5, device), 48, kernel=kernel).run(1024, seed=0, progress=False)
    _within(res, c)
    assert res.samples.shape == (1024, 10) and res.log_weights.shape == (1024,)
    assert 0 < res.ess <= 1024


def test_smc_log_z_manywell32() -> None:
    target = targets.ManyWell(32).to(torch.float64)
    kernel = mcmc.HMC(step_size=0.2, num_steps=3)
    res = mcmc.SMC(target, _iso(32, 2.0), 64, kernel=kernel).run(1024, seed=0, progress=False)
    _within(res, 164.695675)
    assert res.num_resampling > 0


def test_ais_log_z_mog40() -> None:
    target = targets.mog40(dtype=torch.float64)
    res = mcmc.AIS(target, _iso(2, 30.0), 32, kernel=mcmc.MALA(step_size=0.5)).run(512, seed=0, progress=False)
    _within(res, 0.0)


def test_ais_is_unbiased_in_exp_space() -> None:
    """E[Z_hat] = Z for any number of particles, while E[log Z_hat] < log Z (Jensen).

    1-D target gamma(x) = exp(-x^2 / (2 * 0.3^2)) (Z = 0.3 sqrt(2 pi)), base N(0, 3^2),
    only 4 temperatures so the weights are far from constant.
    """
    target = CallableTarget(lambda x: -0.5 * (x[..., 0] / 0.3) ** 2, dim=1)
    log_z = math.log(0.3 * math.sqrt(2 * math.pi))
    n = 100_000
    res = mcmc.AIS(target, _iso(1, 3.0), torch.tensor([0.0, 0.05, 0.2, 0.5, 1.0]), kernel=mcmc.MALA(step_size=0.05)).run(n, seed=1, progress=False)
    w = torch.exp(res.log_weights - log_z)  # Z_hat / Z per single-particle estimate
    assert abs(float(w.mean()) - 1.0) < Z_SCORE * float(w.std()) / math.sqrt(n)
    # the log-space estimate from small batches is visibly biased low: the test above has power
    lw4 = torch.logsumexp(res.log_weights.reshape(-1, 4), -1) - math.log(4) - log_z
    assert float(lw4.mean()) < -Z_SCORE * float(lw4.std()) / math.sqrt(lw4.numel())


def test_smc_resamples_only_when_ess_is_low() -> None:
    target = targets.ManyWell(4).to(torch.float64)
    kernel = mcmc.HMC(step_size=0.2, num_steps=3)
    never = mcmc.SMC(target, _iso(4, 2.0), 16, kernel=kernel, resample_threshold=0.0, num_groups=4).run(256, seed=0, progress=False)
    always = mcmc.SMC(target, _iso(4, 2.0), 16, kernel=kernel, resample_threshold=1.0, num_groups=4).run(256, seed=0, progress=False)
    assert never.num_resampling == 0
    assert always.num_resampling == 16 * 4
    # without resampling SMC is AIS: the per-group estimates are both unbiased; agree within errors
    both = math.hypot(never.log_Z_se, always.log_Z_se)
    assert abs(never.log_Z - always.log_Z) < Z_SCORE * both


def test_annealed_langevin_matches_gaussian_recursion() -> None:
    """Data N(0, s0^2) perturbed by sigma has the exact score -x / (s0^2 + sigma^2); the
    variance of the ULA iterates then follows v' = (1 - eps/v_s)^2 v + 2 eps exactly."""
    s0 = 0.5
    sigmas = torch.tensor([3.0, 1.5, 0.7, 0.3], dtype=torch.float64)
    eps, m = 0.02, 20

    def score(x, sigma):
        return -x / (s0**2 + sigma[:, None] ** 2)

    x0 = sigmas[0] * torch.randn(50_000, 1, dtype=torch.float64)
    x = mcmc.annealed_langevin(score, sigmas, x0, step_size=eps, n_steps_each=m)
    v = float(sigmas[0]) ** 2
    for s in sigmas.tolist():
        e = eps * (s / float(sigmas[-1])) ** 2
        vs = s0**2 + s**2
        for _ in range(m):
            v = (1 - e / vs) ** 2 * v + 2 * e
    n = x.shape[0]
    est = float((x * x).mean())
    assert abs(est - v) < Z_SCORE * v * math.sqrt(2 / n)
    assert abs(float(x.mean())) < Z_SCORE * math.sqrt(v / n)


def test_annealing_errors() -> None:
    target = CorrelatedGaussian(2)
    base = _iso(2, 1.0)
    k = mcmc.HMC(step_size=0.1, num_steps=2)
    with pytest.raises(ParameterError, match="betas"):
        mcmc.AIS(target, base, torch.tensor([0.0, 0.7, 0.5, 1.0]), kernel=k)
    with pytest.raises(ParameterError, match="betas"):
        mcmc.AIS(target, base, torch.tensor([0.1, 1.0]), kernel=k)
    with pytest.raises(ShapeError, match="betas"):
        mcmc.AIS(target, base, torch.tensor([[0.0, 1.0]]), kernel=k)
    with pytest.raises(ParameterError, match="step_size"):
        mcmc.AIS(target, base, 10, kernel=mcmc.HMC())
    with pytest.raises(ParameterError, match="multiple of num_groups"):
        mcmc.SMC(target, base, 10, kernel=k, num_groups=8).run(100, progress=False)
    with pytest.raises(ParameterError, match="num_particles"):
        mcmc.AIS(target, base, 10, kernel=k).run(0, progress=False)
    with pytest.raises(ShapeError, match=r"\(N, 2\)"):
        mcmc.AIS(target, _iso(3, 1.0), 10, kernel=k).run(8, progress=False)
    with pytest.raises(ParameterError, match="non-increasing"):
        mcmc.annealed_langevin(lambda x, s: -x, torch.tensor([0.1, 1.0]), torch.zeros(3, 1))
    with pytest.raises(ParameterError, match="step_size"):
        mcmc.annealed_langevin(lambda x, s: -x, torch.tensor([1.0, 0.1]), torch.zeros(3, 1), step_size=0.0)
