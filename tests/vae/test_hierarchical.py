"""Hierarchical VAEs: the DDPM's ELBO terms are the layer terms of a hierarchical VAE; ladder VAE pieces."""

from __future__ import annotations

import math

import pytest
import torch

from fokker import vae
from fokker.errors import ParameterError, ShapeError
from fokker.sde import DDPM
from fokker.tolerances import Z_SCORE, assert_close
from fokker.train import fit

F64 = torch.float64


def _eps_model(x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A fixed, nonlinear noise predictor (any function of (x_k, k) will do for the identity)."""
    return 0.4 * torch.sin(x_k) + 0.05 * k.unsqueeze(-1).to(x_k) * x_k


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_elbo_terms_are_the_hierarchical_vae_terms(variance: str) -> None:
    """At the same latents x_1..x_N: L_N = top KL, L_{k-1} = KL of layer k-1, L_0 = -reconstruction."""
    ddpm = DDPM.linear(N=8, beta_start=0.05, beta_end=0.4)
    hvae = vae.ddpm_as_hierarchical_vae(ddpm, _eps_model, features=3, variance=variance)
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.manual_seed(11)
    terms = ddpm.elbo_terms(x0, _eps_model, variance=variance)
    # DDPM.elbo_terms draws x_k ~ q(x_k | x_0) for k = 2..N, then x_1, from the global RNG: replay them
    torch.manual_seed(11)
    xs = {k: ddpm.q_sample(x0, k, torch.randn_like(x0)) for k in range(2, ddpm.N + 1)}
    xs[1] = ddpm.q_sample(x0, 1, torch.randn_like(x0))
    latents = [xs[k] for k in range(ddpm.N, 0, -1)]  # top-down: x_N, ..., x_1
    ours = hvae.elbo_terms(x0, latents)
    assert ours.kl.shape == (5, ddpm.N)
    assert_close(ours.kl[:, 0], terms.L_N)
    # layer k-1 (k = N..2) is column N - k + 1; DDPM's L_mid is ordered k = 2..N
    assert_close(ours.kl[:, 1:], terms.L_mid.flip(-1), scale=10.0)  # terms up to ~10 nats
    assert_close(-ours.reconstruction, terms.L_0, scale=10.0)
    assert_close(-ours.total(), terms.total(), scale=50.0)


def test_ddpm_as_hvae_elbo_matches_the_chain_in_expectation() -> None:
    """Ancestral draws of the top-down posterior and DDPM's independent marginal draws estimate the same ELBO."""
    ddpm = DDPM.linear(N=6, beta_start=0.05, beta_end=0.4)
    hvae = vae.ddpm_as_hierarchical_vae(ddpm, _eps_model, features=2)
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    reps = 400
    xr = x0.repeat(reps, 1)
    ours = -hvae.elbo(xr, generator=torch.Generator().manual_seed(2)).reshape(reps, 4)
    torch.manual_seed(3)
    theirs = ddpm.elbo_terms(xr, _eps_model).total().reshape(reps, 4)
    diff = ours.mean(0) - theirs.mean(0)
    se = torch.sqrt(ours.var(0) / reps + theirs.var(0) / reps)
    assert torch.all(diff.abs() <= Z_SCORE * se), (diff, se)
    # the IWAE bound of the same model is above the ELBO (Burda et al. 2016) and log_weights has the particles first
    lw = hvae.log_weights(x0, 50, generator=torch.Generator().manual_seed(4))
    assert lw.shape == (50, 4)
    iwae = torch.logsumexp(lw, 0) - math.log(50)
    assert torch.all(iwae > -theirs.mean(0) - Z_SCORE * theirs.std(0) / math.sqrt(reps))


def test_precision_weighted_posterior_is_the_normalised_product_of_gaussians() -> None:
    torch.manual_seed(0)
    post = vae.PrecisionWeightedPosterior(6, 3).double()
    h = torch.randn(4, 6, dtype=F64)
    prior = torch.distributions.Independent(
        torch.distributions.Normal(torch.randn(4, 3, dtype=F64), torch.rand(4, 3, dtype=F64) + 0.2), 1)
    q = post(None, h, prior)
    up = post.head(h)
    z = torch.randn(7, 4, 3, dtype=F64)
    # log q(z) - log N_h(z) - log N_p(z) does not depend on z (q is proportional to the product)
    r = q.log_prob(z) - up.log_prob(z) - prior.log_prob(z)
    assert_close(r, r[:1].expand_as(r), scale=10.0)
    # and q is normalised: its mean and variance are those of a Gaussian (checked by the product formula in 1-D)
    v = 1 / (1 / up.base_dist.scale**2 + 1 / prior.base_dist.scale**2)
    assert_close(q.base_dist.scale**2, v)


def test_ladder_vae_bounds_training_and_sampling() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(256, 2, generator=g) @ torch.tensor([[1.0, 0.5, 0.0, 0.3], [0.0, 1.0, 1.0, -0.2]]) + 0.1 * torch.randn(256, 4, generator=g)
    model = vae.ladder_vae(4, latent_dims=(3, 2), hidden=(16,), feature_dim=8)
    assert model.num_layers == 2
    terms = model.elbo_terms(data[:8], generator=torch.Generator().manual_seed(1))
    assert terms.kl.shape == (8, 2) and bool((terms.kl >= 0).all())  # closed-form Gaussian KLs are >= 0
    # closed-form layer KLs = E[log q - log p] along the path (one layer below the top, given z_2)
    x = data[:2].repeat(2000, 1)
    with torch.no_grad():
        t = model.elbo_terms(x, generator=torch.Generator().manual_seed(2))
        lw = model.log_weights(x, 1, generator=torch.Generator().manual_seed(2))[0]
    # log w = log p(x|z_1) - (log q - log p) summed over layers: same draws, same reconstruction
    diff = (lw - t.total()).reshape(2000, 2)
    se = diff.std(0) / math.sqrt(2000)
    assert torch.all(diff.mean(0).abs() <= Z_SCORE * se), (diff.mean(0), se)
    before = float(model.elbo(data, generator=torch.Generator().manual_seed(3)).mean().detach())
    fit(model, data, steps=150, batch_size=128, lr=1e-2, seed=0, progress=False)
    after = float(model.elbo(data, generator=torch.Generator().manual_seed(3)).mean().detach())
    # independent references on these (Gaussian) data: the maximum-likelihood Gaussian with independent
    # coordinates (a model that ignores the correlations) and probabilistic PCA with 2 factors (the true family)
    d = data.double()
    diagonal = float(torch.distributions.Normal(d.mean(0), d.std(0, unbiased=False)).log_prob(d).sum(-1).mean())
    ppca = float(vae.ProbabilisticPCA.maximum_likelihood(d, 2).log_prob(d).mean())
    assert before < diagonal < after < ppca, (before, diagonal, after, ppca)
    s = model.sample((3, 5), generator=torch.Generator().manual_seed(4))
    assert s.shape == (3, 5, 4)
    assert torch.equal(s, model.sample((3, 5), generator=torch.Generator().manual_seed(4)))


def test_hierarchical_bad_input() -> None:
    torch.manual_seed(0)
    m = vae.ladder_vae(4, latent_dims=(3, 2), hidden=(8,), feature_dim=8)
    with pytest.raises(ParameterError, match="one module per layer"):
        vae.HierarchicalVAE(m.top_posterior, list(m.priors), [], m.decoder, 4)
    with pytest.raises(ShapeError, match="latents must hold 2"):
        m.elbo_terms(torch.zeros(2, 4), latents=[torch.zeros(2, 2)])
    with pytest.raises(ShapeError, match="x must have shape"):
        m.elbo(torch.zeros(2, 5))
    with pytest.raises(ParameterError, match="DDPM"):
        vae.ddpm_as_hierarchical_vae(object(), _eps_model, 2)
    with pytest.raises(ShapeError, match="decoder takes latents of size"):
        vae.ladder_vae(4, latent_dims=(3, 2), decoder=vae.GaussianDecoder(5, 4))
