"""LatentSDE: the Girsanov rate against the Euler-transition KL, the ELBO's terms against hand-set models
with closed-form latent paths, training on a small GBM set, adjoint vs backprop gradients, the prior
marginal, the predictive's switch to the prior, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from fokker.errors import NonFiniteError, ParameterError, ShapeError
from fokker.neural_sde import LatentSDE, path_data
from fokker.sde import girsanov_integrand
from fokker.tolerances import Z_SCORE, assert_close
from fokker.train import fit


def test_girsanov_integrand_is_the_kl_rate_of_euler_transitions(dtype) -> None:
    g = torch.Generator().manual_seed(0)
    x, fp, fq = (torch.randn(6, 3, generator=g).to(dtype) for _ in range(3))
    sig = (0.3 + torch.rand(6, 3, generator=g)).to(dtype)
    h = 0.01
    exact = kl_divergence(Normal(x + h * fp, sig * math.sqrt(h)), Normal(x + h * fq, sig * math.sqrt(h))).sum(-1)
    assert_close(h * girsanov_integrand(fp, fq, sig), exact)
    # a zero diffusion: 0 where the drifts agree, inf where they differ
    zero = torch.zeros(2, 2, dtype=dtype)
    res = girsanov_integrand(torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=dtype), torch.zeros(2, 2, dtype=dtype), zero)
    assert res.tolist() == [math.inf, 0.0]


class Constant(nn.Module):
    """A drift or diffusion ``c`` (state independent); ``net(z, t[, context])``."""

    def __init__(self, value: list[float]) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value, dtype=torch.float64))

    def forward(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.value.to(z.dtype).expand_as(z)


class SameAsPrior(nn.Module):
    """A posterior drift that ignores the context and *is* the prior drift: the path KL is exactly 0."""

    def __init__(self, prior: nn.Module) -> None:
        super().__init__()
        self.prior = [prior]  # not a submodule: the parameters stay the prior's

    def forward(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.prior[0](z, t)


def _data(num_paths: int = 5, num_times: int = 6, dim: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.linspace(0, 1, num_times, dtype=torch.float64), torch.randn(num_paths, num_times, dim, generator=g,
                                                                             dtype=torch.float64)


def test_elbo_without_path_kl_is_reconstruction_minus_initial_kl() -> None:
    times, paths = _data()
    model = LatentSDE(2, 3, hidden=8, context_dim=4, dt=0.05).double()
    model.posterior_drift = SameAsPrior(model.prior_drift)
    terms = model.elbo_terms(times, paths, num_samples=3, generator=torch.Generator().manual_seed(1))
    assert bool((terms.kl_path == 0).all())
    _, q = model.encode(times, paths)
    assert_close(terms.kl_initial, kl_divergence(q, model.prior_z0()).sum(-1))
    assert_close(terms.elbo, terms.reconstruction - terms.kl_initial)


def _deterministic(model: LatentSDE, loc: list[float], drift: list[float], prior_drift: list[float]) -> None:
    """q(z_0 | x) = N(loc, e^-40) for every x, a negligible diffusion, constant drifts: z_t is known in closed form."""
    L = model.latent_dim
    with torch.no_grad():
        model.qz0.weight.zero_()
        model.qz0.bias.copy_(torch.tensor(loc + [-40.0] * L))
    model.prior_drift = Constant(prior_drift).double()
    model.posterior_drift = Constant(drift).double()
    model.diffusion_net = Constant([1e-12] * L).double()


def test_reconstruction_and_path_kl_of_a_deterministic_latent_path() -> None:
    times, paths = _data(dim=2)
    model = LatentSDE(2, 2, hidden=8, context_dim=4, dt=0.1).double()
    loc, c_q, c_p = [0.5, -1.0], [1.0, 2.0], [0.0, 2.0]
    _deterministic(model, loc, c_q, c_p)
    terms = model.elbo_terms(times, paths, generator=torch.Generator().manual_seed(2))
    z = torch.tensor(loc, dtype=torch.float64) + times[:, None] * torch.tensor(c_q, dtype=torch.float64)  # (K, L)
    expected = Normal(model.decode(z), model.noise_std).log_prob(paths).sum((-2, -1))
    # z_0 keeps the encoder's floor std e^-20 ~ 2e-9: equal to about 1e-8 relative (the loose tolerance)
    assert_close(terms.reconstruction, expected.detach(), loose=True)
    # the path KL of constant drifts is 0.5 |c_q - c_p|^2 / g^2 * T
    assert_close(terms.kl_path, torch.full((5,), 0.5 * 1.0 / 1e-24, dtype=torch.float64))


class Recorder(nn.Module):
    """A zero posterior drift that records the times and contexts it is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.calls.append((t.detach().clone(), context.detach().clone()))
        return torch.zeros_like(z)


