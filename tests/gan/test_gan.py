"""GAN: losses against their formulas and Goodfellow's theorem 1, WGAN-GP's penalty against autograd, the
alternating steps under fit, checkpoint/resume, weight clipping, DDLS with the optimal discriminator, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fokker import gan, mcmc
from fokker.errors import DeviceDtypeError, ParameterError, ShapeError
from fokker.tolerances import Z_SCORE, assert_close
from fokker.train import fit

F64 = torch.float64


class _Affine(nn.Module):
    """G(z) = A z + b (its push-forward of N(0, I) is N(b, A A^T))."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.A, self.b = nn.Parameter(A.clone()), nn.Parameter(b.clone())
        self.latent_dim, self.event_shape = A.shape[1], (A.shape[0],)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.A.T + self.b


class _LogRatio(nn.Module):
    """The optimal discriminator logit d*(x) = log p_data(x) - log p_g(x) for two Gaussians."""

    def __init__(self, p_data: torch.distributions.Distribution, p_g: torch.distributions.Distribution) -> None:
        super().__init__()
        self.p_data, self.p_g = p_data, p_g
        self.scale = nn.Parameter(torch.ones((), dtype=F64))  # a parameter, so the module has a dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (self.p_data.log_prob(x) - self.p_g.log_prob(x))


def _mvn(mean, cov) -> torch.distributions.MultivariateNormal:
    return torch.distributions.MultivariateNormal(torch.tensor(mean, dtype=F64), torch.tensor(cov, dtype=F64))


def _small_gan(seed: int = 0, **kw) -> gan.GAN:
    torch.manual_seed(seed)
    return gan.GAN(gan.Generator(2, 2, hidden=(16,)), gan.Discriminator(2, hidden=(16,)), **kw).double()


# -- losses ------------------------------------------------------------------------------------------


def test_losses_are_the_formulas_of_goodfellow_and_arjovsky() -> None:
    d_r, d_f = torch.randn(50, dtype=F64) * 3, torch.randn(40, dtype=F64) * 3
    D_r, D_f = torch.sigmoid(d_r), torch.sigmoid(d_f)
    assert_close(gan.discriminator_loss("non_saturating", d_r, d_f), -(torch.log(D_r).mean() + torch.log(1 - D_f).mean()))
    assert_close(gan.discriminator_loss("minimax", d_r, d_f), -(torch.log(D_r).mean() + torch.log(1 - D_f).mean()))
    assert_close(gan.generator_loss("minimax", d_f), torch.log(1 - D_f).mean())
    assert_close(gan.generator_loss("non_saturating", d_f), -torch.log(D_f).mean())
    assert_close(gan.discriminator_loss("wasserstein", d_r, d_f), d_f.mean() - d_r.mean())
    assert_close(gan.generator_loss("wasserstein", d_f), -d_f.mean())
    # stable for large logits, where the naive formulas overflow
    big = torch.tensor([80.0, -80.0], dtype=torch.float32)
    assert torch.isfinite(gan.discriminator_loss("minimax", big, -big)) and torch.isfinite(gan.generator_loss("non_saturating", -big))


def test_optimal_discriminator_value_is_twice_the_jensen_shannon_divergence_minus_log_4() -> None:
    """Goodfellow et al. (2014), theorem 1: at d* = log p_data / p_g, -(discriminator loss) = 2 JSD - log 4.
    The JSD of two 1-D Gaussians by quadrature (independent)."""
    p_data, p_g = _mvn([1.5], [[0.5]]), _mvn([0.0], [[1.0]])
    model = gan.GAN(_Affine(torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64)), _LogRatio(p_data, p_g),
                    loss="minimax")
    n = 200_000
    real = p_data.sample((n,))
    torch.manual_seed(1)
    with torch.no_grad():
        fake = model.sample((n,))
        vals_r = torch.nn.functional.softplus(-model.discriminate(real))
        vals_f = torch.nn.functional.softplus(model.discriminate(fake))
    estimate = float(vals_r.mean() + vals_f.mean())
    se = math.sqrt(float(vals_r.var() + vals_f.var()) / n)
    torch.manual_seed(1)
    assert_close(model.discriminator_loss(real).detach(), torch.tensor(estimate, dtype=F64))  # same draws
    x = torch.linspace(-12, 12, 200_001, dtype=F64).unsqueeze(-1)
    pd, pg = p_data.log_prob(x).exp(), p_g.log_prob(x).exp()
    m = 0.5 * (pd + pg)
    integrand = 0.5 * pd * torch.log(pd / m) + 0.5 * pg * torch.log(pg / m)
    jsd = float(torch.trapezoid(torch.nan_to_num(integrand), x.squeeze(-1)))
    assert abs(-estimate - (2 * jsd - math.log(4))) <= Z_SCORE * se, (-estimate, 2 * jsd - math.log(4), se)


