"""Guidance (classifier-free, classifier) and posterior sampling against exact conditionals."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.diffusion import (
    DiffusionModel,
    classifier_free_guidance,
    classifier_guidance,
    dps,
    posterior_score,
)
from fokker.sde import time_grid
from fokker.diffusion.samplers import euler_maruyama
from fokker.errors import ParameterError
from fokker.tolerances import Z_SCORE, assert_close

from _diffusion_oracle import IsoGMM


class CondOracleNet(torch.nn.Module):
    """eps-net of a GMM: label k -> component k alone, label K (null) -> the whole mixture."""

    def __init__(self, gmm: IsoGMM):
        super().__init__()
        self.gmm, self.num_classes, self.dim = gmm, gmm.mu.shape[0], gmm.mu.shape[1]
        self.seen: list[torch.Tensor] = []
        self.p = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def component_score(self, x, t, k):
        a, _, var = self.gmm._params(t)
        v = var[torch.arange(x.shape[0]), k][:, None]
        return -(x - a[:, None] * self.gmm.mu[k]) / v

    def forward(self, x, t, y=None):
        self.seen.append(y)
        s_all = self.gmm.score(x, t)
        if y is None:
            s = s_all
        else:
            s_k = self.component_score(x, t, y.clamp(max=self.num_classes - 1))
            s = torch.where((y == self.num_classes)[:, None], s_all, s_k)
        return -self.gmm.sde.sigma(t.double())[:, None] * s + 0 * self.p


def _model(gmm3, vpsde, **kw):
    return DiffusionModel(vpsde, CondOracleNet(gmm3), "eps", num_classes=3, **kw)


def test_cfg_scale_0_and_1(gmm3, vpsde):
    model = _model(gmm3, vpsde)
    x = gmm3.sample(20, 0.3)
    t = torch.full((20,), 0.3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    s_u = gmm3.score(x, t)
    s_c = model.net.component_score(x, t, y)
    assert_close(classifier_free_guidance(model, y, 0.0)(x, t), s_u, loose=True)
    assert_close(classifier_free_guidance(model, y, 1.0)(x, t), s_c, loose=True)
    assert_close(classifier_free_guidance(model, y, 2.5)(x, t), s_u + 2.5 * (s_c - s_u), loose=True)
    # sample(score_fn=...) uses the given score: CFG at scale 1 samples exactly like the conditional model
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    guided = model.sample((10,), sampler="ddim", num_steps=10, score_fn=classifier_free_guidance(model, y[:10], 1.0),
                          generator=g())
    assert torch.equal(guided, model.sample((10,), sampler="ddim", num_steps=10, y=y[:10], generator=g()))


def test_classifier_guidance_is_bayes(gmm3, vpsde):
    """With the exact noisy classifier p_t(k|x) (mixture responsibilities), guidance at scale 1 gives the
    exact score of component k."""
    net = CondOracleNet(gmm3)

    def log_prob_y(x, t, y):
        a, _, var = gmm3._params(t)
        diff = x[:, None, :] - a[:, None, None] * gmm3.mu[None]
        lp = -0.5 * (diff**2).sum(-1) / var - torch.log(var) + torch.log(gmm3.w)
        return torch.log_softmax(lp, -1).gather(1, y[:, None]).squeeze(1)

    x = gmm3.sample(16, 0.2)
    t = torch.full((16,), 0.2, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    guided = classifier_guidance(gmm3.score, log_prob_y, y, 1.0)(x, t)
    assert_close(guided, net.component_score(x, t, y), loose=True)


def test_label_dropout_and_bad_scale(gmm3, vpsde):
    model = _model(gmm3, vpsde, label_dropout=0.3)
    x = gmm3.sample(4000, 1e-3)
    model.loss((x, torch.zeros(4000, dtype=torch.long)))
    frac = float((model.net.seen[-1] == 3).double().mean())
    assert abs(frac - 0.3) < Z_SCORE * math.sqrt(0.3 * 0.7 / 4000)
    with pytest.raises(ParameterError, match="guidance scale"):
        classifier_free_guidance(model, torch.zeros(3, dtype=torch.long), -1.0)
    with pytest.raises(ParameterError, match="guidance scale"):
        classifier_guidance(gmm3.score, lambda x, t, y: x.sum(-1), torch.zeros(3), -0.5)
    with pytest.raises(ParameterError, match="num_classes"):
        DiffusionModel(vpsde, CondOracleNet(gmm3), "eps", label_dropout=0.1)


# ----------------------------------------------------------- inverse problems: Gaussian prior data
M = torch.tensor([0.5, -0.5, 1.0, 0.0], dtype=torch.float64)
A = lambda x: x[:, :2]  # noqa: E731  (orthonormal rows)
Y = torch.tensor([1.5, 0.3], dtype=torch.float64)


def _prior_score(sde):
    def score(x, t):
        c = sde.coefficients(t)
        a, s = c.alpha[:, None].to(x.dtype), c.sigma[:, None].to(x.dtype)
        return -(x - a * M) / (a**2 + s**2)  # data N(M, I)

    return score


def _exact_posterior(sigma_y):
    k = 1 / (1 + sigma_y**2)
    mean = torch.cat([M[:2] + k * (Y - M[:2]), M[2:]])
    var = torch.tensor([sigma_y**2 * k] * 2 + [1.0, 1.0], dtype=torch.float64)
    return mean, var


def test_pigdm_posterior_exact_for_gaussian(vpsde):
    """Data N(M, I), y = x[:2] + N(0, 0.5^2): the Gaussian posterior score is exact, so reverse-SDE samples
    match the exact posterior mean and variance (Z_SCORE standard errors)."""
    n, sy = 4000, 0.5
    score = posterior_score(_prior_score(vpsde), vpsde, Y, A, sy, method="pigdm")
    x = torch.randn(n, 4, dtype=torch.float64)
    out, _ = euler_maruyama(score, vpsde, x, time_grid(200, sde=vpsde))
    mean, var = _exact_posterior(sy)
    assert bool(((out.mean(0) - mean).abs() < Z_SCORE * (var / n).sqrt()).all()), out.mean(0)
    assert bool(((out.var(0) - var).abs() < Z_SCORE * var * math.sqrt(2 / n) + 0.01).all()), out.var(0)


def test_dps_lands_near_posterior_mean(vpsde):
    """Chung et al.'s DPS with a small noise level (sigma_y = 0.05) lands within Z_SCORE standard errors
    plus 0.01 of the exact posterior mean.  DPS is a heuristic: its step rule ignores sigma_y, so for a
    large sigma_y it lands near y instead (bias sigma_y^2/(1 + sigma_y^2) |y - m|)."""
    n, sy = 4000, 0.05
    x = torch.randn(n, 4, dtype=torch.float64)
    out, nfe = dps(_prior_score(vpsde), vpsde, x, time_grid(200, sde=vpsde), Y, A, zeta=0.3)
    mean, _ = _exact_posterior(sy)
    se = out.std(0) / math.sqrt(n)
    assert nfe == 200
    assert bool(((out.mean(0) - mean).abs() < Z_SCORE * se + 0.01).all()), out.mean(0)


def test_posterior_score_bad_args(vpsde):
    with pytest.raises(ParameterError, match="sigma_y"):
        posterior_score(_prior_score(vpsde), vpsde, Y, A, 0.0)
    with pytest.raises(ParameterError, match="method"):
        posterior_score(_prior_score(vpsde), vpsde, Y, A, 0.1, method="mcg")
    with pytest.raises(ParameterError, match="zeta"):
        dps(_prior_score(vpsde), vpsde, torch.zeros(2, 4, dtype=torch.float64), time_grid(3, sde=vpsde), Y, A, zeta=0.0)
