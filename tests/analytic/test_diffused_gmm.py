"""DiffusedGaussianMixture: exact p_t vs direct mixtures, score vs autograd, Tweedie, FP residual."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fokker import sde
from fokker.analytic import DiffusedGaussianMixture
from fokker.checks import check_fokker_planck, check_tweedie
from fokker.errors import DomainError, ShapeError
from fokker.targets import GaussianMixture
from fokker.tolerances import Z_SCORE, assert_close

SDES = {
    "vp": lambda: sde.VPSDE(),
    "vp_cosine": lambda: sde.VPSDE.cosine(),
    "subvp": lambda: sde.SubVPSDE(),
    "ve": lambda: sde.VESDE(sigma_min=0.01, sigma_max=10.0),
    "ou": lambda: sde.OrnsteinUhlenbeck(theta=1.5, sigma=0.8),
    "brownian": lambda: sde.BrownianMotion(sigma=1.3),
    "schedule": lambda: sde.LinearSDE.from_schedule(
        lambda t: torch.cos(0.49 * torch.pi * t), lambda t: torch.sin(0.49 * torch.pi * t)
    ),
}


def _gmm(dtype=torch.float64, device="cpu") -> GaussianMixture:
    loc = torch.tensor([[-2.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, -2.5, -1.0]], dtype=dtype, device=device)
    A = torch.tensor([[0.6, 0.0, 0.0], [0.2, 0.5, 0.0], [0.1, -0.3, 0.4]], dtype=dtype, device=device)
    L = torch.stack([A, 0.7 * torch.eye(3, dtype=dtype, device=device), A.flip(0).flip(1).tril() + 0.3 * torch.eye(3, dtype=dtype, device=device)])
    return GaussianMixture(loc, L, torch.tensor([0.3, 0.5, 0.2], dtype=dtype, device=device))


def _direct_log_prob(gm: GaussianMixture, obj, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Independent: torch MixtureSameFamily with C_k = alpha^2 Sigma_k + sigma^2 I built per point."""
    out = []
    cov = gm.covariance_matrix() if callable(getattr(gm, "covariance_matrix", None)) else gm.scale_tril @ gm.scale_tril.mT
    for i in range(x.shape[0]):
        al, sg = obj.alpha(t[i]).to(x), obj.sigma(t[i]).to(x)
        C = al**2 * cov + sg**2 * torch.eye(gm.dim, dtype=x.dtype, device=x.device)
        mix = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(gm.weights), torch.distributions.MultivariateNormal(al * gm.loc, C)
        )
        out.append(mix.log_prob(x[i]))
    return torch.stack(out)


@pytest.mark.parametrize("name", list(SDES))
def test_log_prob_and_score_exact(name: str, device: torch.device) -> None:
    obj = SDES[name]()
    gm = _gmm(device=device)
    oracle = DiffusedGaussianMixture(gm, obj)
    x = torch.randn(6, 3, dtype=torch.float64, device=device) * 2
    t = torch.rand(6, dtype=torch.float64, device=device) * 0.9 * obj.T + 0.05 * obj.T
    assert_close(oracle.log_prob(x, t), _direct_log_prob(gm, obj, x, t))
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(oracle.log_prob(xg, t).sum(), xg)
    assert_close(oracle.score(x, t), g)
    res = check_fokker_planck(obj, oracle.log_prob, x, t)
    assert res.passed, res


def test_t0_is_the_data_and_float32(device: torch.device) -> None:
    gm = _gmm(device=device)
    oracle = DiffusedGaussianMixture(gm, sde.VPSDE())
    x = torch.randn(5, 3, dtype=torch.float64, device=device)
    assert_close(oracle.log_prob(x, 0.0), gm.log_prob(x))
    assert_close(oracle.score(x, 0.0), gm.score(x))
    o32 = DiffusedGaussianMixture(_gmm(torch.float32, device), sde.VPSDE())
    x32 = x.float()
    assert_close(o32.log_prob(x32, 0.4), oracle.log_prob(x, 0.4).float())
    assert o32.score(x32, torch.full((5,), 0.4, device=device)).dtype == torch.float32


@pytest.mark.parametrize("name", ["vp", "ve", "subvp", "schedule"])
@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), t=st.floats(0.02, 1.0), scale=st.floats(0.1, 4.0))
def test_tweedie(name: str, seed: int, t: float, scale: float) -> None:
    """denoise == (x + sigma^2 score)/alpha and eps == -sigma score at hypothesis-drawn x, t."""
    obj = SDES[name]()
    oracle = DiffusedGaussianMixture(_gmm(), obj)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale
    res = check_tweedie(oracle, x, t * obj.T)
    assert res.passed, res


def test_denoiser_is_posterior_mean_by_monte_carlo() -> None:
    """E[x0 | x_t] vs self-normalized importance sampling over exact data samples (independent)."""
    gm = _gmm()
    vp = sde.VPSDE()
    oracle = DiffusedGaussianMixture(gm, vp)
    x0 = gm.sample((200000,))
    t = 0.3
    xt = torch.tensor([[0.5, -0.2, 0.3]], dtype=torch.float64)
    logw = vp.transition(x0, 0.0, t).log_prob(xt.expand_as(x0))
    w = torch.softmax(logw, 0)
    est = (w[:, None] * x0).sum(0)
    ess = 1.0 / float((w**2).sum())
    se = x0.std(0) / math.sqrt(ess)
    assert bool(((est - oracle.denoise(xt, t)[0]).abs() < Z_SCORE * se).all())


