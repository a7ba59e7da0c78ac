"""NUTS and ChEES-HMC: invariance of known targets, the tree's multinomial choice against an enumeration,
the ChEES optimum of a Gaussian in closed form, and the adapters' statistics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fokker import mcmc
from fokker.errors import ParameterError
from fokker.mcmc.adaptation import ChEESAdaptation
from fokker.mcmc.metric import Metric
from fokker.mcmc.nuts import checkpoint_range
from fokker.targets import Banana, CallableTarget
from fokker.tolerances import Z_SCORE, assert_close

from .mcmc_testlib import CorrelatedGaussian, assert_moments_iid


def _run_from_exact(kernel, target, num_chains: int, num_steps: int) -> torch.Tensor:
    """Chains started at exact draws stay exact draws after ``num_steps`` transitions of an invariant kernel."""
    kernel.bind(target)
    kernel.generator = torch.Generator().manual_seed(2024)
    state = kernel.init(target.sample((num_chains,)))
    acc = 0.0
    for _ in range(num_steps):
        state, info = kernel.step(state)
        acc += float(info.accept_prob.mean())
    assert acc / num_steps > 0.2
    return state.x


KERNELS = {
    "nuts_lockstep": lambda: mcmc.NUTS(step_size=0.35, asynchronous=False),
    "nuts_asynchronous": lambda: mcmc.NUTS(step_size=0.35, asynchronous=True, queue_size=2),
    "nuts_dense": lambda: mcmc.NUTS(step_size=0.4, metric=torch.eye(10, dtype=torch.float64) * 1.5),
    "chees": lambda: mcmc.ChEESHMC(step_size=0.3, trajectory_length=2.5, adapt_trajectory_length=False),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel_leaves_correlated_gaussian_invariant(name: str, device: torch.device) -> None:
    target = CorrelatedGaussian(10, device=device)
    x = _run_from_exact(KERNELS[name](), target, num_chains=2000, num_steps=4)
    assert_moments_iid(x, target.mu, target.cov)


def test_nuts_leaves_banana_invariant(device: torch.device) -> None:
    target = Banana(dim=3, curvature=0.1, scale=3.0).to(device=device, dtype=torch.float64)
    # the metric matches the banana's scales, so the trees stay short (a test of the kernel, not of its tuning)
    kernel = mcmc.NUTS(step_size=0.4, metric=torch.tensor([9.0, 3.0, 1.0], dtype=torch.float64, device=device))
    x = _run_from_exact(kernel, target, num_chains=8000, num_steps=3)
    ref = target.sample((200_000,))
    assert_moments_iid(x, ref.mean(0), torch.cov(ref.T))
    u = target.twist(x)
    assert_moments_iid(u, torch.zeros(3, dtype=u.dtype, device=device),
                       torch.diag(torch.tensor([9.0, 1.0, 1.0], dtype=u.dtype, device=device)))


# ------------------------------------------------------------------ the tree against an enumeration
def _enumerate_depth_two(logp, x0: torch.Tensor, p0: torch.Tensor, eps: float) -> tuple[dict, dict, dict]:
    """Exact law of the NUTS draw (multinomial, generalized U-turn, identity metric) for max depth 2.

    Written from Betancourt (2017), App. A, independently of the vectorized code: leapfrog points at
    integer times, the 4 equally likely direction sequences, biased progressive sampling between the
    tree and a new subtree, multinomial choice within a subtree, U-turn checks of the whole tree after
    each doubling and of the 2-leaf subtree.  Returns ``{time: probability}`` of the draw and
    ``{depth: probability}`` and the leapfrog points ``{time: x}``.
    """

    def grad(x):
        xg = x.detach().requires_grad_(True)
        return torch.autograd.grad(logp(xg), xg)[0]

    pts = {0: (x0, p0)}
    for sign in (1, -1):
        x, p = x0, p0
        for k in range(1, 4):
            p = p + 0.5 * sign * eps * grad(x)
            x = x + sign * eps * p
            p = p + 0.5 * sign * eps * grad(x)
            pts[sign * k] = (x, p)
    h0 = -logp(x0) + 0.5 * (p0 * p0).sum()
    w = {t: float(torch.exp(h0 - (-logp(x) + 0.5 * (p * p).sum()))) for t, (x, p) in pts.items()}

    def turning(lo: int, hi: int) -> bool:
        rho = sum(pts[t][1] for t in range(lo, hi + 1))
        pl, pr = pts[lo][1], pts[hi][1]
        centred = rho - (pl + pr) / 2
        return bool((pl @ centred) <= 0) or bool((pr @ centred) <= 0)

    draw: dict[int, float] = {}
    depth: dict[int, float] = {}
    for d1, d2 in itertools.product((1, -1), repeat=2):
        law = {0: 1.0 - min(1.0, w[d1] / w[0]), d1: min(1.0, w[d1] / w[0])}
        tree_w, lo, hi = w[0] + w[d1], min(0, d1), max(0, d1)
        stop_depth = 1 if turning(lo, hi) else 2
        if stop_depth == 2:
            a, b = (hi + 1, hi + 2) if d2 == 1 else (lo - 1, lo - 2)
            if not turning(min(a, b), max(a, b)):  # the subtree itself is valid: it may join
                sub_w = w[a] + w[b]
                join = min(1.0, sub_w / tree_w)
                law = {t: q * (1 - join) for t, q in law.items()}
                law[a] = law.get(a, 0.0) + join * w[a] / sub_w
                law[b] = law.get(b, 0.0) + join * w[b] / sub_w
        for t, q in law.items():
            draw[t] = draw.get(t, 0.0) + q / 4
        depth[stop_depth] = depth.get(stop_depth, 0.0) + 1 / 4
    return {t: q for t, q in draw.items() if q > 0}, depth, {t: x for t, (x, _) in pts.items()}


@pytest.mark.parametrize("asynchronous", [False, True])
def test_nuts_draw_matches_the_enumerated_tree_of_depth_two(asynchronous: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    scales = torch.tensor([1.0, 2.0], dtype=torch.float64)

    def logp(x):
        return -0.5 * ((x / scales) ** 2).sum(-1)

    x0 = torch.tensor([0.6, -1.5], dtype=torch.float64)
    p0 = torch.tensor([-1.0, 0.8], dtype=torch.float64)
    eps = 1.4
    law, depths, positions = _enumerate_depth_two(logp, x0, p0, eps)
    assert len(law) >= 4 and 1 in depths and 2 in depths  # a U-turn in some branches, joins in others
    num = 40000
    monkeypatch.setattr(Metric, "sample_momentum", lambda self, like, generator=None: p0.expand_as(like).clone())
    kernel = mcmc.NUTS(CallableTarget(logp, 2), step_size=eps, max_tree_depth=2, metric=torch.ones(2, dtype=torch.float64),
                       asynchronous=asynchronous, generator=torch.Generator().manual_seed(11))
    state, info = kernel.step(kernel.init(x0.expand(num, 2).clone()))
    times = torch.tensor(list(positions))
    where = torch.cdist(state.x, torch.stack([positions[int(t)] for t in times])).argmin(-1)
    for t, q in law.items():
        freq = float((times[where] == t).double().mean())
        assert abs(freq - q) < Z_SCORE * math.sqrt(q * (1 - q) / num) + 1e-12, (t, freq, q)
    assert set(times[where].tolist()) <= set(law)  # no draw outside the support of the enumerated law
    for dep, q in depths.items():
        freq = float((info.extra["tree_depth"] == dep).double().mean())
        assert abs(freq - q) < Z_SCORE * math.sqrt(q * (1 - q) / num)
    # both subtrees are built whole here (a U-turn inside the 2-leaf subtree shows at its last leaf)
    assert torch.equal(info.num_steps, 2 ** info.extra["tree_depth"] - 1)


def test_checkpoint_ranges_follow_the_binary_structure() -> None:
    """Leaf n (0-based) closes the sub-subtrees of sizes 2, 4, ... ending at it: one per trailing 1-bit of n,
    compared with a direct construction of the 2^k-aligned blocks."""
    bits = 2 ** torch.arange(12)
    for n in range(64):
        lo, hi = checkpoint_range(torch.tensor(n), bits)
        closes = [k for k in range(1, 7) if (n + 1) % 2**k == 0]  # blocks of size 2^k ending at leaf n
        assert int(hi) - int(lo) + 1 == len(closes)
        assert int(hi) == bin(n >> 1).count("1")


def test_nuts_trial_accept_prob_is_one_leapfrog_step() -> None:
    target = CorrelatedGaussian(4)
    kernel = mcmc.NUTS(target, step_size=0.7, generator=torch.Generator().manual_seed(3))
    state = kernel.init(target.sample((32,)))
    a = kernel.trial_accept_prob(state)
    p = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    g0 = state.grad
    p_half = p + 0.35 * g0
    x1 = state.x + 0.7 * p_half
    p1 = p_half + 0.35 * target.score(x1)
    ref = torch.exp(target.log_prob(x1) - 0.5 * (p1 * p1).sum(-1) - state.log_prob + 0.5 * (p * p).sum(-1)).clamp(max=1)
    assert_close(a, ref)


def test_nuts_errors() -> None:
    with pytest.raises(ParameterError, match="max_tree_depth"):
        mcmc.NUTS(max_tree_depth=0)
    with pytest.raises(ParameterError, match="queue_size"):
        mcmc.NUTS(queue_size=0)
    with pytest.raises(ParameterError, match="max_delta_energy"):
        mcmc.NUTS(max_delta_energy=-1.0)
    with pytest.raises(ParameterError, match="trajectory_length"):
        mcmc.ChEESHMC(adapt_trajectory_length=False)


# ------------------------------------------------------------------------------------ ChEES
def test_halton_sequence() -> None:
    assert [mcmc.halton(i) for i in range(1, 8)] == [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]
    assert mcmc.halton(5, base=3) == pytest.approx(2 / 3 + 1 / 9)


def test_harmonic_mean_acceptance_statistic() -> None:
    info = mcmc.StepInfo(torch.tensor([0.5, 0.25, 1.0, 0.0]), None, None, torch.tensor([False, False, False, True]),
                         None, None)
    assert float(ChEESAdaptation().accept_statistic(info)) == pytest.approx(3 / (2 + 4 + 1))
    info = info._replace(divergent=torch.tensor([True] * 4))
    assert float(ChEESAdaptation().accept_statistic(info)) == 0.0


def test_chees_learns_the_closed_form_optimum_of_a_gaussian() -> None:
    """For N(0, I) and exact dynamics, |x_t|^2 - |x_0|^2 = sin^2 t sum(p^2 - x^2) + sin 2t sum x p, so
    ChEES(t) is proportional to sin^2 t; with t = h T, h ~ U(0, 1), E_h sin^2(hT) = 1/2 - sin(2T)/(4T),
    maximal where tan(2T) = 2T: T* = 2.2467.  The metric adapts to the scales first (whitened units)."""
    t_star = 4.493409457909064 / 2  # first positive root of tan(u) = u, halved
    scales = torch.linspace(0.5, 3.0, 6, dtype=torch.float64)
    target = CallableTarget(lambda x: -0.5 * ((x / scales) ** 2).sum(-1), 6)
    res = mcmc.sample(target, mcmc.ChEESHMC(), num_chains=128, num_samples=50, warmup=500, seed=1, progress=False,
                      dtype=torch.float64)
    t_learnt = res.kernel.trajectory_length
    assert abs(t_learnt - t_star) < 0.2 * t_star, t_learnt
    # the metric: Stan's estimate from the last window (128 chains x 250 draws, a few draws per ESS):
    # relative sd of a variance estimate sqrt(2 / ESS) ~ 0.02, so 10% is several standard errors
    assert ((res.inv_mass / scales**2 - 1).abs() < 0.1).all(), res.inv_mass / scales**2
    # and the draws are right
    x = res.samples.reshape(-1, 6)
    se = scales / math.sqrt(float(res.ess_bulk().min()))
    assert ((x.mean(0) / se).abs() < Z_SCORE).all()


def test_nuts_sampling_records_tree_statistics() -> None:
    target = CorrelatedGaussian(5)
    res = mcmc.sample(target, mcmc.NUTS(), num_chains=8, num_samples=150, warmup=150, seed=0, progress=False)
    ss = res.sample_stats
    assert {"tree_depth", "energy", "divergent", "num_steps", "accept_prob"} <= set(ss)
    assert ss["tree_depth"].shape == (8, 150)
    # each transition's leapfrog count is at most 2^depth - 1 and at least 2^(depth-1)
    d = ss["tree_depth"]
    assert ((ss["num_steps"] <= 2**d - 1) & (ss["num_steps"] >= 2 ** (d - 1))).all()
    mc = mcmc.diagnostics.mcse_mean(res.samples)
    assert (((res.samples.mean((0, 1)) - target.mu) / mc).abs() < Z_SCORE).all()
    # the step size reaches its acceptance target (0.8) on the mean statistic within a few points
    assert abs(float(ss["accept_prob"].mean()) - 0.8) < 0.08


# ------------------------------------------------------------------------------- bad input
def test_improper_posterior_is_reported_not_hung() -> None:
    """A flat prior on sigma with one Normal observation: p(log sigma | y) tends to a constant as sigma
    grows, so the chains run off to infinity.  Sampling ends (in seconds) and says why."""
    import time

    import pyro
    import pyro.distributions as dist
    from pyro.distributions import constraints

    from fokker.errors import ConvergenceWarning
    from fokker.targets import from_pyro

    def improper(y):
        s = pyro.sample("s", dist.ImproperUniform(constraints.positive, (), ()))
        pyro.sample("y", dist.Normal(torch.tensor(0.0, dtype=torch.float64), s), obs=y)

    t = from_pyro(improper, torch.tensor(1.0, dtype=torch.float64))
    t0 = time.perf_counter()
    with pytest.warns(ConvergenceWarning, match="ran off to infinity.*proper"):
        res = mcmc.sample(t, mcmc.NUTS(), num_chains=4, num_samples=30, warmup=30, seed=0, progress=False)
    assert time.perf_counter() - t0 < 30
    assert any("infinity" in p for p in res.convergence_problems())


def test_unconverged_chains_warn_with_rhat_and_divergences() -> None:
    from fokker.errors import ConvergenceWarning
    from fokker.targets import Funnel

    # the centred funnel with a step size far too large: divergences, and chains stuck apart
    with pytest.warns(ConvergenceWarning, match=r"R-hat .* > 1.01 .*divergent transitions"):
        res = mcmc.sample(Funnel(10).double(), mcmc.HMC(step_size=1.5, num_steps=4), num_chains=4, num_samples=100,
                          warmup=0, seed=0, progress=False)
    assert len(res.convergence_problems()) == 2
    # a converged run has none
    target = CorrelatedGaussian(3)
    res = mcmc.sample(target, mcmc.HMC(), num_chains=4, num_samples=1000, warmup=300, seed=0, progress=False)
    assert res.convergence_problems() == []


def test_nan_initial_points_are_refused_by_every_kernel() -> None:
    from fokker.errors import NonFiniteError

    target = CorrelatedGaussian(3)
    init = torch.zeros(3, 3, dtype=torch.float64)
    init[1, 2] = float("nan")
    for kernel in (mcmc.NUTS(), mcmc.ChEESHMC()):
        with pytest.raises(NonFiniteError, match=r"init.*chain\(s\) \[1\]"):
            mcmc.sample(target, kernel, num_chains=3, num_samples=5, warmup=5, init=init, progress=False)
    # a finite point where the log density is not finite
    wall = lambda x: torch.where(x[..., 0] > 0, -0.5 * (x * x).sum(-1), torch.full_like(x[..., 0], -math.inf))  # noqa: E731
    with pytest.raises(NonFiniteError, match=r"initial point of chain\(s\) \[0\]"):
        mcmc.sample(wall, mcmc.NUTS(), num_chains=2, num_samples=5, warmup=5, dim=2, progress=False,
                    init=torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))


def test_a_model_raising_during_sampling_is_named() -> None:
    import pyro
    import pyro.distributions as dist

    from fokker.errors import ModelError
    from fokker.targets import from_pyro

    def model(y):
        m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        if float(m) > 1.5:  # Python control flow on the parameter: evaluated point by point
            raise FloatingPointError("the user's ODE solver failed")
        pyro.sample("y", dist.Normal(m, 1.0), obs=y)

    t = from_pyro(model, torch.tensor(3.0, dtype=torch.float64))
    with pytest.raises(ModelError, match="raised FloatingPointError.*the user's ODE solver failed"):
        mcmc.sample(t, mcmc.NUTS(), num_chains=4, num_samples=50, warmup=50, seed=0, progress=False)


def test_warmup_raises_the_acceptance_target_on_divergences_only() -> None:
    from fokker.targets import Funnel

    funnel = Funnel(3).double()
    res = mcmc.sample(funnel, mcmc.HMC(), num_chains=16, num_samples=10, warmup=200, seed=0, progress=False)
    raised = res.kernel_diagnostics["target_accept_raised"]
    assert raised and raised[0] == pytest.approx(0.9) and res.kernel.target_accept == raised[-1] <= 0.99
    # a Gaussian never diverges: the target stays; a target the user chose is never changed
    res = mcmc.sample(CorrelatedGaussian(4), mcmc.HMC(), num_chains=16, num_samples=10, warmup=200, seed=0, progress=False)
    assert res.kernel_diagnostics["target_accept_raised"] == [] and res.kernel.target_accept == 0.8
    res = mcmc.sample(funnel, mcmc.HMC(target_accept=0.8), num_chains=16, num_samples=10, warmup=200, seed=0,
                      progress=False)
    assert res.kernel_diagnostics["target_accept_raised"] == [] and res.kernel.target_accept == 0.8
