"""The linear-Gaussian VAE is probabilistic PCA: bounds against the exact log p(x) = log N(x; mu, W W^T + s^2 I)."""

from __future__ import annotations

import math

import pytest
import torch

from fokker import vae
from fokker._random import rng_scope
from fokker.tolerances import Z_SCORE, assert_close
from fokker.train import fit

F64 = torch.float64


def _ppca_data(num_samples: int = 500, d: int = 5, q: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, q, generator=g, dtype=F64)
    mu = torch.randn(d, generator=g, dtype=F64)
    z = torch.randn(num_samples, q, generator=g, dtype=F64)
    return mu + z @ W.T + 0.5 * torch.randn(num_samples, d, generator=g, dtype=F64)


def _exact_log_p(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """log N(x; b, W W^T + s2 I) written out (Cholesky), independent of fokker."""
    C = W @ W.T + s2 * torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
    L = torch.linalg.cholesky(C)
    r = torch.linalg.solve_triangular(L, (x - b).unsqueeze(-1), upper=False).squeeze(-1)
    return -0.5 * (r * r).sum(-1) - torch.log(torch.diagonal(L)).sum() - 0.5 * W.shape[0] * math.log(2 * math.pi)


def test_maximum_likelihood_is_tipping_bishop_and_beats_perturbations() -> None:
    x = _ppca_data()
    ml = vae.ProbabilisticPCA.maximum_likelihood(x, 2)
    ll = _exact_log_p(x, ml.weight, ml.loc, ml.noise_variance).mean()
    assert_close(ml.log_prob(x).mean(), ll)
    # stationary point of the likelihood: every small perturbation of (W, b, s^2) lowers it
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        dW = 1e-2 * torch.randn(ml.weight.shape, generator=g, dtype=F64)
        db = 1e-2 * torch.randn(ml.loc.shape, generator=g, dtype=F64)
        for W, b, s2 in ((ml.weight + dW, ml.loc, ml.noise_variance), (ml.weight, ml.loc + db, ml.noise_variance),
                         (ml.weight, ml.loc, ml.noise_variance * 1.02)):
            assert float(_exact_log_p(x, W, b, s2).mean()) < float(ll)


def test_exact_posterior_makes_every_log_weight_log_p(device, dtype) -> None:
    """At the maximum-likelihood W (orthogonal columns) the linear encoder is the exact posterior:
    log p(x, z) - log q(z | x) = log p(x) for every draw, so ELBO = IWAE = log p(x) up to rounding."""
    x = _ppca_data(200)
    ml = vae.ProbabilisticPCA.maximum_likelihood(x, 2)
    model = ml.to_vae().to(device=device, dtype=dtype)
    xs = x[:20].to(device, dtype)
    exact = _exact_log_p(x[:20], ml.weight, ml.loc, ml.noise_variance).to(device, dtype)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        lw = model.log_weights(xs, 7, generator=g)
        assert lw.shape == (7, 20)
        scale = 10.0  # |log p| ~ 8 and the weights add three log-densities of that size
        assert_close(lw, exact.expand(7, -1), scale=scale)
        assert_close(model.elbo(xs, analytic_kl=False, generator=g), exact, scale=scale)
        assert_close(model.iwae_bound(xs, 3, generator=g), exact, scale=scale)
        assert_close(model.log_prob(xs, 10, chunk_size=4, generator=g), exact, scale=scale)


def test_iwae_bound_is_below_log_p_increases_with_K_and_reaches_it() -> None:
    """Burda et al. (2016), theorem 1, on a pPCA with a deliberately wrong (too wide, shifted) encoder."""
    x = _ppca_data()
    ml = vae.ProbabilisticPCA.maximum_likelihood(x, 2)
    model = ml.to_vae()
    with torch.no_grad():
        model.encoder.scale.raw.add_(0.7)
        model.encoder.net[0].bias.add_(0.3)
    xs = x[:10]
    log_p = float(_exact_log_p(xs, ml.weight, ml.loc, ml.noise_variance).mean())
    reps = 100
    g = torch.Generator().manual_seed(1)
    means, ses = [], []
    for K in (1, 10, 100, 1000):
        with torch.no_grad():
            b = model.iwae_bound(xs.repeat(reps, 1), K, generator=g).reshape(reps, -1).mean(1)
        means.append(float(b.mean()))
        ses.append(float(b.std()) / math.sqrt(reps))
    for m, se in zip(means, ses):
        assert m <= log_p + Z_SCORE * se, (means, log_p)
    for i, ((m0, s0), (m1, s1)) in enumerate(zip(zip(means, ses), zip(means[1:], ses[1:]))):
        # increasing in K: strictly beyond the noise while the gap is large, within the noise at the end
        margin = Z_SCORE * math.hypot(s0, s1)
        assert (m1 - m0 > margin) if i < 2 else (m1 - m0 > -margin), (means, ses)
    assert abs(means[-1] - log_p) <= Z_SCORE * ses[-1], (means[-1], log_p, ses[-1])
    assert log_p - means[0] > 1.0  # the ELBO of this encoder is far from log p: the test has teeth


def test_trained_linear_vae_attains_the_maximum_likelihood() -> None:
    """fit(linear_vae) reaches Tipping & Bishop's closed-form maximum of the likelihood within 0.05 nats per point."""
    x = _ppca_data(1000)
    ml = vae.ProbabilisticPCA.maximum_likelihood(x, 2)
    ml_ll = float(_exact_log_p(x, ml.weight, ml.loc, ml.noise_variance).mean())
    torch.manual_seed(0)
    model = vae.linear_vae(5, 2, dtype=F64)
    init = vae.ProbabilisticPCA.from_vae(model)
    init_ll = float(_exact_log_p(x, init.weight, init.loc, init.noise_variance).mean())
    steps = 300
    fit(model, x, steps=steps, batch_size=500, lr=0.05, seed=0, progress=False,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps))
    learned = vae.ProbabilisticPCA.from_vae(model)
    ll = float(_exact_log_p(x, learned.weight, learned.loc, learned.noise_variance).mean())
    assert abs(ll - ml_ll) < 0.05, (ll, ml_ll)
    assert ml_ll - init_ll > 1.0  # the untrained model is far from it


def test_analytic_kl_is_the_gaussian_formula_and_the_mc_estimate_agrees() -> None:
    x = _ppca_data(50)
    torch.manual_seed(2)
    model = vae.VAE(vae.GaussianEncoder(5, 3, hidden=(8,)), vae.GaussianDecoder(3, 5, hidden=(8,))).double()
    K = 4000
    with torch.no_grad():
        q = model.encode(x)
        mu, sd = q.base_dist.loc, q.base_dist.scale
        kl = 0.5 * (sd**2 + mu**2 - 1 - 2 * torch.log(sd)).sum(-1)  # KL(N(mu, sd^2) || N(0, I)), written out
        analytic = model.elbo(x, K, generator=torch.Generator().manual_seed(3))
        with rng_scope(torch.Generator().manual_seed(3)):  # the same reconstruction draws
            rec = model.decoder(q.rsample((K,))).log_prob(x).mean(0)
        assert_close(analytic, rec - kl, scale=20.0)  # |terms| ~ 20 nats
        lw = model.log_weights(x, K, generator=torch.Generator().manual_seed(4))
    se = lw.std(0) / math.sqrt(K)  # the Monte-Carlo KL estimate has the larger variance
    assert torch.all((lw.mean(0) - analytic).abs() <= Z_SCORE * se), float(((lw.mean(0) - analytic).abs() / se).max())