def test_sample_is_exact_p_t() -> None:
    """Moments of oracle.sample((n,), t) vs the closed form alpha mean, alpha^2 Cov + sigma^2 I."""
    gm = _gmm()
    vp = sde.VPSDE()
    oracle = DiffusedGaussianMixture(gm, vp)
    n, t = 40000, 0.4
    xs = oracle.sample((n,), t, generator=torch.Generator().manual_seed(3))
    al, sg = float(vp.alpha(t)), float(vp.sigma(t))
    m = al * gm.mean()
    C = al**2 * gm.covariance() + sg**2 * torch.eye(3, dtype=torch.float64)
    se = torch.sqrt(C.diagonal() / n)
    assert bool(((xs.mean(0) - m).abs() < Z_SCORE * se).all())
    se_c = torch.sqrt((C**2 + torch.outer(C.diagonal(), C.diagonal())) / n)  # Gaussian-approx SE
    assert bool(((torch.cov(xs.T) - C).abs() < 2 * Z_SCORE * se_c).all())  # mixture: heavier 4th moments


def test_sample_generator_reproducible_and_exact_for_cld() -> None:
    """oracle.sample draws only from its generator (global RNG untouched); for CLD too, whose samples
    have the phase-space marginal's moments at t (mean Phi mu, covariance Phi Sigma Phi^T + Sigma_t)."""
    cld = sde.CriticallyDampedLangevin()
    gm = _gmm()
    oracle = DiffusedGaussianMixture(gm, cld)
    state = torch.get_rng_state()
    a = oracle.sample((3,), 0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, oracle.sample((3,), 0.3, generator=torch.Generator().manual_seed(1)))
    n, t = 40000, 0.3
    z = oracle.sample(n, t, generator=torch.Generator().manual_seed(2))
    p11, _, p21, _ = (float(c) for c in cld.mean_coefs(torch.tensor(t, dtype=torch.float64)))
    c11, c12, c22 = (float(c) for c in cld.cov(torch.tensor(t, dtype=torch.float64)))
    I = torch.eye(3, dtype=torch.float64)
    Phi = torch.cat([p11 * I, p21 * I], 0)
    mean = Phi @ gm.mean()
    C = Phi @ gm.covariance() @ Phi.T + torch.cat([torch.cat([c11 * I, c12 * I], 1), torch.cat([c12 * I, c22 * I], 1)], 0)
    assert z.shape == (n, 6)
    assert bool(((z.mean(0) - mean).abs() < Z_SCORE * torch.sqrt(C.diagonal() / n)).all())
    se_c = torch.sqrt((C**2 + torch.outer(C.diagonal(), C.diagonal())) / n)
    assert bool(((torch.cov(z.T) - C).abs() < 2 * Z_SCORE * se_c).all())  # mixture: heavier 4th moments


def test_cld_oracle() -> None:
    """CLD: log_prob vs a direct 2d x 2d mixture, score vs autograd, denoiser vs direct conditioning."""
    cld = sde.CriticallyDampedLangevin()
    gm = _gmm()
    oracle = DiffusedGaussianMixture(gm, cld)
    z = torch.randn(4, 6, dtype=torch.float64)
    t = torch.tensor([0.05, 0.2, 0.5, 0.9], dtype=torch.float64)
    Sig = gm.scale_tril @ gm.scale_tril.mT
    I = torch.eye(3, dtype=torch.float64)
    for i in range(4):
        p11, p12, p21, p22 = (float(c) for c in cld.mean_coefs(t[i]))
        c11, c12, c22 = (float(c) for c in cld.cov(t[i]))
        Phi = torch.cat([p11 * I, p21 * I], 0)  # (6, 3): z = Phi x0 + noise
        C = Phi @ Sig @ Phi.T + torch.cat([torch.cat([c11 * I, c12 * I], 1), torch.cat([c12 * I, c22 * I], 1)], 0)
        means = gm.loc @ Phi.T
        comp = torch.distributions.MultivariateNormal(means, C)
        lp = torch.logsumexp(torch.log(gm.weights) + comp.log_prob(z[i]), 0)
        assert_close(oracle.log_prob(z[i : i + 1], t[i])[0], lp)
        r = torch.softmax(torch.log(gm.weights) + comp.log_prob(z[i]), 0)
        post = gm.loc + (Sig @ Phi.T @ torch.linalg.solve(C, (z[i] - means).unsqueeze(-1))).squeeze(-1)
        assert_close(oracle.denoise(z[i : i + 1], t[i])[0], (r[:, None] * post).sum(0))
    zg = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(oracle.log_prob(zg, t).sum(), zg)
    assert_close(oracle.score(z, t), g)
    assert check_fokker_planck(cld, oracle.log_prob, z, t).passed


def test_errors() -> None:
    oracle = DiffusedGaussianMixture(_gmm(), sde.VPSDE())
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 3\)"):
        oracle.score(torch.randn(4, 2, dtype=torch.float64), 0.5)
    with pytest.raises(DomainError, match="t must lie"):
        oracle.log_prob(torch.randn(4, 3, dtype=torch.float64), 1.5)
    with pytest.raises(ShapeError, match="event_shape"):
        DiffusedGaussianMixture(_gmm(), sde.VPSDE(event_shape=(2,)))