def test_posterior_drift_reads_the_next_observation_and_the_time_left() -> None:
    times = torch.tensor([0.0, 0.2, 0.3, 0.7], dtype=torch.float64)  # uneven gaps, multiples of dt
    paths = torch.randn(3, 4, 2, dtype=torch.float64)
    rec = Recorder()
    model = LatentSDE(2, 2, hidden=8, context_dim=4, dt=0.05, posterior_drift=rec).double()
    model.elbo(times, paths, adjoint=False)
    # before the solve, our argument check and torchsde's contract check call the drift at t_0
    solver_calls = rec.calls[-14:]  # one per Euler step: 0.7 / 0.05
    assert_close(torch.stack([t[0] for t, _ in solver_calls]), torch.arange(14, dtype=torch.float64) * 0.05)
    for t, context in solver_calls:
        tt = float(t[0])
        i = int((times <= tt + 1e-9).sum())  # index of the next observation time
        assert context.shape == (3, 4 + 2 + 1)
        assert_close(context[:, 4:6], paths[:, i])
        assert_close(context[:, 6], (times[i] - t).to(context.dtype))


def test_predictive_follows_the_posterior_then_the_prior() -> None:
    times, paths = _data(num_paths=2, dim=1)
    model = LatentSDE(1, 1, hidden=8, context_dim=4, dt=0.1).double()
    _deterministic(model, [0.3], [1.0], [-2.0])
    future = torch.tensor([0.45, 1.0, 1.5], dtype=torch.float64)
    pred = model.predict(times, paths, future, num_samples=3, observation_noise=False, generator=torch.Generator().manual_seed(3))
    z = torch.tensor([0.3 + 0.45, 0.3 + 1.0, 0.3 + 1.0 - 2.0 * 0.5], dtype=torch.float64)[:, None]
    assert pred.shape == (3, 2, 3, 1)
    # z_0 keeps the encoder's floor std e^-20 ~ 2e-9: equal to about 1e-8 relative (the loose tolerance)
    assert_close(pred, model.decode(z).detach().expand(3, 2, 3, 1), loose=True)


def test_prior_samples_have_the_closed_form_marginal() -> None:
    num, s0, sig, noise = 4000, 0.5, 0.8, 0.2
    model = LatentSDE(1, 1, hidden=8, context_dim=4, noise_std=noise, dt=0.05).double()
    with torch.no_grad():
        model.pz0_mean.fill_(1.0)
        model.pz0_logstd.fill_(math.log(s0))
        model.decoder.weight.fill_(1.0)
        model.decoder.bias.zero_()
    model.prior_drift = Constant([0.0]).double()
    model.diffusion_net = Constant([sig]).double()
    times = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    x = model.sample_prior((num,), times, generator=torch.Generator().manual_seed(4))
    assert x.shape == (num, 3, 1)
    for k, t in enumerate(times.tolist()):
        v = s0**2 + sig**2 * t + noise**2  # x_t = z_0 + sig W_t + noise
        assert abs(float(x[:, k].mean()) - 1.0) <= Z_SCORE * math.sqrt(v / num)
        assert abs(float(x[:, k].var()) - v) <= Z_SCORE * v * math.sqrt(2 / num)


def gbm(num_paths: int, times: torch.Tensor, gen: torch.Generator, mu: float = 0.5, sigma: float = 0.4) -> torch.Tensor:
    """Geometric Brownian motion ``x_t = x_0 exp((mu - sigma^2/2) t + sigma W_t)``, ``x_0 ~ LogNormal(0, 0.2)``."""
    dw = torch.randn(num_paths, len(times) - 1, generator=gen, dtype=times.dtype) * torch.diff(times).sqrt()
    w = torch.cat([torch.zeros(num_paths, 1, dtype=times.dtype), dw.cumsum(1)], 1)
    x0 = torch.exp(0.2 * torch.randn(num_paths, 1, generator=gen, dtype=times.dtype))
    return (x0 * torch.exp((mu - sigma**2 / 2) * times + sigma * w))[..., None]


