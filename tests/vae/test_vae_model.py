"""VAE: Pyro's ELBOs agree with the native bounds, DReG against its formula, flow posteriors and priors, bad input."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from fokker import flows, vae
from fokker._random import rng_scope
from fokker.errors import DeviceDtypeError, DomainError, ParameterError, ShapeError
from fokker.tolerances import Z_SCORE, assert_close
from fokker.train import fit

F64 = torch.float64


def _gaussian_vae(d: int = 4, latent: int = 2, seed: int = 0, **kw) -> vae.VAE:
    torch.manual_seed(seed)
    return vae.VAE(vae.GaussianEncoder(d, latent, hidden=(16,)), vae.GaussianDecoder(latent, d, hidden=(16,)), **kw).double()


def _flow_vae(d: int = 4, latent: int = 2, seed: int = 0) -> vae.VAE:
    torch.manual_seed(seed)
    enc = vae.FlowEncoder(d, latent, hidden=(16,), context_dim=8,
                          flow=flows.iaf(latent, transforms=2, hidden=(16,), context_dim=8))
    return vae.VAE(enc, vae.GaussianDecoder(latent, d, hidden=(16,)), prior=flows.realnvp(latent, 2, (8,))).double()


def _x(num: int = 6, d: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(num, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# -- Pyro ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_gaussian_vae, _flow_vae], ids=["gaussian", "flow-posterior-and-prior"])
def test_pyro_elbos_equal_the_native_bounds_on_the_same_draws(make) -> None:
    """Trace_ELBO = the ELBO with a Monte-Carlo KL, RenyiELBO(alpha=0) = the IWAE bound: same RNG, same numbers."""
    model, x = make(), _x()
    pyro.clear_param_store()
    cases = [
        (lambda: model.elbo(x, analytic_kl=False).sum(), Trace_ELBO()),
        (lambda: model.elbo(x, 8, analytic_kl=False).sum(),
         Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)),
        (lambda: model.iwae_bound(x, 8).sum(), RenyiELBO(alpha=0, num_particles=8, vectorize_particles=True, max_plate_nesting=1)),
    ]
    for native, elbo in cases:
        torch.manual_seed(5)
        ours = float(native().detach())
        torch.manual_seed(5)
        theirs = -elbo.loss(model.model, model.guide, x)
        assert_close(torch.tensor(ours), torch.tensor(theirs), scale=abs(theirs))


def test_trace_mean_field_uses_the_same_closed_form_kl() -> None:
    model, x = _gaussian_vae(), _x()
    torch.manual_seed(5)
    ours = float(model.elbo(x).sum().detach())
    torch.manual_seed(5)
    theirs = -TraceMeanField_ELBO().loss(model.model, model.guide, x)
    assert_close(torch.tensor(ours), torch.tensor(theirs), scale=abs(theirs))


def test_svi_step_is_a_gradient_step_of_the_native_loss() -> None:
    """One SGD step of SVI with Trace_ELBO moves the parameters by -lr * grad of the native loss (same draws)."""
    model, x = _gaussian_vae(), _x()
    native = _gaussian_vae()
    native.load_state_dict(model.state_dict())
    pyro.clear_param_store()
    svi = SVI(model.model, model.guide, pyro.optim.SGD({"lr": 1e-3}), Trace_ELBO())
    torch.manual_seed(7)
    svi.step(x)
    torch.manual_seed(7)
    (-native.elbo(x, analytic_kl=False).sum()).backward()
    for (name, p), q in zip(model.named_parameters(), native.parameters()):
        assert_close(p.detach(), (q - 1e-3 * q.grad).detach(), msg=name)


def test_pyro_needs_pyro_distributions() -> None:
    class PlainEncoder(nn.Module):
        latent_dim = 2

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return torch.distributions.Independent(torch.distributions.Normal(self.lin(x), 1.0), 1)

    model = vae.VAE(PlainEncoder(), vae.GaussianDecoder(2, 4, hidden=(8,)))
    x = torch.randn(3, 4)
    assert model.elbo(x).shape == (3,)  # native use of plain torch distributions is fine
    with pytest.raises(ParameterError, match="pyro.distributions"):
        Trace_ELBO().loss(model.model, model.guide, x)


# -- DReG ------------------------------------------------------------------------------------------


def _ppca_vae(perturb: bool) -> tuple[vae.VAE, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=g, dtype=F64) @ torch.randn(4, 4, generator=g, dtype=F64)
    model = vae.ProbabilisticPCA.maximum_likelihood(x, 2).to_vae(objective="dreg", num_particles=5)
    if perturb:
        with torch.no_grad():
            model.encoder.scale.raw.add_(0.5)
            model.encoder.net[0].bias.add_(0.2)
    return model, x[:8]


def test_dreg_encoder_gradient_vanishes_at_the_exact_posterior() -> None:
    """log w_k = log p(x) for every z when q is the exact posterior: DReG's encoder gradient is exactly 0,
    the plain IWAE gradient (score term) is not."""
    model, x = _ppca_vae(perturb=False)
    torch.manual_seed(3)
    model.loss(x).backward()
    enc = [p.grad for p in model.encoder.parameters()]
    assert all(float(g.abs().max()) < 1e-10 for g in enc), [float(g.abs().max()) for g in enc]
    model.zero_grad()
    model.objective = "iwae"
    torch.manual_seed(3)
    model.loss(x).backward()
    assert max(float(p.grad.abs().max()) for p in model.encoder.parameters()) > 1e-3


def test_dreg_gradients_are_the_formula_of_tucker_et_al() -> None:
    """Encoder: sum_k w~_k^2 d log w_k/dz_k dz_k/dphi (log q at stopped parameters); decoder: the IWAE gradient."""
    model, x = _ppca_vae(perturb=True)
    K = model.num_particles
    torch.manual_seed(3)
    loss = model.loss(x)
    loss.backward()
    dreg = {n: p.grad.clone() for n, p in model.named_parameters()}
    # the same draws, the estimator written out with autograd
    model.zero_grad()
    torch.manual_seed(3)
    q = model.encoder(x)
    z = q.rsample((K,))
    mu, sd = q.base_dist.loc.detach(), q.base_dist.scale.detach()
    zl = z.detach().requires_grad_(True)
    log_q_stop = torch.distributions.Normal(mu, sd).log_prob(zl).sum(-1)
    log_w = model.decoder(zl).log_prob(x) + torch.distributions.Normal(0.0, 1.0).log_prob(zl).sum(-1) - log_q_stop
    w = torch.softmax(log_w.detach(), 0)
    (dlogw_dz,) = torch.autograd.grad(log_w.sum(), zl, retain_graph=True)
    enc_params = list(model.encoder.parameters())
    enc_grads = torch.autograd.grad(z, enc_params, grad_outputs=-(w**2).unsqueeze(-1) * dlogw_dz / x.shape[0],
                                    allow_unused=True)
    for (n, _), g in zip(model.encoder.named_parameters(), enc_grads):
        assert_close(dreg[f"encoder.{n}"], torch.zeros_like(dreg[f"encoder.{n}"]) if g is None else g, msg=n)
    dec_params = list(model.decoder.parameters())
    dec_grads = torch.autograd.grad(-(w * log_w).sum(0).mean(), dec_params)
    for (n, _), g in zip(model.decoder.named_parameters(), dec_grads):
        assert_close(dreg[f"decoder.{n}"], g, msg=n)
    # the loss value is the IWAE bound
    assert_close(loss.detach(), -torch.logsumexp(log_w.detach(), 0).sub(math.log(K)).mean())


def test_dreg_and_iwae_gradients_have_the_same_expectation() -> None:
    """Both are unbiased for grad L_K: their means over many draws agree within Z_SCORE standard errors."""
    model, x = _ppca_vae(perturb=True)
    x = x[:2]
    g = {"dreg": [], "iwae": []}
    torch.manual_seed(0)
    for _ in range(200):
        for obj in ("dreg", "iwae"):
            model.objective = obj
            model.zero_grad()
            model.loss(x).backward()
            g[obj].append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))
    a, b = torch.stack(g["dreg"]), torch.stack(g["iwae"])
    diff = a.mean(0) - b.mean(0)
    se = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
    assert torch.all(diff.abs() <= Z_SCORE * se + 1e-12), float((diff.abs() / se).max())
    assert float(a.var(0).sum()) < float(b.var(0).sum())  # and DReG has the smaller variance (its purpose)


# -- flow posterior and prior -------------------------------------------------------------------------


def test_flow_posterior_log_q_is_the_change_of_variables() -> None:
    """log q(z|x) = log N(z0; mu, sigma) - sum log|det|: the cached value, the inverted value and an
    autograd Jacobian of the sampling map agree."""
    model, x = _flow_vae(), _x(3)
    q = model.encode(x)
    with rng_scope(torch.Generator().manual_seed(0)):
        z = q.rsample((2,))
    cached = q.log_prob(z)
    inverted = model.encode(x).log_prob(z.detach().clone())
    assert_close(cached, inverted, loose=True)
    # independent: z = T(z0) with z0 = mu + sigma eps; log q = log N(z0) - log|det dT/dz0| by autograd
    with rng_scope(torch.Generator().manual_seed(0)):
        eps = torch.randn(2, 3, 2, dtype=F64)
    base = q.base_dist
    z0 = base.base_dist.loc + base.base_dist.scale * eps
    layers = q.transforms
    ldets = torch.zeros(2, 3, dtype=F64)
    for i in range(2):
        for j in range(3):
            def f(v, j=j):  # the sampling map of data point j (its context row)
                out = z0[i].detach().clone()
                out[j] = v
                for t in layers:
                    out = t(out)
                return out[j]
            J = torch.autograd.functional.jacobian(f, z0[i, j].detach())
            ldets[i, j] = torch.linalg.slogdet(J)[1]
    expected = base.log_prob(z0) - ldets
    assert_close(cached.detach(), expected.detach(), loose=True)


def test_flow_prior_is_the_flows_density() -> None:
    model = _flow_vae()
    z = torch.randn(5, 2, dtype=F64)
    assert_close(model.prior_log_prob(z), model.prior_flow.log_prob(z))
    assert_close(model.prior().log_prob(z), model.prior_flow.log_prob(z), loose=True)
    assert model.sample((4,), generator=torch.Generator().manual_seed(0)).shape == (4, 4)


def test_flow_posterior_reaches_a_correlated_posterior_that_a_diagonal_gaussian_cannot() -> None:
    """Fixed pPCA decoder with non-orthogonal W: the exact posterior is correlated.  The diagonal encoder's
    best ELBO gap is KL(diag || full) > 0; the IAF posterior (affine autoregressive: any Gaussian) closes it."""
    W = torch.tensor([[1.0, 0.9], [0.9, 1.0], [0.2, -0.3]], dtype=F64)
    pca = vae.ProbabilisticPCA(torch.zeros(3, dtype=F64), W, torch.tensor(0.1, dtype=F64))
    x = pca.marginal().sample((128,))
    log_p = pca.log_prob(x).mean()
    torch.manual_seed(0)
    enc = vae.FlowEncoder(3, 2, hidden=(), context_dim=4, flow=flows.iaf(2, transforms=1, hidden=(8,), context_dim=4))
    decoder = pca.to_vae().decoder
    decoder.requires_grad_(False)
    model = vae.VAE(enc.double(), decoder, analytic_kl=False)
    fit(model, x, steps=100, batch_size=128, lr=0.05, seed=0, progress=False)
    with torch.no_grad():
        gap_flow = float(log_p - model.elbo(x, 200, generator=torch.Generator().manual_seed(1)).mean())
    # the best diagonal Gaussian: precisions = diag of the posterior precision; gap = KL(diag || exact)
    Sigma = pca.posterior(x[:1]).covariance_matrix[0]
    prec = torch.linalg.inv(Sigma)
    diag_cov = torch.diag(1 / torch.diagonal(prec))
    gap_diag = float(torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(torch.zeros(2, dtype=F64), diag_cov),
        torch.distributions.MultivariateNormal(torch.zeros(2, dtype=F64), Sigma)))
    assert gap_diag > 0.3, gap_diag
    assert gap_flow < 0.15 * gap_diag, (gap_flow, gap_diag)


# -- generation, training, reproducibility ---------------------------------------------------------


def test_sample_reconstruct_encode_shapes_and_generators() -> None:
    model, x = _gaussian_vae(), _x()
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    s = model.sample((2, 3), generator=g())
    assert s.shape == (2, 3, 4) and torch.equal(s, model.sample((2, 3), generator=g()))
    assert model.sample(5, mean=True).shape == (5, 4)
    assert torch.equal(model.reconstruct(x, generator=g()), model.reconstruct(x, generator=g()))
    assert model.encode(x).batch_shape == (6,) and model.encode(x).event_shape == (2,)
    assert model.decode(torch.zeros(7, 2, dtype=F64)).batch_shape == (7,)
    state = torch.get_rng_state()
    model.elbo(x, generator=g())
    assert torch.equal(state, torch.get_rng_state())  # a generator leaves the global RNG alone


def test_fit_trains_the_bernoulli_vae() -> None:
    g = torch.Generator().manual_seed(0)
    protos = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=F64)
    data = protos[torch.randint(0, 2, (200,), generator=g)]
    data = torch.where(torch.rand(200, 6, generator=g, dtype=F64) < 0.05, 1 - data, data)
    torch.manual_seed(0)
    model = vae.VAE(vae.GaussianEncoder(6, 2, hidden=(16,)), vae.BernoulliDecoder(2, 6, hidden=(16,)),
                    objective="iwae", num_particles=4).double()
    before = float(model.log_prob(data, 200, generator=torch.Generator().manual_seed(1)).mean())
    fit(model, data, steps=200, batch_size=100, lr=1e-2, seed=0, progress=False)
    after = float(model.log_prob(data, 200, generator=torch.Generator().manual_seed(1)).mean())
    # exact log-likelihood of the generating mixture: 2 prototypes, 5% flips (an upper bound on what any model gets)
    flips = (data[:, None, :] != protos[None]).sum(-1).double()
    true_ll = float(torch.logsumexp(flips * math.log(0.05) + (6 - flips) * math.log(0.95) + math.log(0.5), -1).mean())
    assert after > before + 1.0, (before, after)
    assert true_ll - 0.3 < after < true_ll + 0.05, (after, true_ll)


# -- bad input -------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors() -> None:
    enc, dec = vae.GaussianEncoder(4, 2, hidden=(8,)), vae.GaussianDecoder(3, 4, hidden=(8,))
    with pytest.raises(ShapeError, match="do not fit together"):
        vae.VAE(enc, dec)  # latent 2 vs decoder input 3
    with pytest.raises(ShapeError, match="event_shape"):
        vae.VAE(vae.GaussianEncoder(4, 2, hidden=(8,)), vae.GaussianDecoder(2, 5, hidden=(8,)), event_shape=4)

    class NotADistribution(nn.Module):
        latent_dim, event_shape = 2, (4,)

        def forward(self, z):
            return z.sum(-1)

    with pytest.raises(ParameterError, match="must return a torch.distributions.Distribution"):
        vae.VAE(vae.GaussianEncoder(4, 2, hidden=(8,)), NotADistribution())
    with pytest.raises(ParameterError, match="must return a torch.distributions.Distribution"):
        vae.VAE(NotADistribution(), vae.GaussianDecoder(2, 4, hidden=(8,)), event_shape=4)
    with pytest.raises(ParameterError, match="nn.Module"):
        vae.VAE(lambda x: x, vae.GaussianDecoder(2, 4))
    model = _gaussian_vae()
    x = _x()
    for bad in (0, -1, 1.5):
        with pytest.raises(ParameterError, match="num_particles"):
            model.iwae_bound(x, bad)
        with pytest.raises(ParameterError, match="num_particles"):
            vae.VAE(vae.GaussianEncoder(4, 2), vae.GaussianDecoder(2, 4), num_particles=bad)
    with pytest.raises(ParameterError, match="objective"):
        vae.VAE(vae.GaussianEncoder(4, 2), vae.GaussianDecoder(2, 4), objective="wake-sleep")
    with pytest.raises(ShapeError, match=r"x must have shape \(batch, 4\)"):
        model.elbo(torch.zeros(3, 5, dtype=F64))
    with pytest.raises(DeviceDtypeError, match="dtype"):
        model.elbo(torch.zeros(3, 4, dtype=torch.float32))
    with pytest.raises(ShapeError, match="z must have shape"):
        model.decode(torch.zeros(3, 5, dtype=F64))
    bern = vae.VAE(vae.GaussianEncoder(4, 2, hidden=(8,)), vae.BernoulliDecoder(2, 4, hidden=(8,)))
    with pytest.raises(DomainError, match="support"):
        bern.elbo(torch.full((2, 4), 0.5))
    with pytest.raises(ParameterError, match="analytic_kl=False"):
        _flow_vae().elbo(_x(), analytic_kl=True)
    with pytest.raises(ShapeError, match="flow prior"):
        vae.VAE(vae.GaussianEncoder(4, 2), vae.GaussianDecoder(2, 4), prior=flows.realnvp(3, 2))
    with pytest.raises(ShapeError, match="context"):
        vae.FlowEncoder(4, 2, context_dim=8, flow=flows.iaf(2, transforms=1, context_dim=5))