def test_gradient_penalty_equals_a_per_sample_autograd_computation() -> None:
    torch.manual_seed(0)
    critic = gan.Discriminator((2, 3), hidden=(8,)).double()
    real, fake = torch.randn(5, 2, 3, dtype=F64), torch.randn(5, 2, 3, dtype=F64)
    pen = gan.gradient_penalty(critic, real, fake, 10.0, generator=torch.Generator().manual_seed(3))
    eps = torch.rand((5, 1, 1), generator=torch.Generator().manual_seed(3), dtype=F64)
    expected = 0.0
    for i in range(5):
        xi = eps[i] * real[i] + (1 - eps[i]) * fake[i]
        J = torch.autograd.functional.jacobian(lambda v: critic(v.unsqueeze(0))[0], xi)
        expected += 10.0 * (J.norm() - 1) ** 2 / 5
    assert_close(pen.detach(), expected)
    # the penalty trains the critic: its gradient reaches the parameters (double backward)
    grads = torch.autograd.grad(pen, list(critic.parameters()), allow_unused=True)
    assert any(g is not None and float(g.abs().max()) > 0 for g in grads)


# -- alternating steps under fit ---------------------------------------------------------------------


@pytest.mark.parametrize("use_alternating_adam", [True, False], ids=["AlternatingAdam", "fit-default-Adam"])
def test_fit_alternates_critic_steps_and_generator_steps(use_alternating_adam: bool) -> None:
    model = _small_gan(critic_steps=2)
    data = torch.randn(64, 2, dtype=F64)
    snaps = [[p.detach().clone() for p in model.parameters()]]
    fit(model, data, steps=6, batch_size=32, seed=0, progress=False,
        optimizer=model.optimizer(lr=1e-2) if use_alternating_adam else None,
        callback=lambda step, loss, m: snaps.append([p.detach().clone() for p in m.parameters()]) and None)
    n_gen = len(list(model.generator.parameters()))
    moved = []
    for before, after in zip(snaps[:-1], snaps[1:]):
        changed = [not torch.equal(a, b) for a, b in zip(before, after)]
        g, d = any(changed[:n_gen]), any(changed[n_gen:])
        moved.append("G" if g and not d else "D" if d and not g else "both" if g else "none")
    assert moved == ["D", "D", "G", "D", "D", "G"]
    assert int(model.num_updates) == 6
    crit, gen_ = model.split_losses([0, 1, 2, 3, 4, 5])
    assert crit == [0, 1, 3, 4] and gen_ == [2, 5]


def test_alternating_adam_leaves_the_idle_player_alone_with_zero_gradients() -> None:
    """Data parallelism fills missing gradients with zeros; Adam's momentum would still move the idle player."""
    model = _small_gan()
    data = torch.randn(32, 2, dtype=F64)
    for make in (lambda: model.optimizer(lr=1e-2), lambda: torch.optim.Adam(model.parameters(), lr=1e-2)):
        opt = make()
        for _ in range(3):  # critic, generator, critic, ... with every gradient present (zeros for the idle one)
            opt.zero_grad()
            model.loss(data).backward()
            for p in model.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            before = [p.detach().clone() for p in model.generator.parameters()] if model.last_player == "critic" else \
                [p.detach().clone() for p in model.discriminator.parameters()]
            idle = model.generator if model.last_player == "critic" else model.discriminator
            opt.step()
            same = all(torch.equal(a, b) for a, b in zip(before, idle.parameters()))
        assert same == isinstance(opt, gan.AlternatingAdam)


def test_resumed_gan_run_equals_an_uninterrupted_one(tmp_path) -> None:
    data = torch.randn(128, 2, dtype=F64)
    ref = _small_gan(critic_steps=2, loss="wasserstein", gradient_penalty=1.0)
    fit(ref, data, steps=9, batch_size=32, seed=3, progress=False, optimizer=ref.optimizer(lr=1e-2))
    model = _small_gan(critic_steps=2, loss="wasserstein", gradient_penalty=1.0)
    ck = tmp_path / "gan.pt"
    fit(model, data, steps=4, batch_size=32, seed=3, progress=False, optimizer=model.optimizer(lr=1e-2), checkpoint=ck)
    again = _small_gan(critic_steps=2, loss="wasserstein", gradient_penalty=1.0)
    fit(again, data, steps=9, batch_size=32, seed=3, progress=False, optimizer=again.optimizer(lr=1e-2), checkpoint=ck)
    for a, b in zip(again.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


def test_weight_clipping_holds_at_every_critic_evaluation() -> None:
    model = _small_gan(loss="wasserstein", clip=0.05, critic_steps=3)
    seen = []
    model.discriminator.register_forward_pre_hook(
        lambda mod, args: seen.append(max(float(p.abs().max()) for p in mod.parameters())))
    fit(model, torch.randn(64, 2, dtype=F64) * 3, steps=12, batch_size=32, lr=0.1, seed=0, progress=False)
    assert seen and max(seen) <= 0.05
    unclipped = _small_gan(loss="wasserstein", gradient_penalty=1.0)
    assert max(float(p.abs().max()) for p in unclipped.discriminator.parameters()) > 0.05  # the clip has work to do


def test_wgan_gp_learns_a_gaussian() -> None:
    """A linear generator trained by WGAN-GP reaches the data's mean and spread (moments within 0.15)."""
    data = torch.randn(2000, 1, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.5 + 2.0
    torch.manual_seed(0)
    model = gan.GAN(_Affine(torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64)),
                    gan.Discriminator(1, hidden=(32,)).double(), loss="wasserstein", gradient_penalty=1.0, critic_steps=2)
    fit(model, data, steps=600, batch_size=256, seed=0, progress=False, optimizer=model.optimizer(lr=2e-2, betas=(0.5, 0.9)),
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 600))
    s = model.sample((20_000,), generator=torch.Generator().manual_seed(1))
    # from N(0, 1): errors 2 and 0.5 before training
    assert abs(float(s.mean()) - 2.0) < 0.15 and abs(float(s.std()) - 0.5) < 0.15, (float(s.mean()), float(s.std()))


