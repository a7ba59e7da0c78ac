"""Annealing: AIS / SMC log Z against closed forms, ESS as a fraction, AIS unbiasedness in exp-space, annealed Langevin."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from fokker import mcmc, targets
from fokker.errors import ParameterError, ShapeError
from fokker.importance import LogZEstimate
from fokker.targets import CallableTarget
from fokker.tolerances import Z_SCORE, assert_close

from .mcmc_testlib import CorrelatedGaussian


def _iso(d: int, s: float, device="cpu") -> Independent:
    return Independent(Normal(torch.zeros(d, dtype=torch.float64, device=device), s * torch.ones(d, dtype=torch.float64, device=device)), 1)


def _within(res: LogZEstimate, truth: float, k: float = 3.0) -> None:
    assert isinstance(res, LogZEstimate)
    assert abs(res.log_Z - truth) < k * res.stderr, f"log Z {res.log_Z:.4f} +- {res.stderr:.4f} vs {truth:.4f}"


def _close(actual: float, expected: float) -> None:
    """Python floats equal to float64 rounding (fokker.tolerances)."""
    assert_close(torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64))


def _ess_fraction(log_w: torch.Tensor) -> float:
    """(sum w)^2 / (n sum w^2), written out in Python floats."""
    w = [math.exp(v) for v in (log_w - log_w.max()).tolist()]
    return math.fsum(w) ** 2 / (len(w) * math.fsum(v * v for v in w))


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
    # ess is the normalized ESS of the returned weights, and log_Z their log-mean-exp
    _close(res.ess, _ess_fraction(res.log_weights))
    _close(res.log_Z, float(torch.logsumexp(res.log_weights, 0)) - math.log(1024))
    # cost: per temperature one target evaluation, one at the move's start and 4 leapfrog steps
    assert res.num_target_evals == 1024 * 48 * (1 + 1 + 4)


@pytest.mark.parametrize("cls", [mcmc.AIS, mcmc.SMC])
def test_base_equal_to_target_gives_exact_log_z_and_full_ess(cls) -> None:
    """gamma = e^c pi_0: every incremental weight is (beta_k - beta_{k-1}) c, so log Z = c, ESS = 1, stderr = 0."""
    c = -1.3
    base = _iso(3, 1.5)
    target = CallableTarget(lambda x: base.log_prob(x) + c, dim=3)
    res = cls(target, base, 10, kernel=mcmc.MALA(step_size=0.3)).run(64, seed=1, progress=False)
    assert_close(torch.tensor(res.log_Z, dtype=torch.float64), torch.tensor(c, dtype=torch.float64))
    assert_close(torch.tensor(res.ess, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    assert_close(torch.tensor(res.stderr, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))


def test_ais_ess_is_the_importance_sampling_fraction() -> None:
    """One temperature (betas = [0, 1]) is importance sampling from the base: for gamma = N(0, 1) and base
    N(0, s^2) in d dims, ESS / N -> 1 / E_q[(p/q)^2] = (s^2 / sqrt(2 s^2 - 1))^(-d); a count would be ~N times larger."""
    d, s, n = 2, 1.5, 20_000
    target = CallableTarget(lambda x: -0.5 * (x * x).sum(-1), dim=d)
    res = mcmc.AIS(target, _iso(d, s), torch.tensor([0.0, 1.0]), kernel=mcmc.MALA(step_size=0.1), num_mcmc_steps=0).run(
        n, seed=2, progress=False
    )
    want = (s * s / math.sqrt(2 * s * s - 1)) ** (-d)
    # delta-method SE of m1^2 / m2 (m1 = mean w, m2 = mean w^2) from its influence function
    w = torch.exp(res.log_weights - res.log_weights.max())
    m1, m2 = w.mean(), (w * w).mean()
    infl = 2 * m1 / m2 * (w - m1) - m1**2 / m2**2 * (w * w - m2)
    se = float(infl.std()) / math.sqrt(n)
    assert abs(res.ess - want) < Z_SCORE * se, (res.ess, want, se)


def test_smc_log_z_manywell32() -> None:
    target = targets.ManyWell(32).to(torch.float64)
    kernel = mcmc.HMC(step_size=0.2, num_steps=3)
    res = mcmc.SMC(target, _iso(32, 2.0), 64, kernel=kernel).run(1024, seed=0, progress=False)
    _within(res, 164.695675)
    assert res.details["num_resampling"] > 0
    assert res.elbo is None
    # log_Z is the log of the mean of the groups' Z estimates; stderr their delta-method error
    gz = res.details["group_log_Z"]
    _close(res.log_Z, float(torch.logsumexp(gz, 0)) - math.log(8))
    w = torch.exp(gz - gz.max())
    _close(res.stderr, float(w.std() / (math.sqrt(8) * w.mean())))


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
    # and the ELBO, mean(log w), is a lower bound
    assert res.elbo < log_z - Z_SCORE * res.elbo_stderr


def test_smc_resamples_only_when_ess_is_low() -> None:
    target = targets.ManyWell(4).to(torch.float64)
    kernel = mcmc.HMC(step_size=0.2, num_steps=3)
    never = mcmc.SMC(target, _iso(4, 2.0), 16, kernel=kernel, resample_threshold=0.0, num_groups=4).run(256, seed=0, progress=False)
    always = mcmc.SMC(target, _iso(4, 2.0), 16, kernel=kernel, resample_threshold=1.0, num_groups=4).run(256, seed=0, progress=False)
    assert never.details["num_resampling"] == 0
    assert always.details["num_resampling"] == 16 * 4
    # without resampling SMC is AIS: the per-group estimates are both unbiased; agree within errors
    both = math.hypot(never.stderr, always.stderr)
    assert abs(never.log_Z - always.log_Z) < Z_SCORE * both


@pytest.mark.parametrize("cls", [mcmc.AIS, mcmc.SMC])
def test_same_seed_same_estimate_and_global_rng_untouched(cls) -> None:
    """With step-size adaptation too: each run restarts from the kernel's step size (a second run used to
    start from the first run's adapted one and give another answer)."""
    target = CorrelatedGaussian(3)
    kernel = mcmc.HMC(step_size=0.5, num_steps=3)
    ann = cls(target, _iso(3, 2.0), 8, kernel=kernel, adapt_step_size=True)
    before = torch.random.get_rng_state()
    a = ann.run(64, seed=5, progress=False)
    b = ann.run(64, generator=torch.Generator().manual_seed(5), progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a.log_Z == b.log_Z and torch.equal(a.samples, b.samples)
    assert kernel.step_size == 0.5 and kernel.target is None  # the caller's kernel is not touched
    assert ann.run(64, seed=6, progress=False).log_Z != a.log_Z


def _gaussian_recursion(v: float, s0: float, sigmas: list[float], eps: list[float], m: int, rescale: list[float]) -> float:
    """Variance of ULA iterates on N(0, s0^2 + sigma^2): v' = (1 - eps/v_s)^2 v + 2 eps, after v <- r^2 v."""
    for s, e, r in zip(sigmas, eps, rescale):
        v = r * r * v
        vs = s0**2 + s**2
        for _ in range(m):
            v = (1 - e / vs) ** 2 * v + 2 * e
    return v


@pytest.mark.parametrize("rescale", [None, [1.0, 0.8, 1.2, 0.9]])
def test_annealed_langevin_matches_gaussian_recursion(rescale) -> None:
    """Data N(0, s0^2) perturbed by sigma has the exact score -x / (s0^2 + sigma^2); the
    variance of the ULA iterates then follows v' = (1 - eps/v_s)^2 v + 2 eps exactly."""
    s0 = 0.5
    sigmas = torch.tensor([3.0, 1.5, 0.7, 0.3], dtype=torch.float64)
    m = 20

    def score(x, sigma):
        return -x / (s0**2 + sigma[:, None] ** 2)

    g = torch.Generator().manual_seed(11)
    x0 = sigmas[0] * torch.randn(50_000, 1, dtype=torch.float64, generator=g)
    steps = mcmc.ncsn_step_sizes(sigmas, 0.02)
    assert_close(steps, 0.02 * sigmas**2 / sigmas[-1] ** 2)
    r = None if rescale is None else torch.tensor(rescale, dtype=torch.float64)
    x = mcmc.annealed_langevin(score, sigmas, x0, steps, num_steps=m, rescale=r, generator=g, progress=False)
    v = _gaussian_recursion(float(sigmas[0]) ** 2, s0, sigmas.tolist(), steps.tolist(), m, rescale or [1.0] * 4)
    n = x.shape[0]
    est = float((x * x).mean())
    assert abs(est - v) < Z_SCORE * v * math.sqrt(2 / n)
    assert abs(float(x.mean())) < Z_SCORE * math.sqrt(v / n)


def test_annealed_langevin_is_reproducible_and_denoises() -> None:
    """Same generator, same draws; the denoising step is the Tweedie mean x + sigma_L^2 s(x, sigma_L)."""
    sigmas = torch.tensor([1.0, 0.5], dtype=torch.float64)
    x0 = torch.zeros(4, 2, dtype=torch.float64)

    def score(x, sigma):
        return -x / (1 + sigma[:, None] ** 2)

    def run(denoise):
        return mcmc.annealed_langevin(score, sigmas, x0, 0.1, 3, denoise=denoise, generator=torch.Generator().manual_seed(0))

    a, b = run(False), run(True)
    assert_close(b, a + 0.25 * score(a, sigmas[-1:].expand(4)))


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
    with pytest.raises(ShapeError, match=r"base must be a distribution over R\^2.*got event_shape \(3,\)"):
        mcmc.AIS(target, _iso(3, 1.0), 10, kernel=k)
    with pytest.raises(ShapeError, match=r"base must be a distribution over R\^2"):  # event_shape () of a bare Normal
        mcmc.SMC(target, Normal(torch.zeros(2), 1.0), 10, kernel=k)
    with pytest.raises(ShapeError, match=r"got event_shape \(3,\)"):
        mcmc.AdaptiveSMC(target, _iso(3, 1.0))
    with pytest.raises(ParameterError, match="non-increasing"):
        mcmc.ncsn_step_sizes(torch.tensor([0.1, 1.0]))
    with pytest.raises(ParameterError, match="step_size"):
        mcmc.ncsn_step_sizes(torch.tensor([1.0, 0.1]), step_size=0.0)
    score = lambda x, s: -x  # noqa: E731
    with pytest.raises(ParameterError, match="step_sizes"):
        mcmc.annealed_langevin(score, torch.tensor([1.0, 0.1]), torch.zeros(3, 1), torch.tensor([0.1, -0.1]))
    with pytest.raises(ShapeError, match=r"step_sizes must have shape \(2,\)"):
        mcmc.annealed_langevin(score, torch.tensor([1.0, 0.1]), torch.zeros(3, 1), torch.tensor([0.1, 0.1, 0.1]))
    with pytest.raises(ShapeError, match=r"rescale must have shape \(2,\)"):
        mcmc.annealed_langevin(score, torch.tensor([1.0, 0.1]), torch.zeros(3, 1), 0.1, rescale=torch.ones(3))
    with pytest.raises(ParameterError, match="num_steps"):
        mcmc.annealed_langevin(score, torch.tensor([1.0, 0.1]), torch.zeros(3, 1), 0.1, num_steps=0)


# ------------------------------------------------------------------ adaptive / waste-free SMC
def _shifted_gaussian(d: int, c: float):
    mu = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    norm = d * (math.log(0.5) + 0.5 * math.log(2 * math.pi))
    return CallableTarget(lambda x: -0.5 * (((x - mu) / 0.5) ** 2).sum(-1) - norm + c, dim=d)


@pytest.mark.parametrize("waste_free", [False, True])
def test_adaptive_smc_log_z_of_shifted_gaussian(waste_free: bool) -> None:
    """gamma = e^c N(mu, 0.25 I) from the base N(0, 9 I): log Z = c within Z_SCORE standard errors; the chosen
    temperatures increase from 0 to 1; a stricter ESS target takes more of them."""
    c = 3.7
    target = _shifted_gaussian(6, c)
    smc = mcmc.AdaptiveSMC(target, _iso(6, 3.0), waste_free=waste_free, num_groups=8)
    res = smc.run(1024, seed=0, progress=False)
    _within(res, c, Z_SCORE)
    gz = res.details["group_log_Z"]
    _close(res.log_Z, float(torch.logsumexp(gz, 0)) - math.log(8))
    for b in res.details["betas"]:
        assert float(b[0]) == 0.0 and float(b[-1]) == 1.0 and bool((b[1:] > b[:-1]).all())
    strict = mcmc.AdaptiveSMC(target, _iso(6, 3.0), target_ess=0.9, waste_free=waste_free).run(1024, seed=0, progress=False)
    assert min(strict.details["num_steps"]) > max(res.details["num_steps"])
    _within(strict, c, Z_SCORE)
    assert res.samples.shape == (1024, 6) and res.log_weights.shape == (1024,)


def test_adaptive_smc_next_temperature_hits_the_target_ess() -> None:
    """The bisection's delta gives ESS(delta) = rho (a scan of delta on a fine grid agrees), and jumps to 1
    when the whole remaining step keeps the ESS above rho."""
    smc = mcmc.AdaptiveSMC(_shifted_gaussian(2, 0.0), _iso(2, 3.0), target_ess=0.6)
    g = torch.Generator().manual_seed(0)
    lr = 3.0 * torch.randn(4, 500, dtype=torch.float64, generator=g)
    beta = torch.tensor([0.0, 0.2, 0.5, 0.999999], dtype=torch.float64)
    delta = smc._next_delta(lr, beta)

    def ess(dl: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        w = torch.exp(dl[:, None] * row - (dl[:, None] * row).max(-1, keepdim=True).values)
        return w.sum(-1) ** 2 / (row.numel() * (w * w).sum(-1))

    for i in range(3):
        grid = torch.linspace(0, float(1 - beta[i]), 20001, dtype=torch.float64)
        values = ess(grid, lr[i])
        first_below = grid[int(torch.nonzero(values < 0.6)[0])]
        assert abs(float(delta[i]) - float(first_below)) <= float(grid[1])
    assert_close(delta[3], 1 - beta[3])  # the last sliver: straight to beta = 1


def test_adaptive_smc_nan_on_the_path_is_reported() -> None:
    """A target whose log density is NaN in part of the space the particles visit: a NonFiniteError naming
    the temperature step, not a NaN estimate (nor weights silently set to zero)."""
    from fokker.errors import NonFiniteError

    target = CallableTarget(lambda x: torch.where(x[..., 0] > 4.0, torch.nan, -0.5 * (x * x).sum(-1)), dim=2, name="nan_right")
    with pytest.raises(NonFiniteError, match=r"nan_right.*NaN at \d+ of 256 particles at temperature step 1"):
        mcmc.AdaptiveSMC(target, _iso(2, 3.0), num_groups=2).run(256, seed=0, progress=False)


def test_systematic_resampling_counts() -> None:
    """Each index appears floor or ceil of m W_i times, and their mean over draws is m W_i."""
    w = torch.tensor([0.05, 0.5, 0.2, 0.25], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    counts = torch.stack([torch.bincount(mcmc.systematic_resampling(w.log(), 10, generator=g), minlength=4)
                          for _ in range(2000)]).double()
    assert bool(((counts == torch.floor(10 * w)) | (counts == torch.ceil(10 * w))).all())
    se = counts.std(0) / math.sqrt(2000) + 1e-12
    assert bool(((counts.mean(0) - 10 * w).abs() <= Z_SCORE * se + 1e-9).all())
    assert mcmc.systematic_resampling(torch.zeros(3, 5), generator=g).shape == (3, 5)


@pytest.mark.parametrize("cls", [mcmc.AIS, mcmc.SMC])
def test_nan_on_the_path_is_an_error_not_a_zero_weight(cls) -> None:
    """log gamma NaN for x0 > 4: a NonFiniteError naming the target and the first temperature step (it used to
    be turned into a zero weight, silently estimating the integral over the rest of the space); -inf there
    is a zero weight and gives the integral over x0 <= 4 within Z_SCORE SE."""
    from fokker.errors import NonFiniteError

    def log_gamma(x: torch.Tensor, outside: float) -> torch.Tensor:
        return torch.where(x[..., 0] > 4.0, outside, -0.5 * (x * x).sum(-1))

    nan = CallableTarget(lambda x: log_gamma(x, math.nan), dim=2, name="nan_right")
    k = mcmc.HMC(step_size=0.3, num_steps=3)
    with pytest.raises(NonFiniteError, match=r"'nan_right': log_prob is NaN at \d+ of 256 particles .*first at temperature step 1"):
        cls(nan, _iso(2, 3.0), 8, kernel=k).run(256, seed=0, progress=False)
    cut = CallableTarget(lambda x: log_gamma(x, -math.inf), dim=2)
    res = cls(cut, _iso(2, 3.0), 32, kernel=k).run(2048, seed=0, progress=False)
    _within(res, math.log(2 * math.pi * (1 - 0.5 * math.erfc(4 / math.sqrt(2)))), Z_SCORE)
