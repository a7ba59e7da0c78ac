"""SurVAE surjections: likelihood contributions vs exact marginal likelihoods; dequantization bounds."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import (
    AffineTransform,
    Distribution,
    Exponential,
    HalfNormal,
    Independent,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    Uniform,
)

from fokker.errors import ParameterError, ShapeError
from fokker.flows.planar import Planar
from fokker.flows.surjections import (
    Abs,
    Max,
    Slice,
    Sort,
    SurjectiveFlow,
    UniformDequantization,
    VariationalDequantization,
)
from fokker.tolerances import Z_SCORE, assert_close

F64 = torch.float64


class _LogDensity(Distribution):
    """A distribution given by a log-density function and a sampler (test oracle helper)."""

    arg_constraints: dict = {}

    def __init__(self, dim: int, log_prob, sampler) -> None:
        super().__init__(event_shape=torch.Size([dim]), validate_args=False)
        self._lp, self._sampler = log_prob, sampler

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self._lp(value)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self._sampler(torch.Size(sample_shape))


def test_abs_on_a_sign_symmetric_density_is_exact(device: torch.device) -> None:
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=F64, device=device)
    flow = SurjectiveFlow(Independent(HalfNormal(sigma), 1), [Abs(3)])
    assert flow.exact
    x = 2 * torch.randn(20, 3, dtype=F64, device=device)
    assert_close(flow.log_prob(x), Independent(Normal(0.0, sigma), 1).log_prob(x))
    s = flow.sample((4000,))
    frac_pos = (s > 0).double().mean(0)
    assert bool(((frac_pos - 0.5).abs() <= Z_SCORE * 0.5 / 4000**0.5).all())


def test_abs_with_the_true_sign_posterior_is_exact_for_an_asymmetric_density() -> None:
    """p(x) = 0.3 N(2, 1) + 0.7 N(-1, 0.5^2); z = |x| has p(z) + p(-z), p(s=+1|z) = p(z)/(p(z)+p(-z))."""
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.tensor([0.3, 0.7], dtype=F64)),
        Normal(torch.tensor([2.0, -1.0], dtype=F64), torch.tensor([1.0, 0.5], dtype=F64)),
    )
    base = _LogDensity(
        1,
        lambda z: torch.logaddexp(mix.log_prob(z[..., 0]), mix.log_prob(-z[..., 0])),
        lambda shape: mix.sample(shape).abs().unsqueeze(-1),
    )
    logits = lambda z: mix.log_prob(z) - mix.log_prob(-z)  # noqa: E731
    flow = SurjectiveFlow(base, [Abs(1, logits=logits)])
    x = torch.linspace(-4, 4, 41, dtype=F64)[:, None]
    assert_close(flow.log_prob(x), mix.log_prob(x[..., 0]))
    # sampling direction reproduces the sign probabilities
    s = flow.sample((20_000,))[..., 0]
    phi = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))  # noqa: E731
    p_pos = 0.3 * (1 - phi(-2.0)) + 0.7 * (1 - phi(2.0))
    assert abs(float((s > 0).double().mean()) - p_pos) <= Z_SCORE * (p_pos * (1 - p_pos) / 20_000) ** 0.5


def test_sort_on_an_exchangeable_density_is_exact() -> None:
    """Equicorrelated Gaussian (exchangeable, not independent): p(sorted z) = D! p(z) on the cone."""
    d, rho = 4, 0.4
    cov = (1 - rho) * torch.eye(d, dtype=F64) + rho * torch.ones(d, d, dtype=F64)
    mvn = MultivariateNormal(torch.zeros(d, dtype=F64), cov)
    base = _LogDensity(d, lambda z: mvn.log_prob(z) + math.lgamma(d + 1), lambda s: mvn.sample(s).sort(-1).values)
    flow = SurjectiveFlow(base, [Sort(d)])
    x = mvn.sample((25,))
    assert_close(flow.log_prob(x), mvn.log_prob(x))
    z = torch.randn(6, d, dtype=F64).sort(-1).values
    xs = Sort(d).inverse(z)
    assert_close(xs.sort(-1).values, z)


def test_max_with_exponential_gaps_is_exact() -> None:
    """x_i iid -Exp(lam): max ~ -Exp(D lam) and x_j | max, k = max - Exp(lam)."""
    d = 3
    layer = Max(d, rate=1.7).to(F64)
    lam = float(layer.rate.detach())  # the float32-initialised rate, exactly as the layer uses it
    base = Independent(
        TransformedDistribution(Exponential(torch.tensor([d * lam], dtype=F64)), [AffineTransform(0.0, -1.0)]), 1
    )
    flow = SurjectiveFlow(base, [layer])
    x = -Exponential(torch.tensor(lam, dtype=F64)).sample((30, d))
    expected = (math.log(lam) + lam * x).sum(-1)
    assert_close(flow.log_prob(x), expected)
    z = -Exponential(torch.tensor(d * lam, dtype=F64)).sample((5000, 1))
    xs = layer.inverse(z)
    assert_close(xs.max(-1, keepdim=True).values, z)
    gaps = (z - xs)[(z - xs) > 0]
    assert abs(float(gaps.detach().mean()) - 1 / lam) <= Z_SCORE * (1 / lam) / gaps.numel() ** 0.5


def test_slice_with_the_true_conditional_is_exact() -> None:
    cov = torch.tensor([[1.0, 0.6, 0.2], [0.6, 2.0, 0.3], [0.2, 0.3, 1.5]], dtype=F64)
    mvn = MultivariateNormal(torch.zeros(3, dtype=F64), cov)
    # x = (x1 | x23): p(x23 | x1) Gaussian with mean S21 S11^-1 x1 and cov S22 - S21 S11^-1 S12
    s11, s21, s22 = cov[:1, :1], cov[1:, :1], cov[1:, 1:]
    gain = s21 @ torch.linalg.inv(s11)
    cond_cov = s22 - gain @ s21.T
    decoder = lambda z: MultivariateNormal(z @ gain.T, cond_cov)  # noqa: E731
    flow = SurjectiveFlow(Independent(Normal(torch.zeros(1, dtype=F64), s11[0].sqrt()), 1), [Slice(3, 1, decoder)])
    x = mvn.sample((20,))
    assert_close(flow.log_prob(x), mvn.log_prob(x))
    assert flow.sample((7,)).shape == (7, 3)


def test_surjection_composes_with_a_bijection() -> None:
    """Abs then a planar layer (noise -> data order): log p = log p_base(|T^-1 x|) - D log 2 + log|det T^-1|."""
    torch.manual_seed(0)
    planar = Planar(2).to(F64)
    base = Independent(HalfNormal(torch.ones(2, dtype=F64)), 1)
    flow = SurjectiveFlow(base, [Abs(2), planar])
    x = torch.randn(9, 2, dtype=F64)
    u, ladj_inv = planar.inverse_and_ladj(x)
    expected = base.log_prob(u.abs()) - 2 * math.log(2) + ladj_inv
    assert_close(flow.log_prob(x), expected)
    assert flow.loss(x).shape == ()


def test_uniform_dequantization_elbo_is_jensen_bound_of_the_geometric_pmf() -> None:
    """p(z) = Exp(lam) on z >= 0 gives P(x) = e^{-lam x}(1 - e^{-lam}); E_u log p(x+u) = log lam - lam (x + 1/2)."""
    lam = 0.8
    base = Independent(Exponential(torch.tensor([lam], dtype=F64)), 1)
    flow = SurjectiveFlow(base, [UniformDequantization()])
    assert not flow.exact
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    n = 20_000
    elbo = flow.log_prob(x.repeat_interleave(n, 0)).reshape(3, n)
    closed = math.log(lam) - lam * (x[:, 0] + 0.5)
    log_pmf = -lam * x[:, 0] + math.log(1 - math.exp(-lam))
    assert bool(((elbo.mean(1) - closed).abs() <= Z_SCORE * elbo.std(1) / n**0.5).all())
    assert bool((closed < log_pmf).all())
    z = x + torch.rand(3, 1, dtype=F64)
    assert_close(UniformDequantization().inverse(z), x)


def test_variational_dequantization_with_the_exact_posterior_is_tight() -> None:
    """q(u|x) = p(x + u)/P(x), a truncated exponential on [0, 1): every ELBO draw equals log P(x)."""
    lam = 0.8
    base = Independent(Exponential(torch.tensor([lam], dtype=F64)), 1)
    c = 1 - math.exp(-lam)
    # inverse-CDF sampler u = -log(1 - c v)/lam, v ~ U(0, 1), written as torch transforms
    trunc = TransformedDistribution(
        Uniform(torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64)),
        [AffineTransform(1.0, -c), torch.distributions.ExpTransform().inv, AffineTransform(0.0, -1.0 / lam)],
    )
    posterior = lambda x: Independent(trunc.expand(x.shape[:-1] + (1,)), 1)  # noqa: E731
    flow = SurjectiveFlow(base, [VariationalDequantization(1, posterior=posterior)])
    x = torch.tensor([[0.0], [2.0], [5.0]], dtype=F64)
    elbo = flow.log_prob(x.repeat_interleave(100, 0)).reshape(3, 100)
    log_pmf = -lam * x + math.log(c)
    assert_close(elbo, log_pmf.expand(3, 100))


def test_default_variational_dequantization_contribution_and_gradients() -> None:
    torch.manual_seed(0)
    layer = VariationalDequantization(2).to(F64)
    x = torch.randint(0, 5, (64, 2)).to(F64)
    z, v = layer(x)
    u = z - x
    assert bool(((u > 0) & (u < 1)).all())
    torch.manual_seed(1)
    z1, v1 = layer(x)
    torch.manual_seed(1)
    q = layer.posterior(x)
    u1 = q.rsample()
    assert_close(v1, -q.log_prob(u1))
    assert_close(layer.inverse(z), x)
    v.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_bad_arguments_raise() -> None:
    with pytest.raises(ParameterError, match="keep must be an integer < features=3"):
        Slice(3, 3)
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 3\)"):
        Sort(3)(torch.zeros(2, 2))
    with pytest.raises(ShapeError, match=r"z must have shape \(\.\.\., 1\)"):
        Max(3).inverse(torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"layers\[0\] must be a torch Transform or a Surjection"):
        SurjectiveFlow(Normal(0.0, 1.0), [lambda x: x])


@given(d=st.integers(2, 5), b1=st.integers(1, 3), b2=st.integers(1, 3), seed=st.integers(0, 1000))
@settings(max_examples=10)
def test_inverse_is_a_right_inverse_with_batch_dims(d: int, b1: int, b2: int, seed: int) -> None:
    """For every inference surjection, forward(inverse(z)) == z, and v has the batch shape."""
    torch.manual_seed(seed)
    layers = [(Abs(d), (b1, b2, d), True), (Sort(d), (b1, b2, d), False), (Max(d).to(F64), (b1, b2, 1), False),
              (Slice(d, d - 1).to(F64), (b1, b2, d - 1), False)]
    for layer, zshape, positive in layers:
        z = torch.randn(zshape, dtype=F64)
        z = z.abs() if positive else (z.sort(-1).values if isinstance(layer, Sort) else z)
        x = layer.inverse(z)
        z2, v = layer(x)
        assert_close(z2, z)
        assert v.shape == (b1, b2)


def test_slice_on_top_of_a_trainable_flow_base() -> None:
    from fokker.flows import planar_flow
    from fokker.train import fit

    torch.manual_seed(0)
    base = planar_flow(1, 2)
    layer = Slice(2, 1)
    flow = SurjectiveFlow(base, [layer])
    data = torch.randn(256, 2) @ torch.tensor([[1.0, 0.8], [0.0, 0.6]])
    x = data[:5]
    expected = base.log_prob(x[:, :1]) + layer.decoder(x[:, :1]).log_prob(x[:, 1:])
    assert_close(flow.log_prob(x), expected)
    before = float(flow.loss(data).detach())
    fit(flow, data, steps=40, batch_size=128, lr=2e-2, progress=False)
    assert float(flow.loss(data).detach()) < before
    assert flow.sample((3,)).shape == (3, 2)


def test_augment_elbo_is_tight_with_the_true_conditional_and_a_bound_otherwise() -> None:
    """Base p(x, e) Gaussian: with q(e|x) = p(e|x) every ELBO draw equals log p(x); otherwise E[ELBO] < log p(x)."""
    from fokker.flows.surjections import Augment

    cov = torch.tensor([[1.5, 0.7], [0.7, 1.0]], dtype=F64)
    joint = MultivariateNormal(torch.zeros(2, dtype=F64), cov)
    marginal = Normal(torch.tensor(0.0, dtype=F64), cov[0, 0].sqrt())
    gain, cond_var = cov[1, 0] / cov[0, 0], cov[1, 1] - cov[1, 0] ** 2 / cov[0, 0]
    exact_q = lambda x: Independent(Normal(gain * x, cond_var.sqrt()), 1)  # noqa: E731
    x = torch.linspace(-3, 3, 7, dtype=F64)[:, None]
    tight = SurjectiveFlow(joint, [Augment(1, 1, encoder=exact_q)])
    assert not tight.exact
    elbo = tight.log_prob(x.repeat_interleave(50, 0)).reshape(7, 50)
    assert_close(elbo, marginal.log_prob(x).expand(7, 50))
    loose = SurjectiveFlow(joint, [Augment(1, 1, encoder=lambda x: Independent(Normal(0 * x, 1.0), 1))])
    n = 20_000
    elbo = loose.log_prob(x.repeat_interleave(n, 0)).reshape(7, n).detach()
    gap = marginal.log_prob(x[:, 0]) - elbo.mean(1)
    assert bool((gap > Z_SCORE * elbo.std(1) / n**0.5).all())
    assert tight.sample((4,)).shape == (4, 1)