# -- the discriminator as an energy ------------------------------------------------------------------


def test_ddls_with_the_optimal_discriminator_samples_the_data_distribution() -> None:
    """Che et al. (2020): with d* = log p_data / p_g, the latent density p_0(z) e^{d*(G(z))} pushes forward to
    p_data exactly; MALA chains on it give samples with the data's mean and covariance."""
    A, b = torch.tensor([[1.0, 0.3], [0.0, 0.8]], dtype=F64), torch.tensor([0.5, -0.5], dtype=F64)
    p_g = _mvn(b.tolist(), (A @ A.T).tolist())
    p_data = _mvn([2.0, 1.0], [[0.5, 0.2], [0.2, 0.3]])
    model = gan.GAN(_Affine(A, b), _LogRatio(p_data, p_g))
    n = 2000
    x = model.ddls((n,), num_steps=300, kernel=mcmc.MALA(), generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, 2)
    se = torch.sqrt(torch.diagonal(p_data.covariance_matrix) / n)
    assert torch.all((x.mean(0) - p_data.mean).abs() <= Z_SCORE * se), (x.mean(0), se)
    cov = torch.cov(x.T)
    se_cov = torch.sqrt((p_data.covariance_matrix**2 + torch.outer(*(torch.diagonal(p_data.covariance_matrix),) * 2)) / n)
    assert torch.all((cov - p_data.covariance_matrix).abs() <= Z_SCORE * se_cov), (cov, se_cov)
    # the generator alone is far from the data (the correction does the work)
    assert float((model.sample((n,)).mean(0) - p_data.mean).abs().max()) > 1.0
    # the energy is -d
    xs = torch.randn(4, 2, dtype=F64)
    assert_close(model.energy(xs), -(p_data.log_prob(xs) - p_g.log_prob(xs)))


# -- bad input ---------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors() -> None:
    G, D = gan.Generator(2, 2, hidden=(8,)), gan.Discriminator(2, hidden=(8,))
    with pytest.raises(ParameterError, match="loss must be one of"):
        gan.GAN(G, D, loss="hinge-ish")
    with pytest.raises(ParameterError, match="Lipschitz"):
        gan.GAN(G, D, loss="wasserstein")
    gan.GAN(G, gan.Discriminator(2, hidden=(8,), spectral_norm=True), loss="wasserstein")  # spectral norm suffices
    with pytest.raises(ParameterError, match="critic_steps"):
        gan.GAN(G, D, critic_steps=0)
    with pytest.raises(ParameterError, match="clip"):
        gan.GAN(G, D, loss="wasserstein", clip=-1.0)
    with pytest.raises(ShapeError, match="event shape"):
        gan.GAN(G, gan.Discriminator(3, hidden=(8,)), event_shape=3)
    with pytest.raises(ShapeError, match="one value per sample"):
        gan.GAN(G, nn.Linear(2, 2))
    with pytest.raises(ShapeError, match="cannot take latents"):
        gan.GAN(G, D, latent_dim=5)

    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, x):
            return self.lin(x.detach().round())

    model = gan.GAN(G, Detached(), loss="wasserstein", gradient_penalty=10.0)
    with pytest.raises(ParameterError, match="gradient path"):
        model.loss(torch.randn(8, 2))
    ok = gan.GAN(G, D)
    with pytest.raises(ShapeError, match=r"batch must have shape \(batch, 2\)"):
        ok.loss(torch.randn(8, 3))
    with pytest.raises(DeviceDtypeError):
        ok.loss(torch.randn(8, 2, dtype=F64))
    with pytest.raises(ParameterError, match="num_steps"):
        ok.ddls((4,), num_steps=0)
