"""The user-facing checkers pass on correct objects and fail on broken ones."""

from __future__ import annotations

import torch

from fokker import sde
from fokker.analytic import DiffusedGaussianMixture
from fokker.checks import CheckOutcome, check_fokker_planck, check_marginal, check_tweedie
from fokker.targets import GaussianMixture


def _oracle(obj) -> DiffusedGaussianMixture:
    loc = torch.tensor([[-1.0, 0.5], [1.5, -0.5]], dtype=torch.float64)
    return DiffusedGaussianMixture(GaussianMixture.isotropic(loc, 0.6), obj)


def test_check_marginal_detects_wrong_closed_form() -> None:
    vp = sde.VPSDE()
    x0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    good = check_marginal(vp, x0, 0.6, num_samples=4000, num_steps=100, generator=torch.Generator().manual_seed(0))
    assert good.passed and isinstance(good, CheckOutcome)

    class WrongVP(sde.VPSDE):  # closed form of a different beta_max than the simulated drift
        def _sigma2(self, t):
            return -torch.expm1(-1.3 * self._B(t))

    bad = check_marginal(WrongVP(), x0, 0.2, num_samples=4000, num_steps=100, generator=torch.Generator().manual_seed(0))
    assert not bad.passed
    assert "FAIL" in repr(bad) and "z-score" in repr(bad)


def test_check_fokker_planck_detects_wrong_density() -> None:
    vp = sde.VPSDE()
    oracle = _oracle(vp)
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64) * 0.8 + 0.1
    ok = check_fokker_planck(vp, oracle.log_prob, x, t)
    assert ok.passed and "PASS" in repr(ok)
    ve_oracle = _oracle(sde.VESDE(sigma_max=5.0))  # the density of another SDE
    assert not check_fokker_planck(vp, ve_oracle.log_prob, x, t).passed


def test_check_tweedie_detects_wrong_denoiser() -> None:
    vp = sde.VPSDE()
    oracle = _oracle(vp)
    x = torch.randn(7, 2, dtype=torch.float64)
    assert check_tweedie(oracle, x, 0.5)

    class Broken:
        def __init__(self, o):
            self.o, self.sde = o, o.sde

        def score(self, x, t):
            return self.o.score(x, t)

        def eps(self, x, t):
            return self.o.eps(x, t)

        def denoise(self, x, t):
            return self.o.denoise(x, t) + 1e-3

    res = check_tweedie(Broken(oracle), x, 0.5)
    assert not res.passed and res.details["denoiser"] > 1e-4


def test_check_fokker_planck_stationary_law_of_ou() -> None:
    """A time-independent density (the OU stationary law N(0, sigma^2/(2 theta))) is a valid input:
    d/dt log p = 0.  Before, autograd raised "appears to not have been used in the graph"."""
    ou = sde.OrnsteinUhlenbeck(theta=0.7, sigma=1.3)
    var = 1.3**2 / (2 * 0.7)
    x = torch.randn(6, 3, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64) * 0.9

    def stationary(x, t, v=var):
        return -0.5 * (x * x).sum(-1) / v - 1.5 * torch.log(torch.tensor(2 * torch.pi * v, dtype=x.dtype))

    assert check_fokker_planck(ou, stationary, x, t).passed
    # the stationary law of another rate is not stationary here: the residual sees it
    assert not check_fokker_planck(ou, lambda x, t: stationary(x, t, 1.05 * var), x, t).passed


def test_check_fokker_planck_rejects_each_wrong_ingredient() -> None:
    """Every term of the residual is exercised: wrong time dependence, wrong drift, wrong diffusion."""
    vp = sde.VPSDE()
    oracle = _oracle(vp)
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64) * 0.8 + 0.1
    assert check_fokker_planck(vp, oracle.log_prob, x, t).passed
    # density frozen in time (d/dt term wrong)
    assert not check_fokker_planck(vp, lambda x, tt: oracle.log_prob(x, torch.full_like(tt, 0.5)), x, t).passed
    # the same density under an SDE whose drift is wrong (sub-VP has the VP drift but another diffusion)
    assert not check_fokker_planck(sde.SubVPSDE(), oracle.log_prob, x, t).passed

    class FasterDrift(sde.VPSDE):
        def _f(self, t):
            return 1.01 * super()._f(t)

    assert not check_fokker_planck(FasterDrift(), oracle.log_prob, x, t).passed


def test_check_marginal_detects_wrong_mean() -> None:
    """The mean path of check_marginal is exercised on its own: only alpha(t) is wrong."""

    class WrongMean(sde.VPSDE):
        def _log_alpha(self, t):
            return 0.9 * super()._log_alpha(t)

    x0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    bad = check_marginal(WrongMean(), x0, 0.5, num_samples=4000, num_steps=100, generator=torch.Generator().manual_seed(0))
    assert not bad.passed and bad.details["max_z_mean"] > bad.tolerance


def test_check_tweedie_detects_wrong_noise_predictor() -> None:
    vp = sde.VPSDE()
    oracle = _oracle(vp)
    x = torch.randn(7, 2, dtype=torch.float64)

    class BrokenEps:
        def __init__(self, o):
            self.o, self.sde = o, o.sde

        def score(self, x, t):
            return self.o.score(x, t)

        def denoise(self, x, t):
            return self.o.denoise(x, t)

        def eps(self, x, t):
            return 1.001 * self.o.eps(x, t)

    res = check_tweedie(BrokenEps(oracle), x, 0.5)
    assert not res.passed and res.details["noise_predictor"] > res.tolerance
