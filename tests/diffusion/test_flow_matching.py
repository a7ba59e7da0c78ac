"""Flow matching: OT pairing vs brute force, path velocities vs autograd, the exact Gaussian velocity field."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fokker.diffusion import FlowMatching, ot_pairing
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import Z_SCORE


def test_ot_pairing_is_optimal():
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    perm = ot_pairing(x0, x1)
    cost = lambda p: float(((x0[list(p)] - x1) ** 2).sum())  # noqa: E731
    best = min(cost(p) for p in itertools.permutations(range(6)))
    assert cost(perm.tolist()) == pytest.approx(best, rel=1e-6)
    assert sorted(perm.tolist()) == list(range(6))


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_path_velocity_is_time_derivative(path):
    fm = FlowMatching(torch.nn.Identity(), path=path, event_shape=(3,))
    x0, x1 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64) * 0.9 + 0.05
    _, u = fm.interpolate(x0, x1, t)
    tg = t.clone().requires_grad_(True)
    xt = fm.interpolate(x0, x1, tg)[0]
    # x_t[i] depends on t[i] only: the gradient of a column sum is the per-sample derivative
    dxdt = torch.stack([torch.autograd.grad(xt[:, j].sum(), tg, retain_graph=True)[0] for j in range(3)], -1)
    torch.testing.assert_close(u, dxdt, rtol=1e-8, atol=1e-8)
    if path == "linear":
        xt0, _ = fm.interpolate(x0, x1, torch.zeros(5, dtype=torch.float64))
        torch.testing.assert_close(xt0, x0)


class GaussVelocity(torch.nn.Module):
    """Marginal velocity of the linear path for data N(m, s^2 I): x_t ~ N(t m, ((1-t)^2 + t^2 s^2) I),
    v = m + (d/dt log std_t) (x - t m)."""

    def __init__(self, m, s, shift=0.0):
        super().__init__()
        self.m, self.s, self.shift, self.dim = m, s, shift, m.shape[-1]
        self.p = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, t):
        t = t[:, None].to(x.dtype)
        var = (1 - t) ** 2 + t**2 * self.s**2
        dlog = (-(1 - t) + t * self.s**2) / var
        return self.m + dlog * (x - t * self.m) + self.shift + 0 * self.p


def test_exact_velocity_samples_and_log_prob():
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    fm = FlowMatching(GaussVelocity(m, s))
    out, nfe = fm.sample((4000,), num_steps=40, return_nfe=True, dtype=torch.float64)
    assert nfe == 80
    n = out.shape[0]
    assert bool(((out.mean(0) - m).abs() < Z_SCORE * s / math.sqrt(n)).all())
    assert bool(((out.var(0) - s**2).abs() < Z_SCORE * s**2 * math.sqrt(2 / n)).all())
    x = m + s * torch.randn(8, 2, dtype=torch.float64)
    exact = (-0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)
    lp = fm.log_prob(x, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(lp, exact, rtol=1e-5, atol=1e-5)
    assert fm.last_nfe > 0
    x_ad, _ = fm.integrate(torch.randn(5, 2, dtype=torch.float64), 0.0, 1.0, None)  # adaptive path
    assert x_ad.shape == (5, 2)


def test_cfm_loss_minimized_by_marginal_velocity():
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    data = m + s * torch.randn(20_000, 2, dtype=torch.float64)
    losses = []
    for shift in (0.0, 0.1):
        torch.manual_seed(3)
        losses.append(float(FlowMatching(GaussVelocity(m, s, shift)).loss(data).detach()))
    assert losses[0] < losses[1]
    torch.manual_seed(3)
    ot = FlowMatching(GaussVelocity(m, s), coupling="ot").loss(data[:256])
    assert bool(torch.isfinite(ot))


def test_bad_arguments():
    with pytest.raises(ParameterError, match="path"):
        FlowMatching(torch.nn.Identity(), path="cosine")
    with pytest.raises(ParameterError, match="coupling"):
        FlowMatching(torch.nn.Identity(), coupling="sinkhorn")
    fm = FlowMatching(lambda x, t: x[:, :1], event_shape=(2,))  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="net output"):
        fm.loss(torch.randn(4, 2))
