"""CLD diffusion models end to end (Dockhorn et al. 2022) against the exact phase-space oracle."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.analytic import DiffusedGaussianMixture
from fokker.diffusion import DiffusionModel
from fokker.diffusion.cld import CLD_SAMPLERS, sscs
from fokker.errors import ParameterError, ShapeError
from fokker.sde import CriticallyDampedLangevin, VPSDE
from fokker.targets import GaussianMixture
from fokker.tolerances import Z_SCORE, assert_close

from _diffusion_oracle import energy_distance

F64 = torch.float64


def _mixture() -> GaussianMixture:
    return GaussianMixture.isotropic(torch.tensor([[-2.0, 0.0], [2.0, 0.5]], dtype=F64), 0.3)


def _vv(cld: CriticallyDampedLangevin, t: torch.Tensor) -> torch.Tensor:
    """l_vv(t) by an independent route: the Cholesky factor of the 2x2 covariance from torch.linalg."""
    sxx, sxv, svv = cld.cov(t)
    cov = torch.stack([torch.stack([sxx, sxv], -1), torch.stack([sxv, svv], -1)], -2)
    return torch.linalg.cholesky(cov)[..., 1, 1]


class ExactEpsV(torch.nn.Module):
    """The exact velocity-noise predictor E[eps_v | z] of the oracle (a 'network' with one dummy parameter)."""

    dim = 4

    def __init__(self, oracle: DiffusedGaussianMixture) -> None:
        super().__init__()
        self.oracle = oracle
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.oracle.eps(z, t)[..., 2:] + 0 * self.dummy


@pytest.fixture(scope="module")
def cld_model():
    cld = CriticallyDampedLangevin()
    oracle = DiffusedGaussianMixture(_mixture(), cld)
    return cld, oracle, DiffusionModel(cld, ExactEpsV(oracle))


def test_velocity_score_from_eps_v_is_the_oracle_score(cld_model) -> None:
    """s_v = -E[eps_v | z] / l_vv: the model's score with the exact eps_v is the oracle's velocity score."""
    cld, oracle, model = cld_model
    t = torch.rand(32, dtype=F64, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    z = oracle.sample((32,), t, generator=torch.Generator().manual_seed(1))
    expected = oracle.score(z, t)[..., 2:]
    assert_close(model.score(z, t), expected, scale=float(expected.abs().max()))
    assert_close(-oracle.eps(z, t)[..., 2:] / _vv(cld, t)[:, None], expected, scale=float(expected.abs().max()))


def test_hsm_loss_is_the_eps_v_regression(cld_model) -> None:
    """The loss replays as mean ||eps_v_hat(z_t, t) - eps_v||^2 with z_t = mean_t(x0) + L_t eps."""
    cld, oracle, model = cld_model
    x0 = _mixture().loc[[0, 1, 0, 1]].repeat(16, 1)
    torch.manual_seed(3)
    loss = model.loss(x0)
    torch.manual_seed(3)
    t = model.sample_t(64, dtype=F64)
    eps = torch.randn(64, 4, dtype=F64)
    dist = cld.marginal(x0, t)
    L = torch.linalg.cholesky(torch.stack([torch.stack([dist.sxx, dist.sxv], -1), torch.stack([dist.sxv, dist.svv], -1)], -2))
    ex, ev = eps[:, :2], eps[:, 2:]
    z = dist.loc + torch.cat([L[..., 0, 0] * ex, L[..., 1, 0] * ex + L[..., 1, 1] * ev], -1)
    assert_close(loss, ((oracle.eps(z, t)[..., 2:] - ev) ** 2).mean())


def test_sscs_keeps_the_equilibrium_exactly() -> None:
    """With the equilibrium score s_v = -v/M the score step vanishes and SSCS is the exact linear flow, which
    keeps N(0, I) x N(0, M I): the covariance after 10 steps matches it within Monte-Carlo error."""
    cld = CriticallyDampedLangevin()
    n = 50_000
    g = torch.Generator().manual_seed(4)
    z = torch.randn(n, 2, dtype=F64, generator=g) * torch.tensor([1.0, math.sqrt(cld.M)], dtype=F64)
    out, nfe = sscs(lambda z, t: -z[:, 1:] / cld.M, cld, z, torch.linspace(1.0, 0.0, 11, dtype=F64), generator=g)
    assert nfe == 10
    cov = torch.cov(out.T)
    target = torch.diag(torch.tensor([1.0, cld.M], dtype=F64))
    se = torch.sqrt((target.diag()[:, None] * target.diag()[None, :] + target**2) / n)
    assert bool(((cov - target).abs() <= Z_SCORE * se).all()), cov


@pytest.mark.parametrize("sampler,num_steps", [("sscs", 60), ("euler_maruyama", 200)])
def test_cld_samplers_reach_the_data(cld_model, sampler, num_steps) -> None:
    """DiffusionModel(CLD).sample with the exact score: energy distance to exact data samples within the
    estimator's noise; a score scaled by 0.5 is rejected by the same test."""
    _, _, model = cld_model
    n = 1000
    data = DiffusedGaussianMixture(_mixture(), VPSDE())
    g = torch.Generator().manual_seed(5)
    ref, ref2 = data.sample((n,), 0.0, generator=g), data.sample((n,), 0.0, generator=g)
    floor = abs(float(energy_distance(ref2, ref)))
    x = model.sample((n,), sampler=sampler, num_steps=num_steps, generator=g, dtype=F64)
    assert x.shape == (n, 2)
    assert float(energy_distance(x, ref)) < 0.005 + 3 * floor
    weak = model.sample((n,), sampler=sampler, num_steps=num_steps, generator=g, dtype=F64,
                        score_fn=lambda z, t: 0.5 * model.score_fn()(z, t))
    assert float(energy_distance(weak, ref)) > 0.005 + 3 * floor


