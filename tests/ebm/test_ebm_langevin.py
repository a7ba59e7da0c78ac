"""Langevin / MALA negatives: exact stationary laws on Gaussians, invariance, no side effects."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.ebm import GaussianEnergy, langevin_chain
from fokker.errors import ParameterError
from fokker.tolerances import Z_SCORE, assert_close


def _var_se(x: torch.Tensor) -> tuple[float, float]:
    """Sample variance and its standard error for (approximately) Gaussian iid draws."""
    v = float(x.var())
    return v, v * math.sqrt(2.0 / (x.numel() - 1))


@pytest.mark.parametrize("noise_scale", [None, 0.3])
def test_ula_stationary_variance_is_the_ar1_closed_form(noise_scale):
    """On N(0, s^2) in 1-D, x' = (1 - eps/s^2) x + tau z is AR(1): stationary var tau^2 / (1 - (1 - eps/s^2)^2)."""
    s2, eps = 2.0, 0.4
    target = GaussianEnergy(1, precision=torch.tensor([[1 / s2]], dtype=torch.float64))
    tau2 = 2 * eps if noise_scale is None else noise_scale**2
    a = 1 - eps / s2
    var_inf = tau2 / (1 - a * a)
    x0 = torch.randn(20_000, 1, dtype=torch.float64) * math.sqrt(var_inf)  # start at the stationary law
    x, acc = langevin_chain(target.log_prob_unchecked, x0, num_steps=15, step_size=eps, noise_scale=noise_scale)
    v, se = _var_se(x)
    assert abs(v - var_inf) <= Z_SCORE * se
    assert float(acc) == 1.0
    # and the biased ULA variance differs from the target's by more than the error here
    if noise_scale is None:
        assert abs(var_inf - s2) > 10 * se


def test_mala_leaves_a_correlated_gaussian_invariant():
    P = torch.tensor([[2.0, 1.2], [1.2, 1.5]], dtype=torch.float64)
    target = GaussianEnergy(2, loc=torch.tensor([1.0, -1.0], dtype=torch.float64), precision=P)
    n = 20_000
    x0 = target.sample((n,))
    x, acc = langevin_chain(target.log_prob_unchecked, x0, num_steps=20, step_size=0.6, metropolis=True)
    assert 0.2 < float(acc) < 0.99  # a large step: MALA rejects a fair share
    cov = torch.linalg.inv(P)
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert torch.all((x.mean(0) - target.loc.detach()).abs() <= Z_SCORE * se_mean)
    se_cov = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov**2) / n)
    assert torch.all((torch.cov(x.T) - cov).abs() <= Z_SCORE * se_cov)


def test_mala_acceptance_matches_an_independent_single_step():
    """One MALA step: the returned mean acceptance equals min(1, r) computed here by hand."""
    target = GaussianEnergy(2, precision=torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64))
    x0 = torch.randn(6, 2, dtype=torch.float64)
    eps = 0.5
    _, acc = langevin_chain(target.log_prob_unchecked, x0, num_steps=1, step_size=eps, metropolis=True,
                            generator=torch.Generator().manual_seed(5))
    z = torch.randn(x0.shape, dtype=x0.dtype, generator=torch.Generator().manual_seed(5))
    P = target.precision.detach()
    mu = target.loc.detach()

    def lp(x):
        return -0.5 * torch.einsum("ni,ij,nj->n", x - mu, P, x - mu)

    def grad(x):
        return -(x - mu) @ P

    y = x0 + eps * grad(x0) + math.sqrt(2 * eps) * z
    log_q_fwd = -((y - x0 - eps * grad(x0)) ** 2).sum(-1) / (4 * eps)
    log_q_bwd = -((x0 - y - eps * grad(y)) ** 2).sum(-1) / (4 * eps)
    r = (lp(y) - lp(x0) + log_q_bwd - log_q_fwd).clamp(max=0).exp()
    assert_close(acc, r.mean())


def test_chain_does_not_touch_parameter_grads_and_detaches():
    target = GaussianEnergy(2)
    x0 = torch.randn(5, 2, requires_grad=True)
    x, _ = langevin_chain(target.log_prob_unchecked, x0, num_steps=3, step_size=0.1)
    assert not x.requires_grad and x.shape == (5, 2)
    assert all(p.grad is None for p in target.parameters())
    x, acc = langevin_chain(target.log_prob_unchecked, x0, num_steps=0, step_size=0.1)
    assert torch.equal(x, x0.detach()) and float(acc) == 1.0


def test_bad_arguments():
    target = GaussianEnergy(2)
    x0 = torch.zeros(3, 2)
    with pytest.raises(ParameterError, match="step_size"):
        langevin_chain(target.log_prob_unchecked, x0, 2, 0.0)
    with pytest.raises(ParameterError, match="num_steps"):
        langevin_chain(target.log_prob_unchecked, x0, -1, 0.1)
    with pytest.raises(ParameterError, match="metropolis"):
        langevin_chain(target.log_prob_unchecked, x0, 2, 0.1, noise_scale=0.1, metropolis=True)
    with pytest.raises(ParameterError, match="noise_scale"):
        langevin_chain(target.log_prob_unchecked, x0, 2, 0.1, noise_scale=-1.0)


@pytest.mark.parametrize("options", [{}, {"metropolis": True}, {"noise_scale": 0.2, "grad_clip": 0.5}])
def test_chain_is_the_mcmc_kernel_and_reproducible(options):
    """langevin_chain runs fokker.mcmc.ULA / MALA: the same generator gives the kernel's own trajectory."""
    from fokker import mcmc

    target = GaussianEnergy(2, precision=torch.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=torch.float64))
    x0 = torch.randn(3, 4, 2, dtype=torch.float64)  # batch dims are flattened into chains
    before = torch.random.get_rng_state()
    x, acc = langevin_chain(target, x0, 5, 0.2, generator=torch.Generator().manual_seed(9), **options)
    assert torch.equal(torch.random.get_rng_state(), before)
    g = torch.Generator().manual_seed(9)
    if options.get("metropolis"):
        kernel = mcmc.MALA(target, step_size=0.2, generator=g)
    else:
        kernel = mcmc.ULA(target, step_size=0.2, generator=g, noise_scale=options.get("noise_scale"),
                          grad_clip=options.get("grad_clip"))
    state, accs = kernel.init(x0.reshape(-1, 2)), []
    for _ in range(5):
        state, info = kernel.step(state)
        accs.append(info.accept_prob.mean())
    assert torch.equal(x, state.x.reshape(3, 4, 2))
    assert_close(acc, torch.stack(accs).mean())
