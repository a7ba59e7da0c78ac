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
    good = check_marginal(vp, x0, 0.6, n_paths=4000, n_steps=100, generator=torch.Generator().manual_seed(0))
    assert good.passed and isinstance(good, CheckOutcome)

    class WrongVP(sde.VPSDE):  # closed form of a different beta_max than the simulated drift
        def _sigma2(self, t):
            return -torch.expm1(-1.3 * self._B(t))

    bad = check_marginal(WrongVP(), x0, 0.2, n_paths=4000, n_steps=100, generator=torch.Generator().manual_seed(0))
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
