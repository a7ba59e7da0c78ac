"""The reference log Z of the sampler validation table, against 2-D quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from fokker.errors import ParameterError
from fokker.targets import CallableTarget, LogisticRegression
from fokker.tolerances import Z_SCORE
from fokker.validate.checks_samplers import laplace_smc_log_Z


def _small_logreg() -> LogisticRegression:
    g = torch.Generator().manual_seed(3)
    X = torch.cat([torch.ones(25, 1), torch.randn(25, 1, generator=g)], 1).double()
    y = (torch.rand(25, generator=g) < torch.sigmoid(X @ torch.tensor([0.5, 2.0]).double())).double()
    return LogisticRegression(X, y, prior_scale=1.0)


def test_laplace_smc_log_Z_matches_quadrature():
    """A skewed 2-D logistic-regression posterior: SMC from the Laplace approximation vs dblquad."""
    t = _small_logreg()

    def density(b, a):  # scipy's dblquad integrates f(y, x)
        return math.exp(float(t.log_prob(torch.tensor([[a, b]], dtype=torch.float64))[0]) + 30.0)

    z, err = integrate.dblquad(density, -8, 8, -8, 8, epsabs=1e-12, epsrel=1e-10)
    exact = math.log(z) - 30.0
    est, se = laplace_smc_log_Z(t, num_particles=1024, num_steps=50, seed=0)
    assert np.isfinite(se) and se > 0
    assert abs(est - exact) < Z_SCORE * se + 0.01, (est, se, exact)


def test_laplace_smc_log_Z_leaves_the_target_dtype_alone():
    t = _small_logreg().float()
    laplace_smc_log_Z(t, num_particles=64, num_steps=5, generator=torch.Generator().manual_seed(0))
    assert t.X.dtype == torch.float32


def test_laplace_smc_log_Z_rejects_a_target_without_a_laplace_approximation():
    """-x^4 has its mode at 0 with a zero Hessian: no Gaussian approximation exists."""
    flat = CallableTarget(lambda x: -(x**4).sum(-1), dim=1)
    with pytest.raises(ParameterError, match="positive-definite Hessian"):
        laplace_smc_log_Z(flat, num_particles=64, num_steps=5)
