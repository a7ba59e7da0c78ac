"""DiffusionModel with exact 'networks' (closed-form GMM / Gaussian scores): views, DSM loss, likelihood, ELBO."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.diffusion import DiffusionModel, ResidualTimeMLP
from fokker.diffusion.likelihood import cnf_log_prob, divergence_exact, divergence_hutchinson, rademacher
from fokker.errors import DeviceDtypeError, DomainError, NonFiniteError, ParameterError, ShapeError
from fokker.sde import VPSDE
from fokker.tolerances import Z_SCORE, assert_close

from _diffusion_oracle import GaussEpsNet, OracleNet, energy_distance


@pytest.mark.parametrize("kind", ["eps", "x0", "score", "v"])
def test_views_equal_oracle(kind, gmm3, vpsde):
    model = DiffusionModel(vpsde, OracleNet(gmm3, kind), parameterization=kind)
    x = gmm3.sample(32, 0.4)
    t = torch.rand(32, dtype=torch.float64) * 0.9 + 0.05
    s = gmm3.score(x, t)
    a, sg = vpsde.alpha(t)[:, None], vpsde.sigma(t)[:, None]
    assert_close(model.score(x, t), s, loose=True)
    assert_close(model.denoise(x, t), (x + sg**2 * s) / a, loose=True)
    assert_close(model.eps(x, t), -sg * s, loose=True)
    assert_close(model.v(x, t), a * (-sg * s) - sg * (x + sg**2 * s) / a, loose=True)


def test_dsm_loss_minimized_at_true_score(vpsde):
    """Gaussian data N(m, s^2 I): the eps-net with the true (m, s) has a smaller loss than perturbed ones
    (common random numbers) and its expected gradient is zero within Z_SCORE standard errors."""
    m, s = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.7
    data = m + s * torch.randn(40_000, 2, dtype=torch.float64)
    for weighting in ("simple", "sigma2", "likelihood"):
        net = GaussEpsNet(m, math.log(s), vpsde)
        model = DiffusionModel(vpsde, net, "eps", weighting=weighting)
        torch.manual_seed(1)
        base = model.loss(data)
        for dm, dls in ((0.2, 0.0), (0.0, 0.2), (-0.1, -0.1)):
            with torch.no_grad():
                net.m.add_(dm)
                net.log_s.add_(dls)
            torch.manual_seed(1)
            assert float(model.loss(data).detach()) > float(base.detach()), weighting
            with torch.no_grad():
                net.m.sub_(dm)
                net.log_s.sub_(dls)
        grads = []
        for chunk in data.chunk(20):
            net.zero_grad()
            model.loss(chunk).backward()
            grads.append(torch.cat([net.m.grad.clone(), net.log_s.grad.reshape(1).clone()]))
        g = torch.stack(grads)
        se = g.std(0) / math.sqrt(g.shape[0])
        assert bool((g.mean(0).abs() < Z_SCORE * se).all()), (weighting, g.mean(0), se)


def test_likelihood_importance_sampling_same_expectation(vpsde):
    """Uniform t with g^2 weights vs t uniform in log-SNR with constant weight: same expected loss."""
    m = torch.tensor([0.5], dtype=torch.float64)
    data = m + 0.3 * torch.randn(60_000, 1, dtype=torch.float64)
    vals = {}
    for is_ in (False, True):
        net = GaussEpsNet(m + 0.4, math.log(0.5), vpsde)  # a wrong model: non-zero loss
        model = DiffusionModel(vpsde, net, "eps", weighting="likelihood", importance_sampling=is_)
        with torch.no_grad():
            v = torch.stack([model.loss(c) for c in data.chunk(30)])
        vals[is_] = (float(v.mean()), float(v.std() / math.sqrt(len(v))))
    (mu0, se0), (mu1, se1) = vals[False], vals[True]
    assert abs(mu0 - mu1) < Z_SCORE * math.hypot(se0, se1)
    assert se1 < se0  # importance sampling reduces the variance


class CountingOracleNet(OracleNet):
    def __init__(self, *args):
        super().__init__(*args)
        self.calls = 0

    def forward(self, x, t):
        self.calls += 1
        return super().forward(x, t)


def test_pf_ode_log_prob_exact(gmm3, vpsde):
    """PF-ODE log-likelihood with the exact score and exact p_T equals the GMM log-density (loose tolerance
    of an ODE solve at 1e-8); the default prior is N(0, sigma_T^2 I) at the flow's end points; the NFE is
    the number of network calls."""
    net = CountingOracleNet(gmm3, "score")
    model = DiffusionModel(vpsde, net, "score")
    x = gmm3.sample(16, model.t_min)
    ends = []

    def prior(z):
        ends.append(z)
        return gmm3.log_prob(z, torch.full((z.shape[0],), 1.0, dtype=z.dtype))

    res = model.log_prob_result(x, trace="exact", rtol=1e-8, atol=1e-8, prior_log_prob=prior)
    exact = gmm3.log_prob(x, torch.full((16,), model.t_min, dtype=torch.float64))
    assert_close(res.log_prob, exact, loose=True)
    assert res.nfe == net.calls
    # the default prior replaces log p_T(x_T) by log N(x_T; 0, sigma_T^2 I) at the same end points
    net.calls = 0
    lp = model.log_prob(x, rtol=1e-8, atol=1e-8)
    gauss = torch.distributions.Normal(0.0, model.prior_std()).log_prob(ends[-1]).sum(-1)
    assert_close(lp, res.log_prob - res.prior_log_prob + gauss, loose=True)
    assert model.last_nfe == net.calls


def test_hutchinson_unbiased():
    """Mean of the Hutchinson estimate over probes equals the exact divergence (Z_SCORE SE)."""
    w = torch.randn(5, 5, dtype=torch.float64)
    x = torch.randn(1, 5, dtype=torch.float64).repeat(20_000, 1).requires_grad_(True)
    out = torch.tanh(x @ w) * x
    exact = divergence_exact(out, x)[0]
    est = divergence_hutchinson(out, x, rademacher(x))
    assert abs(float(est.mean() - exact)) < Z_SCORE * float(est.std()) / math.sqrt(len(est))


def test_cnf_hutchinson_log_prob_unbiased(gmm3, vpsde):
    model = DiffusionModel(vpsde, OracleNet(gmm3, "score"), "score")
    x = gmm3.sample(1, 0.01).repeat(400, 1)
    exact = model.log_prob_result(x[:1], trace="exact", rtol=1e-6, atol=1e-6).log_prob
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    est = model.log_prob_result(x, trace="hutchinson", rtol=1e-6, atol=1e-6, generator=gen(0)).log_prob
    assert abs(float(est.mean() - exact)) < Z_SCORE * float(est.std()) / math.sqrt(len(est))
    # the probes come from the generator
    first, again, other = (
        model.log_prob_result(x[:8], trace="hutchinson", rtol=1e-6, atol=1e-6, generator=gen(seed)).log_prob
        for seed in (0, 0, 1)
    )
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_cnf_log_prob_linear_flow_closed_form():
    """dx/dt = -x from t=0 to 1 maps N(0, e^{-2}) ... : log p_0(x) = log N(x e^{-1}; 0, 1) - d (exact)."""
    x = torch.randn(6, 3, dtype=torch.float64)
    res = cnf_log_prob(lambda z, t: -z, x, 0.0, 1.0, lambda z: -0.5 * (z**2).sum(-1) - 1.5 * math.log(2 * math.pi),
                       rtol=1e-10, atol=1e-10)
    expect = -0.5 * ((x * math.exp(-1)) ** 2).sum(-1) - 1.5 * math.log(2 * math.pi) - 3.0
    assert_close(res.log_prob, expect, loose=True)


def test_elbo_bounds_log_likelihood(vpsde):
    """DDPM-chain ELBO with the exact denoiser of 1-D Gaussian data lies below log p(x), and the gap shrinks
    with more steps.  (It does not vanish: the reverse kernels use the fixed posterior variance, whose
    relative error ~1/k at step k leaves ~sum 1/(4k^2) nats.)"""
    m, s = torch.tensor([0.5], dtype=torch.float64), 0.6
    model = DiffusionModel(vpsde, GaussEpsNet(m, math.log(s), vpsde), "eps")
    x = m + s * torch.randn(3000, 1, dtype=torch.float64)
    logp = (-0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).squeeze(-1)
    gaps = []
    for steps in (50, 1000):
        gap = logp - model.elbo(x, num_steps=steps)
        se = float(gap.std()) / math.sqrt(len(gap))
        assert float(gap.mean()) > -Z_SCORE * se
        gaps.append(float(gap.mean()))
    assert gaps[1] < gaps[0] - 0.2 and gaps[1] < 0.6


@pytest.mark.parametrize("sampler,steps", [("dpm_solver", 20), ("euler_maruyama", 100)])
def test_model_sample_by_name(sampler, steps, gmm3, vpsde):
    net = CountingOracleNet(gmm3, "eps")
    model = DiffusionModel(vpsde, net, "eps")
    gen = torch.Generator().manual_seed(5)
    out, nfe = model.sample((1500,), sampler=sampler, num_steps=steps, return_nfe=True, generator=gen)
    assert out.shape == (1500, 2) and out.dtype == torch.float64
    assert nfe == net.calls == steps + 1  # one network call per step, one for the final Tweedie denoising
    # denoised samples ~ E[x0 | x_{t_min}]: compare with exact samples at t_min (sigma = 0.01, negligible)
    ref, ref2 = gmm3.sample(1500, 1e-3, generator=gen), gmm3.sample(1500, 1e-3, generator=gen)
    floor = abs(float(energy_distance(ref2, ref)))
    assert float(energy_distance(out, ref)) < 0.005 + 3 * floor


def test_bad_inputs(gmm3, vpsde):
    model = DiffusionModel(vpsde, OracleNet(gmm3, "eps"), "eps")
    x = gmm3.sample(4, 0.5)
    with pytest.raises(NonFiniteError, match="x0"):
        model.loss(torch.tensor([[float("nan"), 0.0]] * 4, dtype=torch.float64))
    with pytest.raises(DomainError, match="t"):
        model.score(x, torch.full((4,), 1.5, dtype=torch.float64))
    with pytest.raises(DomainError, match="t"):
        model.score(x, 0.0)  # below t_min = 1e-3: the score is singular at sigma = 0
    with pytest.raises(ShapeError, match="shape"):
        model.score(x[:, :1], 0.5)
    bad = DiffusionModel(vpsde, torch.nn.Linear(2, 3).double(), "eps", event_shape=(2,))
    bad.net.forward = lambda x, t: torch.zeros(x.shape[0], 3, dtype=x.dtype)  # type: ignore[method-assign]
    with pytest.raises(ShapeError, match="net output"):
        bad.loss(x)
    with pytest.raises(ParameterError, match="parameterization"):
        DiffusionModel(vpsde, OracleNet(gmm3), "noise")
    with pytest.raises(ParameterError, match="weighting"):
        DiffusionModel(vpsde, OracleNet(gmm3), weighting="snr")
    with pytest.raises(ParameterError, match="sampler"):
        model.sample((3,), sampler="leapfrog")


def test_wrong_sde_or_net_is_named():
    """Before: DiffusionModel(None, net) failed with AttributeError on None.score_domain, and a
    non-callable net was accepted and failed at the first use."""
    with pytest.raises(ParameterError, match=r"sde must be a linear SDE satisfying fokker\.sde\.Schedule.*got NoneType"):
        DiffusionModel(None, ResidualTimeMLP(2))
    with pytest.raises(ParameterError, match=r"sde must be .*got ResidualTimeMLP"):
        DiffusionModel(ResidualTimeMLP(2), VPSDE())  # arguments swapped
    with pytest.raises(ParameterError, match=r"net must be a torch\.nn\.Module \(or a callable\).*got int"):
        DiffusionModel(VPSDE(), 3)
    DiffusionModel(VPSDE(), lambda x, t: -x, "score", event_shape=(2,))  # a plain callable is a net


def test_data_of_another_dtype_than_the_network_raises(gmm3):
    """float64 data and a float32 network: DeviceDtypeError naming both (before: a RuntimeError from
    inside nn.Linear, or a silent float32 result)."""
    model = DiffusionModel(VPSDE(), ResidualTimeMLP(2, hidden=16, depth=1), "eps")
    x = gmm3.sample(8, 0.5)  # float64
    with pytest.raises(DeviceDtypeError, match=r"x0 has dtype torch\.float64 but the network of the DiffusionModel has dtype torch\.float32"):
        model.loss(x)
    with pytest.raises(DeviceDtypeError, match="x has dtype torch.float64"):
        model.score(x, 0.5)
    with pytest.raises(DeviceDtypeError, match="x has dtype torch.float64"):
        model.log_prob(x)
    with pytest.raises(DeviceDtypeError, match=r"dtype=torch\.float64 differs from the network's dtype torch\.float32"):
        model.sample((4,), dtype=torch.float64)
    assert model.sample((4,), num_steps=2).dtype == torch.float32  # the network's dtype by default


def test_generator_reproduces_sample_and_elbo(gmm3, vpsde):
    model = DiffusionModel(vpsde, OracleNet(gmm3, "eps"), "eps")
    x = gmm3.sample(16, 1e-3)
    state = torch.get_rng_state()
    g = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    a = model.sample((16,), sampler="euler_maruyama", num_steps=10, generator=g(1))
    ea = model.elbo(x, num_steps=10, generator=g(2))
    assert torch.equal(torch.get_rng_state(), state)  # every draw came from the generators
    assert torch.equal(a, model.sample((16,), sampler="euler_maruyama", num_steps=10, generator=g(1)))
    assert torch.equal(ea, model.elbo(x, num_steps=10, generator=g(2)))
    assert not torch.equal(a, model.sample((16,), sampler="euler_maruyama", num_steps=10, generator=g(3)))


def test_elbo_on_library_ddpm_chain(vpsde):
    """elbo(chain=DDPM.from_sde(sde, N, exact=True)) with the exact denoiser: below log p(x) and within the
    same gap as the generic chain (both use the posterior variance; decoders and priors differ by O(1/N))."""
    from fokker.sde import DDPM

    m, s = torch.tensor([0.5], dtype=torch.float64), 0.6
    model = DiffusionModel(vpsde, GaussEpsNet(m, math.log(s), vpsde), "eps")
    x = m + s * torch.randn(3000, 1, dtype=torch.float64)
    logp = (-0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).squeeze(-1)
    lib = model.elbo(x, chain=DDPM.from_sde(vpsde, 200, exact=True), variance="beta_tilde")
    own = model.elbo(x, num_steps=200)
    gap_lib, gap_own = logp - lib, logp - own
    se = float(gap_lib.std()) / math.sqrt(len(x))
    assert float(gap_lib.mean()) > -Z_SCORE * se
    se2 = math.hypot(float(gap_lib.std()), float(gap_own.std())) / math.sqrt(len(x))
    assert abs(float(gap_lib.mean() - gap_own.mean())) < Z_SCORE * se2 + 0.02


def test_sample_progress_bar(gmm3, vpsde, capsys):
    """progress=True shows a bar on stderr whatever the terminal; False shows nothing."""
    model = DiffusionModel(vpsde, OracleNet(gmm3, "eps"), "eps")
    model.sample((4,), sampler="ddim", num_steps=3, progress=False)
    assert capsys.readouterr().err == ""
    model.sample((4,), sampler="ddim", num_steps=3, progress=True)
    assert "DiffusionModel.sample (ddim, NFE)" in capsys.readouterr().err


def test_log_snr_time_sampler_is_uniform_in_log_snr(vpsde):
    """lambda(t) of the draws is uniform on [lambda(T), lambda(t_min)]: the Kolmogorov distance of its
    empirical CDF stays below the DKW bound sqrt(log(2 / p) / (2 n)) at p = 2 Phi(-Z_SCORE)."""
    from fokker.diffusion import LogSNRTimeSampler

    t_min, T = 1e-3, 1.0
    sampler = LogSNRTimeSampler(vpsde, t_min, T, num_knots=513)
    num_samples = 20_000
    t = sampler(num_samples, "cpu", generator=torch.Generator().manual_seed(0))
    assert t.shape == (num_samples,) and bool(((t >= t_min) & (t <= T)).all())
    lam = vpsde.log_snr(t)
    u = ((lam - sampler.lam_lo) / (sampler.lam_hi - sampler.lam_lo)).sort().values
    grid = torch.arange(1, num_samples + 1, dtype=torch.float64) / num_samples
    kolmogorov = float(torch.maximum(grid - u, u - (grid - 1 / num_samples)).max())
    p = math.erfc(Z_SCORE / math.sqrt(2))
    assert kolmogorov < math.sqrt(math.log(2 / p) / (2 * num_samples))
    assert torch.equal(t, sampler(num_samples, "cpu", generator=torch.Generator().manual_seed(0)))
