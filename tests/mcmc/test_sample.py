"""``fokker.mcmc.sample`` end to end: adaptation, moments within ESS-based MCSE, errors, NaN chains."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from fokker import mcmc
from fokker.errors import DeviceDtypeError, NonFiniteError, ParameterError, ShapeError
from fokker.mcmc.kernels import State
from fokker.targets import Banana, CallableTarget
from fokker.tolerances import Z_SCORE, assert_close

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
    g = torch.Generator().manual_seed(7)
    d = mcmc.sample(target, mcmc.HMC(), num_chains=4, num_samples=20, warmup=30, generator=g, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.samples, d.samples)
    assert not torch.equal(a.samples, c.samples)
    with pytest.raises(ParameterError, match="either generator= or seed="):
        mcmc.sample(target, mcmc.HMC(), num_chains=2, num_samples=2, warmup=2, seed=1, generator=g, progress=False)


def test_summary_returns_the_table_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """print(res.summary()) shows the table once (summary() used to print it as well)."""
    res = mcmc.sample(lambda x: -0.5 * (x * x).sum(-1), mcmc.HMC(), num_chains=8, num_samples=100, warmup=100, dim=3,
                      seed=0, progress=False, dtype=torch.float64)
    text = res.summary()
    assert capsys.readouterr().out == ""
    for col in ("mean", "sd", "ess_bulk", "ess_tail", "r_hat", "x[2]"):
        assert col in text
    print(res.summary())
    assert capsys.readouterr().out.count("ess_bulk") == 1
    res.print_summary()
    assert capsys.readouterr().out == text + "\n"
    rows = res.summary_table()
    assert [r["name"] for r in rows] == ["x[0]", "x[1]", "x[2]"]
    # the table's numbers are those of the draws: mean and sd of x[0] over all chains and draws
    flat = res.samples[..., 0].reshape(-1)
    assert_close(torch.tensor(rows[0]["mean"]), flat.mean())
    assert_close(torch.tensor(rows[0]["sd"]), flat.std())


def test_sample_stats_are_the_per_draw_transition_statistics() -> None:
    """sample_stats (chains, draws) agree with the totals accumulated separately over the transitions."""
    target = CorrelatedGaussian(4)
    res = mcmc.sample(target, mcmc.HMC(num_steps=5), num_chains=6, num_samples=40, warmup=60, seed=3, progress=False)
    st = res.sample_stats
    assert set(st) == {"accept_prob", "accepted", "energy_error", "divergent", "num_steps", "step_size"}
    assert all(v.shape == (6, 40) for v in st.values())
    assert_close(st["accept_prob"].mean(1), res.accept_rate)  # thin=1: every transition is a draw
    assert torch.equal(st["divergent"].sum(1), res.divergences)
    assert torch.equal(st["num_steps"], torch.full((6, 40), 5))
    assert res.num_steps == 5 * 40
    assert torch.equal(st["step_size"], torch.as_tensor(res.step_size).expand(6, 40))
    # an accepted move changes the state, a rejected one keeps it
    moved = (res.samples[:, 1:] != res.samples[:, :-1]).any(-1)
    assert torch.equal(moved, st["accepted"][:, 1:])
    assert res.kernel_diagnostics["step_size"] is res.step_size
    assert res.kernel_diagnostics["num_metric_updates"] == len(res.kernel_diagnostics["metric_windows"]) > 0


class _RandomWalk(mcmc.Kernel):
    """Random-walk Metropolis with a per-chain extra statistic: a kernel the driver has never seen."""

    def step(self, state: State):
        eps = self._eps(state.x)
        z = torch.randn(state.x.shape, dtype=state.x.dtype, generator=self.generator)
        y = state.x + eps * self.metric.sqrt_times(z)  # N(x, eps^2 S): uses the adapted metric
        lp, g = self.log_prob_and_grad(y)
        jump = (y - state.x).norm(dim=-1)
        return self.accept_reject(state, State(y, lp, g), lp - state.log_prob, 1, eps, extra={"jump": jump})


def test_a_new_kernel_runs_through_the_unchanged_driver() -> None:
    """The driver touches only the kernel protocol: a new kernel gets Stan's warm-up and its stats recorded."""
    target = CorrelatedGaussian(2)
    res = mcmc.sample(target, _RandomWalk(target_accept=0.3), num_chains=64, num_samples=300, warmup=300, seed=0,
                      progress=False)
    assert res.sample_stats["jump"].shape == (64, 300)
    assert abs(float(res.accept_rate.mean()) - 0.3) < 0.1  # dual averaging drove the acceptance to the target
    _check_against_truth(res, target.mu, target.cov)


