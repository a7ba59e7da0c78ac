"""Short training on a Gaussian target: the learned control approaches the closed-form optimum
and log Z is recovered up to Monte-Carlo error."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.samplers import DDS, DIS, PIS, GaussianOptimalControl, PISGradNet
from fokker.tolerances import Z_SCORE

from .conftest import LOG_Z, make_gaussian

CONFIGS = {
    "DDS": (DDS, dict(num_steps=12, T=8.0, beta=0.5, sigma=1.0)),
    "PIS": (PIS, dict(num_steps=12)),
    "DIS": (DIS, dict(num_steps=24)),
}


def control_error(sampler, opt, n=256) -> float:
    """sum_k E|f_theta - f*|^2 / sum_k E|f*|^2 over the grid, at points of the target path marginals."""
    target = sampler.target
    x = target.sample((n,))
    tab = sampler.tables_like(x)
    num = den = 0.0
    with torch.no_grad():
        for k in range(sampler.num_steps):
            t = tab["t_norm"][k]
            f = sampler.net(x, t, sampler.feature(k, x, target.score(x)))
            g = opt(x, t)
            num += float(((f - g) ** 2).sum(-1).mean())
            den += float((g**2).sum(-1).mean())
    return num / den


@pytest.mark.parametrize("kind,loss", [("DDS", "kl"), ("PIS", "kl"), ("DIS", "lv")])
def test_trained_control_approaches_optimum_and_log_z(kind, loss, device):
    cls, kw = CONFIGS[kind]
    target = make_gaussian(device, torch.float32)
    # DIS's default net starts at the interpolated score, already close to the optimum for a
    # Gaussian; start it from a zero score instead so that training has to find the optimum
    net = PISGradNet(2, 16, 2, feature_bias_init=0.0).to(device) if kind == "DIS" else None
    s = cls(target, loss=loss, width=16, net=net, **kw).to(device)
    opt = GaussianOptimalControl(s, target.mean, target.var)
    e0 = control_error(s, opt)
    before = s.log_Z(2000, eubo=False)
    s.fit(steps=100, batch_size=64, lr=5e-3, progress=False, seed=0)
    e1 = control_error(s, opt)
    assert e1 < e0 and e1 < 0.15, (e0, e1)
    res = s.log_Z(2000, eubo=False)
    assert res.ess > before.ess
    # exact up to MC error: the IS estimate agrees with log Z within a few standard errors
    _, lw = s.sample(2000)
    w = torch.exp(lw.double() - LOG_Z)
    assert abs(float(w.mean()) - 1.0) <= Z_SCORE * float(w.std()) / math.sqrt(2000)
    assert res.elbo - Z_SCORE * res.elbo_stderr <= LOG_Z
