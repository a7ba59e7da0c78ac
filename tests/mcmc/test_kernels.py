"""Kernels: invariance of known targets, ULA's closed-form bias, and MH ratios re-derived independently."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

import fokker._random
from fokker import mcmc
from fokker.errors import ParameterError
from fokker.targets import Banana
from fokker.tolerances import assert_close

from .mcmc_testlib import CorrelatedGaussian, assert_moments_iid


def _run_from_exact(kernel, target, n_chains: int, n_steps: int) -> torch.Tensor:
    """Start ``n_chains`` independent chains at exact draws and take ``n_steps``: if the
    kernel leaves ``pi`` invariant the final states are again i.i.d. ``pi``."""
    kernel.bind(target)
    # a stream independent of the global one (seeded 0 by conftest) that drew the starting points
    kernel.generator = torch.Generator().manual_seed(2024)
    state = kernel.init(target.sample((n_chains,)))
    acc = 0.0
    for _ in range(n_steps):
        state, info = kernel.step(state)
        acc += float(info.accept_prob.mean())
    assert acc / n_steps > 0.2  # the chains really move
    return state.x


KERNELS = {
    "mala": lambda: mcmc.MALA(step_size=0.15),
    "hmc_diag": lambda: mcmc.HMC(step_size=0.25, num_steps=6),
    "hmc_dense": lambda: mcmc.HMC(step_size=0.3, num_steps=6, metric=torch.eye(10, dtype=torch.float64) * 1.5),
    "mala_diag_metric": lambda: mcmc.MALA(step_size=0.1, metric=torch.linspace(0.5, 2.0, 10, dtype=torch.float64) ** 2),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel_leaves_correlated_gaussian_invariant(name: str, device: torch.device) -> None:
    target = CorrelatedGaussian(10, device=device)
    x = _run_from_exact(KERNELS[name](), target, n_chains=4000, n_steps=15)
    assert_moments_iid(x, target.mu, target.cov)


@pytest.mark.parametrize("name", ["mala", "hmc"])
def test_kernel_leaves_banana_invariant(name: str, device: torch.device) -> None:
    target = Banana(dim=3, curvature=0.1, scale=3.0).to(device=device, dtype=torch.float64)
    kernel = mcmc.MALA(step_size=0.1) if name == "mala" else mcmc.HMC(step_size=0.15, num_steps=8)
    # 20000 chains: enough power to reject ULA at the same step size (checked when writing the test)
    x = _run_from_exact(kernel, target, n_chains=20000, n_steps=20)
    # reference moments from an independent large exact sample (its own error is included)
    ref = target.sample((200_000,))
    cov = torch.cov(ref.T)
    # compare in the Gaussian (untwisted) coordinates too, where the moments are closed form
    assert_moments_iid(x, ref.mean(0), cov)
    u = target.twist(x)
    assert_moments_iid(u, torch.zeros(3, dtype=u.dtype, device=device), torch.diag(torch.tensor([9.0, 1.0, 1.0], dtype=u.dtype, device=device)))


def test_ula_matches_its_closed_form_stationary_covariance(device: torch.device) -> None:
    """ULA on N(0, P^{-1}): x' = (I - eps P) x + sqrt(2 eps) z has stationary covariance (P - eps P^2 / 2)^{-1}."""
    target = CorrelatedGaussian(10, device=device)
    eps = 0.08
    prec = target.prec
    ula_cov = torch.linalg.inv(prec - 0.5 * eps * prec @ prec)
    kernel = mcmc.ULA(step_size=eps, generator=torch.Generator().manual_seed(1)).bind(target)
    z = torch.randn(4000, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(device)
    state = kernel.init(target.mu + z @ torch.linalg.cholesky(ula_cov).mT)
    for _ in range(30):
        state, _ = kernel.step(state)
    assert_moments_iid(state.x, target.mu, ula_cov)
    # and the bias is real: the same draws reject the exact covariance
    with pytest.raises(AssertionError, match="covariance"):
        assert_moments_iid(state.x, target.mu, target.cov)


def _hmc_reference_accept(logp, x, z, eps, n_steps, inv_mass):
    """Independent leapfrog + Hamiltonian with explicit matrices: M = S^{-1}, p = chol(M) z... via
    p ~ N(0, M) built as p = L^{-T} z with S = L L^T (same draw as the kernel's), then
    H = -log pi(x) + p^T S p / 2 and accept = min(1, exp(H0 - H1))."""

    def grad(x):
        xg = x.detach().requires_grad_(True)
        return torch.autograd.grad(logp(xg).sum(), xg)[0]

    L = torch.linalg.cholesky(inv_mass)
    p = torch.linalg.solve(L.mT, z.T).T
    h0 = -logp(x) + 0.5 * torch.einsum("ci,ij,cj->c", p, inv_mass, p)
    q = x.clone()
    for _ in range(n_steps):
        p = p + 0.5 * eps * grad(q)
        q = q + eps * p @ inv_mass
        p = p + 0.5 * eps * grad(q)
    h1 = -logp(q) + 0.5 * torch.einsum("ci,ij,cj->c", p, inv_mass, p)
    return torch.clamp(torch.exp(h0 - h1), max=1.0), q


@pytest.mark.parametrize("dense", [False, True])
def test_hmc_acceptance_matches_independent_implementation(dense: bool, device: torch.device) -> None:
    target = Banana(dim=3, curvature=0.1, scale=3.0).to(device=device, dtype=torch.float64)
    a = torch.tensor([[1.5, 0.3, 0.2], [0.3, 0.8, 0.0], [0.2, 0.0, 1.2]], dtype=torch.float64, device=device)
    inv_mass = a if dense else torch.diag(a.diagonal())
    metric = a if dense else a.diagonal()
    kernel = mcmc.HMC(target, step_size=0.4, num_steps=7, metric=metric, generator=torch.Generator().manual_seed(3))
    x = target.sample((64,))
    state = kernel.init(x)
    _, info = kernel.step(state)
    # the kernel's first draw from its generator is the momentum noise
    z = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(3)).to(device)
    ref_acc, _ = _hmc_reference_accept(target.log_prob, x, z, 0.4, 7, inv_mass)
    assert_close(info.accept_prob, ref_acc)
    assert torch.equal(info.num_steps, torch.full((64,), 7, device=device))
    assert (ref_acc < 1).any() and (ref_acc > 0.05).any()  # a non-trivial mix of ratios