def test_adapted_kernel_reused_without_warmup_keeps_its_metric() -> None:
    """result.kernel with warmup=0 samples on with the adapted step size *and* metric (the metric used to reset)."""
    target = CorrelatedGaussian(3)
    res = mcmc.sample(target, mcmc.HMC(), num_chains=8, num_samples=20, warmup=150, seed=0, progress=False)
    more = mcmc.sample(target, res.kernel, num_chains=8, num_samples=20, warmup=0, seed=1, progress=False)
    assert torch.equal(more.inv_mass, res.inv_mass)
    assert more.step_size is res.step_size
    assert not torch.equal(res.inv_mass, torch.ones(3, dtype=torch.float64))


def test_windowed_adaptation_is_a_composable_part() -> None:
    """An explicit adapter replaces the default one: no metric windows means the identity metric stays."""
    target = CorrelatedGaussian(3)
    ad = mcmc.WindowedAdaptation(adapt_metric=False)
    res = mcmc.sample(target, mcmc.MALA(adaptation=ad), num_chains=8, num_samples=20, warmup=100, seed=0, progress=False)
    assert torch.equal(res.inv_mass, torch.ones(3, dtype=torch.float64))
    assert res.kernel_diagnostics["metric_windows"] == [] and ad.iteration == 0  # the kernel worked on a copy
    assert res.kernel_diagnostics["warmup_iterations"] == 100


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


def test_init_of_another_dtype_or_with_nan_is_refused() -> None:
    """An integer init used to be cast silently; a NaN init failed as a log_prob error."""
    target = CorrelatedGaussian(3)
    with pytest.raises(DeviceDtypeError, match=r"init has dtype torch.int64 .* expected the floating dtype torch.float64"):
        mcmc.sample(target, mcmc.HMC(), num_chains=2, num_samples=5, warmup=5, init=torch.zeros(2, 3, dtype=torch.long), progress=False)
    with pytest.raises(DeviceDtypeError, match=r"init has dtype torch.float32"):
        mcmc.sample(target, mcmc.HMC(), num_chains=2, num_samples=5, warmup=5, init=torch.zeros(2, 3), progress=False)
    init = torch.zeros(3, 3, dtype=torch.float64)
    init[1, 2] = math.nan
    init[2, 0] = math.inf
    with pytest.raises(NonFiniteError, match=r"init contains NaN or inf in chain\(s\) \[1, 2\]"):
        mcmc.sample(target, mcmc.HMC(), num_chains=3, num_samples=5, warmup=5, init=init, progress=False)
    with pytest.raises(DeviceDtypeError, match="dtype must be a floating"):
        mcmc.sample(target, mcmc.HMC(), num_chains=2, num_samples=5, warmup=5, dtype=torch.int32, progress=False)


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
    assert "nan_chains=[1]" in res.summary()


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
    # the restarts are the adapter's: switched off, the stuck chain stays stuck
    off = mcmc.HMC(adaptation=mcmc.WindowedAdaptation(restart_stuck=False))
    stuck = mcmc.sample(lp, off, num_chains=8, num_samples=50, warmup=200, init=init, dim=2, seed=0, progress=False)
    assert stuck.warmup_resets == 0 and float(stuck.accept_rate[7]) < 0.01
    # posterior of mu with flat priors on (mu, log sigma): Student-t, mean ybar
    se = float(mcmc.diagnostics.mcse_mean(res.samples[..., :1]))
    assert abs(float(res.samples[..., 0].mean()) - float(y.mean())) < Z_SCORE * se