def test_negative_elbo_decreases_on_a_small_gbm_set() -> None:
    times = torch.linspace(0, 1, 11, dtype=torch.float64)
    paths = gbm(32, times, torch.Generator().manual_seed(5))
    model = LatentSDE(1, 2, hidden=16, context_dim=8).double()

    def neg_elbo() -> torch.Tensor:  # common random numbers before and after training
        with torch.no_grad():
            return -model.elbo(times, paths, num_samples=4, generator=torch.Generator().manual_seed(6))

    before = neg_elbo()
    fit(model, path_data(times, paths), steps=20, batch_size=32, lr=0.02, progress=False)
    diff = before - neg_elbo()
    # the paired decrease exceeds several of its standard errors
    assert float(diff.mean()) > Z_SCORE * float(diff.std() / math.sqrt(len(diff)))


@pytest.mark.parametrize("sde_type", ["stratonovich", "ito"])
def test_adjoint_gradients_match_backpropagation(device, dtype, sde_type) -> None:
    times, paths = _data(num_paths=4, dim=1)
    times, paths = times.to(device, dtype), paths.to(device, dtype)
    torch.manual_seed(0)
    model = LatentSDE(1, 2, hidden=8, context_dim=4, dt=0.05, sde_type=sde_type).to(device, dtype)

    def grads(adjoint: bool) -> torch.Tensor:
        model.zero_grad()
        elbo = model.elbo(times, paths, num_samples=2, adjoint=adjoint, generator=torch.Generator().manual_seed(7))
        (-elbo.mean()).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    adj, bp = grads(True), grads(False)
    scale = float(bp.abs().max())
    if sde_type == "stratonovich":
        # reversible Heun's adjoint reconstructs the forward states exactly: equal up to rounding
        # (accumulated over 20 steps of a network with a few hundred parameters: scale 10)
        assert_close(adj, bp, scale=10 * scale)
    else:
        # the Ito adjoint (Milstein, backwards) approximates the Euler solver's gradient to O(dt^1/2)
        assert float((adj - bp).abs().max()) <= math.sqrt(0.05) * scale


class SharedWithPrior(nn.Module):
    """A posterior drift that registers the prior drift as a submodule: the same parameters twice."""

    def __init__(self, prior: nn.Module, context_dim: int) -> None:
        super().__init__()
        self.prior = prior
        self.head = nn.Linear(context_dim, 1)

    def forward(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.prior(z, t) + self.head(context)


def test_adjoint_counts_parameters_shared_by_two_networks_once() -> None:
    times, paths = _data(num_paths=3, dim=1)
    torch.manual_seed(0)
    model = LatentSDE(1, 1, hidden=8, context_dim=4, dt=0.05, sde_type="stratonovich").double()
    model.posterior_drift = SharedWithPrior(model.prior_drift, 4 + 1 + 1).double()

    def grads(adjoint: bool) -> torch.Tensor:
        model.zero_grad()
        (-model.elbo(times, paths, adjoint=adjoint, generator=torch.Generator().manual_seed(8)).mean()).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    bp = grads(False)
    assert_close(grads(True), bp, scale=10 * float(bp.abs().max()))


class WrongShape(nn.Module):
    def forward(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return z[:, :1]


def test_bad_input() -> None:
    times, paths = _data(num_paths=3, dim=2)
    model = LatentSDE(2, 2, hidden=8, context_dim=4).double()
    with pytest.raises(ShapeError, match="paths"):
        model.elbo(times, paths[..., :1])
    bad = paths.clone()
    bad[0, 3, 1] = math.nan
    with pytest.raises(NonFiniteError, match="paths"):
        model.loss((times, bad))
    with pytest.raises(ParameterError, match="times must be strictly increasing"):
        model.elbo(times.flip(0), paths)
    with pytest.raises(ParameterError, match="shared"):
        model.elbo(torch.stack([times, times, 2 * times]), paths)
    with pytest.raises(ParameterError, match="future_times"):
        model.predict(times, paths, torch.tensor([0.5, 0.2], dtype=torch.float64))
    with pytest.raises(ShapeError, match="diffusion"):
        LatentSDE(2, 2, hidden=8, context_dim=4, diffusion=WrongShape()).double().elbo(times, paths)
    with pytest.raises(ShapeError, match="posterior_drift"):
        LatentSDE(2, 2, hidden=8, context_dim=4, posterior_drift=WrongShape()).double().elbo(times, paths)
    with pytest.raises(ParameterError, match="positive"):
        LatentSDE(2, 2, hidden=8, context_dim=4, diffusion=Constant([0.5, -1.0])).double().elbo(times, paths)
    with pytest.raises(ParameterError, match="method"):
        LatentSDE(2, sde_type="ito", method="reversible_heun")
    with pytest.raises(ParameterError, match="sde_type"):
        LatentSDE(2, sde_type="ito-ish")
