"""Bernoulli-Bernoulli RBM: conditionals, Gibbs invariance, CD gradient, training, AIS vs exact log Z."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.analytic.rbm import enumerate_binary
from fokker.ebm import RBM, ais_betas, base_rate_bias
from fokker.errors import DomainError, ParameterError, ShapeError
from fokker.importance import LogZEstimate
from fokker.tolerances import Z_SCORE, assert_close, tolerance
from fokker.train import fit


def _close(actual: float, expected: float) -> None:
    assert_close(torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64))


def _rbm(nv=5, nh=3, scale=1.0, seed=0, dtype=torch.float64, device="cpu", **kw):
    rbm = RBM(nv, nh, dtype=dtype, device=device, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rbm.W.copy_(scale * torch.randn(nv, nh, generator=g, dtype=torch.float64))
        rbm.b.copy_(torch.randn(nv, generator=g, dtype=torch.float64) * 0.5)
        rbm.c.copy_(torch.randn(nh, generator=g, dtype=torch.float64) * 0.5)
    return rbm


def _joint_table(rbm):
    """log p(v, h) over all states, shape (2^nv, 2^nh), by explicit energies."""
    V = enumerate_binary(rbm.num_visible, rbm.W.dtype, rbm.W.device)
    H = enumerate_binary(rbm.num_hidden, rbm.W.dtype, rbm.W.device)
    neg_e = V @ rbm.W @ H.T + (V @ rbm.b)[:, None] + (H @ rbm.c)[None, :]
    return V, H, (neg_e - torch.logsumexp(neg_e.flatten(), 0)).detach()


def test_energy_free_energy_and_conditionals_match_the_joint_table(device, dtype):
    rbm = _rbm(dtype=dtype, device=device)
    V, H, logp = _joint_table(rbm)
    V, H, logp = V.to(device), H.to(device), logp.to(device)
    with torch.no_grad():
        # E(v, h) for every pair
        E = rbm.energy(V[:, None, :], H[None, :, :])
        assert_close(E, -(V @ rbm.W @ H.T + (V @ rbm.b)[:, None] + (H @ rbm.c)[None, :]))
        # free energy: p(v) = exp(-F(v)) / Z with log Z from the joint table
        log_pv = torch.logsumexp(logp, 1)
        log_Z = torch.logsumexp((-rbm.energy(V[:, None, :], H[None, :, :])).flatten(), 0)
        assert_close(-rbm.free_energy(V) - log_Z, log_pv, loose=True)
        # p(h_j = 1 | v) = sum_h h_j p(v, h) / p(v)
        p_h = torch.exp(logp - log_pv[:, None]) @ H
        assert_close(rbm.prob_h(V), p_h, loose=True)
        log_ph = torch.logsumexp(logp, 0)
        p_v = (torch.exp(logp - log_ph[None, :]).T @ V)
        assert_close(rbm.prob_v(H), p_v, loose=True)


def test_block_gibbs_leaves_the_exact_marginal_invariant():
    """Exact transition matrix T(v -> v') = sum_h p(h|v) p(v'|h) fixes pi; one sampled sweep keeps pi."""
    rbm = _rbm(4, 3, seed=2)
    V, H, logp = _joint_table(rbm)
    pi = torch.exp(torch.logsumexp(logp, 1))
    with torch.no_grad():
        ph = rbm.prob_h(V)  # (S_v, nh)
        p_h_given_v = torch.prod(H[None] * ph[:, None] + (1 - H[None]) * (1 - ph[:, None]), -1)  # (S_v, S_h)
        pv = rbm.prob_v(H)  # (S_h, nv)
        p_v_given_h = torch.prod(V[None] * pv[:, None] + (1 - V[None]) * (1 - pv[:, None]), -1)  # (S_h, S_v)
    T = p_h_given_v @ p_v_given_h
    assert_close(T.sum(1), torch.ones_like(pi))
    assert_close(pi @ T, pi)
    # sampled sweep from exact draws: state frequencies within Z_SCORE standard errors of pi
    n = 40_000
    idx = torch.multinomial(pi, n, replacement=True)
    v1 = rbm.gibbs(V[idx], 1)
    codes = (v1 * (2 ** torch.arange(4, dtype=torch.float64))).sum(-1).long()
    freq = torch.bincount(codes, minlength=16).double() / n
    se = torch.sqrt(pi * (1 - pi) / n)
    assert torch.all((freq - pi).abs() <= Z_SCORE * se + tolerance(torch.float64).atol)


def test_cd_surrogate_gradient_is_the_cd_formula():
    """grad_W of mean F(data) - mean F(neg) = -(E_data[v p(h|v)^T] - E_neg[v p(h|v)^T]) with the same negatives."""
    rbm = _rbm(5, 3, seed=4, k=2)
    data = torch.bernoulli(torch.full((64, 5), 0.3, dtype=torch.float64))
    torch.manual_seed(11)  # loss() draws its negatives from the global RNG
    rbm.zero_grad()
    rbm.loss(data).backward()
    torch.manual_seed(11)
    neg = rbm.gibbs(data, 2)
    with torch.no_grad():
        pos_stat = data.T @ rbm.prob_h(data) / 64
        neg_stat = neg.T @ rbm.prob_h(neg) / 64
        assert_close(rbm.W.grad, -(pos_stat - neg_stat))
        assert_close(rbm.b.grad, -(data.mean(0) - neg.mean(0)))
        assert_close(rbm.c.grad, -(rbm.prob_h(data).mean(0) - rbm.prob_h(neg).mean(0)))


def test_surrogate_with_exact_negatives_gives_the_exact_likelihood_gradient():
    """mean F(data) - E_pi[F] has gradient -grad mean log p(data): autograd through an enumerated log Z."""
    rbm = _rbm(4, 3, seed=6)
    data = torch.bernoulli(torch.full((20, 4), 0.6, dtype=torch.float64))
    V = enumerate_binary(4)
    log_Z = torch.logsumexp(-rbm.free_energy(V), 0)
    ll = (-rbm.free_energy(data) - log_Z).mean()
    g_ll = torch.autograd.grad(ll, [rbm.W, rbm.b, rbm.c])
    pi = torch.exp(-rbm.free_energy(V) - log_Z).detach()
    surrogate = rbm.free_energy(data).mean() - (pi * rbm.free_energy(V)).sum()
    g_s = torch.autograd.grad(surrogate, [rbm.W, rbm.b, rbm.c])
    for a, b in zip(g_s, g_ll):
        assert_close(a, -b)


def _binary_data(n=300, seed=0):
    """Two noisy prototypes on 8 visible units."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 0]], dtype=torch.float64)
    which = torch.randint(0, 2, (n,), generator=g)
    flip = torch.rand(n, 8, generator=g, dtype=torch.float64) < 0.05
    return torch.where(flip, 1 - protos[which], protos[which])