def test_mala_acceptance_matches_independent_implementation(device: torch.device) -> None:
    """log r = log pi(y) - log pi(x) + log N(x; y + eps S g(y), 2 eps S) - log N(y; x + eps S g(x), 2 eps S)."""
    target = Banana(dim=3, curvature=0.1, scale=3.0).to(device=device, dtype=torch.float64)
    S = torch.tensor([[1.5, 0.3, 0.2], [0.3, 0.8, 0.0], [0.2, 0.0, 1.2]], dtype=torch.float64, device=device)
    eps = 0.3
    kernel = mcmc.MALA(target, step_size=eps, metric=S, generator=torch.Generator().manual_seed(5))
    x = target.sample((64,))
    state = kernel.init(x)
    _, info = kernel.step(state)
    z = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(5)).to(device)
    L = torch.linalg.cholesky(S)

    def g(v):
        vg = v.detach().requires_grad_(True)
        return torch.autograd.grad(target.log_prob(vg).sum(), vg)[0]

    y = x + eps * g(x) @ S + math.sqrt(2 * eps) * z @ L.mT
    fwd = MultivariateNormal(x + eps * g(x) @ S, covariance_matrix=2 * eps * S).log_prob(y)
    bwd = MultivariateNormal(y + eps * g(y) @ S, covariance_matrix=2 * eps * S).log_prob(x)
    ref = torch.clamp(torch.exp(target.log_prob(y) - target.log_prob(x) + bwd - fwd), max=1.0)
    assert_close(info.accept_prob, ref)
    assert (ref < 1).any() and (ref > 0.05).any()


def test_mh_exact_detailed_balance_on_a_grid_with_a_gaussian_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a 1-D Gaussian, the MALA transition density K(x, y) = q(y|x) a(x, y) satisfies
    pi(x) K(x, y) = pi(y) K(y, x) exactly; check it on a grid of (x, y) pairs with the
    kernel's own acceptance (obtained by forcing the proposal through the noise)."""
    target = CorrelatedGaussian(1)
    eps = 0.4
    kernel = mcmc.MALA(target, step_size=eps)
    grid = torch.linspace(-3, 3, 13, dtype=torch.float64)
    xs, ys = torch.meshgrid(grid, grid, indexing="ij")
    xs, ys = xs.reshape(-1, 1), ys.reshape(-1, 1)
    mu, sd = target.mu, target.cov[0, 0].sqrt()

    def accept(a, b):
        # drive the kernel from a to b: choose the noise z that makes the proposal equal b
        st = kernel.init(a)
        mean = a + eps * st.grad
        z = (b - mean) / math.sqrt(2 * eps)
        with monkeypatch.context() as m:
            m.setattr(fokker._random, "randn_like", lambda t, generator=None: z)
            _, info = kernel.step(st)
        return info.accept_prob

    def log_q(b, a):
        g = -(a - mu) / sd**2
        return (-(b - a - eps * g) ** 2 / (4 * eps)).squeeze(-1)

    def log_pi(a):
        return (-0.5 * ((a - mu) / sd) ** 2).squeeze(-1)

    lhs = log_pi(xs) + log_q(ys, xs) + accept(xs, ys).log()
    rhs = log_pi(ys) + log_q(xs, ys) + accept(ys, xs).log()
    assert_close(lhs, rhs)