def test_cld_likelihood_bound(cld_model) -> None:
    """log p(x, v0) - log q(v0) averages to a lower bound of the exact log p(x): below it (ODE tolerance and
    Z_SCORE standard errors) and within 1 nat of it at the modes."""
    _, _, model = cld_model
    x = torch.tensor([[-2.0, 0.0], [2.0, 0.5]], dtype=F64).repeat_interleave(16, 0)
    est = model.log_prob(x, rtol=1e-5, atol=1e-5, generator=torch.Generator().manual_seed(6)).reshape(2, 16)
    exact = DiffusedGaussianMixture(_mixture(), VPSDE()).log_prob(x[::16], 0.0)
    mean, se = est.mean(1), est.std(1) / math.sqrt(16)
    assert bool((mean <= exact + Z_SCORE * se + 1e-3).all())
    assert bool((mean >= exact - 1.0).all())


class ZeroNet(torch.nn.Module):
    """A 'network' that predicts no residual: the mixed model is then its Gaussian part alone."""

    dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0 * z + self.dummy


@pytest.mark.parametrize("sigma_data", [0.5, 1.7])
def test_mixed_score_gaussian_part_is_the_gaussian_oracle(sigma_data: float) -> None:
    """parameterization="mixed" with a zero residual is the exact velocity score of N(0, sigma_data^2 I) data
    (the diffused-Gaussian oracle, which conditions the full 2d-dimensional Gaussian), from t = 0 to T."""
    cld = CriticallyDampedLangevin()
    gauss = DiffusedGaussianMixture(GaussianMixture.isotropic(torch.zeros(1, 3, dtype=F64), sigma_data), cld)
    model = DiffusionModel(cld, ZeroNet(), "mixed", sigma_data=sigma_data, t_min=0.0)
    gen = torch.Generator().manual_seed(3)
    t = torch.cat([torch.tensor([0.0, 1e-4, 1.0], dtype=F64), torch.rand(29, dtype=F64, generator=gen)])
    z = gauss.sample((32,), t, generator=gen)
    expected = gauss.score(z, t)[..., 3:]
    assert_close(model.score(z, t), expected, scale=float(expected.abs().max()))
    # and a data set that is not Gaussian keeps its non-Gaussian part for the network: the residual is not zero
    mixture = DiffusedGaussianMixture(GaussianMixture.isotropic(torch.tensor([[-2.0, 0, 0], [2.0, 0, 0]], dtype=F64),
                                                                0.3), cld)
    zm = mixture.sample((32,), t, generator=gen)
    assert float((model.score(zm, t) - mixture.score(zm, t)[..., 3:]).abs().max()) > 0.1


def test_cld_model_arguments(cld_model) -> None:
    cld, oracle, model = cld_model
    assert model.event_shape == (2,) and set(CLD_SAMPLERS) == {"sscs", "euler_maruyama"}
    with pytest.raises(ParameterError, match="eps"):
        DiffusionModel(cld, ExactEpsV(oracle), "x0")
    with pytest.raises(ParameterError, match="parameterization"):
        DiffusionModel(VPSDE(), ExactEpsV(oracle), "mixed")  # a CLD-only parameterization
    with pytest.raises(ParameterError, match="linear SDE"):
        model.elbo(torch.zeros(2, 2, dtype=F64))
    with pytest.raises(ParameterError, match="CLD"):
        model.sample((4,), sampler="heun", num_steps=4)
    with pytest.raises(ShapeError, match="z must have shape"):
        model.score(torch.zeros(3, 3, dtype=F64), 0.5)