@pytest.mark.parametrize("persistent", [False, True], ids=["cd1", "pcd"])
def test_training_increases_exact_log_likelihood(persistent):
    data = _binary_data()
    rbm = RBM(8, 4, k=1, persistent=persistent, num_chains=64, dtype=torch.float64)
    ll0 = float(rbm.log_likelihood(data).mean())
    fit(rbm, data, steps=300, batch_size=64, lr=0.05, progress=False, seed=7)
    ll1 = float(rbm.log_likelihood(data).mean())
    # 8 independent fair bits give -5.55 nats; the two-prototype data are far more predictable
    assert ll1 > ll0 + 1.5, (ll0, ll1)


def test_log_prob_is_normalized():
    rbm = _rbm(5, 7, seed=12, dtype=torch.float32)
    lp = rbm.log_prob(enumerate_binary(5, torch.float32))
    assert lp.dtype == torch.float64
    _close(float(torch.logsumexp(lp, 0)), 0.0)


def test_ais_matches_exact_log_Z_within_its_error():
    rbm = _rbm(12, 6, scale=1.0, seed=8)
    exact = rbm.log_Z
    res = rbm.ais(num_chains=200, num_steps=1500, seed=3, progress=False)
    assert isinstance(res, LogZEstimate)
    # log of an unbiased Z estimate is biased low by about stderr^2 / 2 (delta method)
    assert abs(res.log_Z - exact) <= Z_SCORE * res.stderr + res.stderr**2, (res.log_Z, exact, res.stderr)
    # log_Z, stderr, ess and the bounds from the log weights, written out independently
    lw = res.log_weights
    w = [math.exp(v) for v in (lw - lw.max()).tolist()]
    n, mean_w = len(w), math.fsum(w) / len(w)
    _close(res.log_Z, float(lw.max()) + math.log(mean_w))
    sd = math.sqrt(math.fsum((v - mean_w) ** 2 for v in w) / (n - 1)) / math.sqrt(n) / mean_w
    _close(res.stderr, sd)
    _close(res.ess, math.fsum(w) ** 2 / (n * math.fsum(v * v for v in w)))
    lo, hi = res.details["bounds"]
    _close(lo, res.log_Z + math.log(1 - 3 * sd))
    _close(hi, res.log_Z + math.log(1 + 3 * sd))
    # the weights are those of the base-rate path: log Z_A = sum softplus(0) + 6 log 2 with zero base biases
    _close(res.details["log_Z_base"], 12 * math.log(2.0) + 6 * math.log(2.0))
    assert rbm.log_Z == exact and rbm.has_exact_log_Z  # the property is the exact value
    # reproducible from the seed, and the global RNG is not used
    before = torch.random.get_rng_state()
    again = rbm.ais(num_chains=200, num_steps=1500, generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(torch.random.get_rng_state(), before) and again.log_Z == res.log_Z


def test_ais_with_base_rates_and_unbiased_in_exp_space():
    """Base rates from data; mean over repeats of Z_hat / Z is 1 within its standard error."""
    rbm = _rbm(10, 5, scale=0.8, seed=9)
    data = rbm.sample((500,), num_steps=50, generator=torch.Generator().manual_seed(1))
    bias = base_rate_bias(data)
    assert_close(torch.sigmoid(bias), (data.sum(0) + 1) / (500 + 2))
    exact = rbm.log_Z
    ratios = []
    for r in range(8):
        res = rbm.ais(num_chains=50, num_steps=300, data=data, seed=100 + r, progress=False)
        ratios.append(math.exp(res.log_Z - exact))
    ratios = torch.tensor(ratios, dtype=torch.float64)
    se = float(ratios.std() / math.sqrt(len(ratios)))
    assert abs(float(ratios.mean()) - 1.0) <= Z_SCORE * se


def test_ais_betas_schedule():
    b = ais_betas(1000)
    assert b[0] == 0 and b[-1] == 1 and bool((b.diff() > 0).all())
    assert abs(b.numel() - 1001) <= 2


def test_sample_shape_and_bad_inputs():
    rbm = _rbm(5, 3)
    assert rbm.sample((7, 2), num_steps=3).shape == (7, 2, 5)
    with pytest.raises(DomainError, match="binary"):
        rbm.loss(torch.full((4, 5), 0.5, dtype=torch.float64))
    with pytest.raises(ShapeError, match="batch must have shape"):
        rbm.loss(torch.zeros(4, 6, dtype=torch.float64))
    with pytest.raises(ParameterError, match="cannot be enumerated"):
        _ = RBM(21, 21).log_Z
    with pytest.raises(ParameterError, match="betas"):
        rbm.ais(betas=torch.tensor([0.0, 0.7, 0.5, 1.0]))
    with pytest.raises(ShapeError, match="base_bias"):
        rbm.ais(base_bias=torch.zeros(4))
    with pytest.raises(ParameterError, match="num_hidden"):
        RBM(5, 0)
    with pytest.raises(ParameterError, match="num_steps"):
        rbm.ais(num_steps=2)
