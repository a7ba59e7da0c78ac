"""``fokker.mcmc.sample`` end to end: adaptation, moments within ESS-based MCSE, errors, NaN chains."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from fokker import mcmc
from fokker.errors import NonFiniteError, ParameterError, ShapeError
from fokker.targets import Banana, CallableTarget
from fokker.tolerances import Z_SCORE

from .mcmc_testlib import CorrelatedGaussian


def _check_against_truth(res: mcmc.MCMCResult, mean: torch.Tensor, cov: torch.Tensor) -> None:
    """Posterior mean and variance within Z_SCORE Monte-Carlo standard errors (ESS-based)."""
    x = res.samples
    m = x.reshape(-1, x.shape[-1]).mean(0)
    mcse = mcmc.diagnostics.mcse_mean(x).to(m)
    z = ((m - mean) / mcse).abs().max()
    assert z < Z_SCORE, f"mean off by {z:.2f} MCSE"
    # variance: the mean of (x - mu)^2, with its own ESS
    sq = (x - mean) ** 2
    v = sq.reshape(-1, x.shape[-1]).mean(0)
    z_v = ((v - cov.diagonal()) / mcmc.diagnostics.mcse_mean(sq).to(v)).abs().max()
    assert z_v < Z_SCORE, f"variance off by {z_v:.2f} MCSE"
    assert (res.rhat() < 1.05).all()


@pytest.mark.parametrize("metric", ["diag", "dense"])
def test_hmc_with_adaptation_recovers_correlated_gaussian(metric: str, device: torch.device) -> None:
    target = CorrelatedGaussian(10, device=device)
    res = mcmc.sample(target, mcmc.HMC(metric=metric), num_chains=32, num_samples=300, warmup=300, seed=1, progress=False)
    assert res.samples.shape == (32, 300, 10)
    assert res.log_prob.shape == (32, 300)
    assert 0.6 < float(res.accept_rate.mean()) < 0.95  # dual averaging aims at 0.8
    _check_against_truth(res, target.mu, target.cov)
    # the adapted inverse mass matrix approximates the covariance
    est = res.inv_mass if metric == "dense" else torch.diag(res.inv_mass)
    want = target.cov if metric == "dense" else torch.diag(target.cov.diagonal())
    assert torch.linalg.matrix_norm(est - want) / torch.linalg.matrix_norm(want) < 0.3


def test_mala_with_adaptation_recovers_banana(device: torch.device) -> None:
    target = Banana(dim=2, curvature=0.05, scale=2.0).to(device=device, dtype=torch.float64)
    res = mcmc.sample(target, mcmc.MALA(), num_chains=64, num_samples=500, warmup=300, seed=0, progress=False)
    ref = target.sample((400_000,))
    assert abs(float(res.accept_rate.mean()) - 0.574) < 0.1
    _check_against_truth(res, ref.mean(0), torch.cov(ref.T))


def test_same_seed_same_draws_and_global_rng_untouched() -> None:
    target = CorrelatedGaussian(3)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = mcmc.sample(target, mcmc.HMC(), num_chains=4, num_samples=20, warmup=30, seed=7, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = mcmc.sample(target, mcmc.HMC(), num_chains=4, num_samples=20, warmup=30, seed=7, progress=False)
    c = mcmc.sample(target, mcmc.HMC(), num_chains=4, num_samples=20, warmup=30, seed=8, progress=False)
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)


def test_plain_callable_and_summary() -> None:
    res = mcmc.sample(lambda x: -0.5 * (x * x).sum(-1), mcmc.HMC(), num_chains=8, num_samples=100, warmup=100, dim=3, progress=False, dtype=torch.float64)
    text = res.summary(print_table=False)
    for col in ("mean", "sd", "ess_bulk", "ess_tail", "r_hat", "x[2]"):
        assert col in text
    rows = res.summary_table()
    assert [r["name"] for r in rows] == ["x[0]", "x[1]", "x[2]"]


def test_fixed_step_size_without_warmup_and_ula() -> None:
    target = CorrelatedGaussian(4)
    res = mcmc.sample(target, mcmc.ULA(step_size=0.01), num_chains=4, num_samples=10, warmup=0, progress=False)
    assert float(res.step_size) == 0.01 and res.accept_rate.eq(1).all()
    with pytest.raises(ParameterError, match="step_size"):
        mcmc.sample(target, mcmc.HMC(), num_chains=2, num_samples=5, warmup=0, progress=False)


def test_sample_errors() -> None:
    target = CorrelatedGaussian(3)
    with pytest.raises(ParameterError, match="num_chains"):
        mcmc.sample(target, mcmc.HMC(), num_chains=0, num_samples=5, warmup=5, progress=False)
    with pytest.raises(ParameterError, match="num_samples"):
        mcmc.sample(target, mcmc.HMC(), num_chains=2, num_samples=0, progress=False)
    with pytest.raises(ShapeError, match=r"init must have shape \(2, 3\)"):
        mcmc.sample(target, mcmc.HMC(), num_chains=2, num_samples=5, warmup=5, init=torch.zeros(3, 3, dtype=torch.float64), progress=False)
    with pytest.raises(ParameterError, match="step_size"):
        mcmc.sample(target, mcmc.HMC(step_size=-0.5), num_chains=2, num_samples=5, progress=False)
    with pytest.raises(TypeError, match="kernel"):
        mcmc.sample(target, "hmc", num_chains=2, num_samples=5, progress=False)  # type: ignore[arg-type]
    bad = CallableTarget(lambda x: torch.where(x[..., 0] > 0, -(x * x).sum(-1), torch.full_like(x[..., 0], math.nan)), dim=2)
    init = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    with pytest.raises(NonFiniteError, match=r"initial point of chain\(s\) \[1\]"):
        mcmc.sample(bad, mcmc.HMC(), num_chains=2, num_samples=5, warmup=5, init=init, progress=False)


def test_nan_chain_is_reported_not_kept() -> None:
    """ULA (no rejection) blows up where the score explodes: the chain is reported and excluded."""

    def lp(x: torch.Tensor) -> torch.Tensor:
        return -0.25 * (x**4).sum(-1)  # x' = x - eps x^3 diverges for |x| large

    init = torch.tensor([[0.1, 0.0], [30.0, 0.0], [0.0, 0.2]], dtype=torch.float64)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = mcmc.sample(lp, mcmc.ULA(step_size=0.05), num_chains=3, num_samples=50, warmup=0, init=init, dim=2, progress=False)
    assert res.nan_chains == [1]
    assert any("non-finite" in str(x.message) for x in w)
    assert torch.isfinite(res.ess_bulk()).all()  # diagnostics use the finite chains only
    assert "nan_chains=[1]" in res.summary(print_table=False)


def test_stuck_chain_is_restarted_during_warmup() -> None:
    """Normal model y_i ~ N(mu, sigma) in (mu, log sigma): a chain started at log sigma = -8 sits
    where the curvature is ~e^16 times larger than in the bulk, so with the shared step size it
    never accepts; warm-up restarts it from a moving chain and the draws are then correct."""
    y = 2.0 + torch.linspace(-1.0, 1.0, 20, dtype=torch.float64)

    def lp(z: torch.Tensor) -> torch.Tensor:
        mu, ls = z[..., :1], z[..., 1:]
        return (-0.5 * ((y - mu) / ls.exp()) ** 2 - ls).sum(-1)  # flat priors on (mu, log sigma)

    init = torch.tensor([[2.0, 0.0]] * 7 + [[2.0, -8.0]], dtype=torch.float64)
    res = mcmc.sample(lp, mcmc.HMC(), num_chains=8, num_samples=200, warmup=200, init=init, dim=2, seed=0, progress=False)
    assert res.warmup_resets >= 1
    assert int(res.divergences.sum()) == 0 and (res.accept_rate > 0.5).all()
    # posterior of mu with flat priors on (mu, log sigma): Student-t, mean ybar
    se = float(mcmc.diagnostics.mcse_mean(res.samples[..., :1]))
    assert abs(float(res.samples[..., 0].mean()) - float(y.mean())) < Z_SCORE * se