def test_step_errors() -> None:
    with pytest.raises(ParameterError, match="step_size"):
        mcmc.HMC(step_size=0.0)
    with pytest.raises(ParameterError, match="step_size"):
        mcmc.MALA(step_size=-1.0)
    with pytest.raises(ParameterError, match="step_size"):
        mcmc.ULA()
    with pytest.raises(ParameterError, match="step_size"):
        mcmc.HMC(step_size=torch.tensor([0.1, -0.1]))
    with pytest.raises(ParameterError, match="num_steps"):
        mcmc.HMC(num_steps=0)
    with pytest.raises(ParameterError, match="metric"):
        mcmc.HMC(metric="full")
    with pytest.raises(ParameterError, match="target_accept"):
        mcmc.MALA(target_accept=1.5)
    with pytest.raises(ParameterError, match="no target"):
        mcmc.HMC(step_size=0.1).init(torch.zeros(2, 3))
    with pytest.raises(ParameterError, match=r"scalar or a per-chain \(chains,\)"):
        mcmc.MALA(step_size=torch.full((2, 2), 0.1))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        mcmc.HMC(generator=0)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="noise_scale"):
        mcmc.ULA(step_size=0.1, noise_scale=-1.0)


def test_nonfinite_proposals_are_rejected() -> None:
    """A proposal landing where log pi = -inf (outside the support) is never accepted."""
    from fokker.targets import CallableTarget

    t = CallableTarget(lambda x: torch.where(x[..., 0] > 0, -0.5 * (x * x).sum(-1), torch.full_like(x[..., 0], -math.inf)), dim=2)
    kernel = mcmc.MALA(t, step_size=1.0)
    state = kernel.init(torch.full((500, 2), 0.05, dtype=torch.float64))
    for _ in range(5):
        state, info = kernel.step(state)
        assert (state.x[:, 0] > 0).all()
    assert torch.isfinite(state.log_prob).all()


def test_same_generator_same_transition_and_global_rng_untouched() -> None:
    """A kernel draws only from its generator: equal seeds give equal moves, the global RNG is not used."""
    target = CorrelatedGaussian(3)
    x = target.mu + torch.zeros(16, 3, dtype=torch.float64)
    for make in (lambda g: mcmc.MALA(target, step_size=0.2, generator=g),
                 lambda g: mcmc.HMC(target, step_size=0.2, generator=g)):  # jittered trajectory length
        before = torch.random.get_rng_state()
        a, b = make(torch.Generator().manual_seed(4)), make(torch.Generator().manual_seed(4))
        sa, sb = a.init(x), b.init(x)
        for _ in range(3):
            (sa, ia), (sb, ib) = a.step(sa), b.step(sb)
        assert torch.equal(sa.x, sb.x) and torch.equal(ia.num_steps, ib.num_steps)
        assert torch.equal(torch.random.get_rng_state(), before)


def test_ula_noise_scale_and_grad_clip_are_the_du_mordatch_update() -> None:
    """x' = x + eps clip(grad log pi(x)) + tau z, compared with the formula written out here."""
    target = CorrelatedGaussian(3)
    x = target.mu + 3.0 * torch.ones(5, 3, dtype=torch.float64)
    eps, tau, clip = 0.1, 0.05, 0.5
    kernel = mcmc.ULA(target, step_size=eps, noise_scale=tau, grad_clip=clip, generator=torch.Generator().manual_seed(8))
    new, info = kernel.step(kernel.init(x))
    z = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(8))
    g = (-(x - target.mu) @ target.prec).clamp(-clip, clip)
    assert_close(new.x, x + eps * g + tau * z)
    assert bool((g.abs() == clip).any())  # the clamp is active in this example
    assert torch.equal(info.accept_prob, torch.ones(5, dtype=torch.float64))
