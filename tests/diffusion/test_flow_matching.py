"""Flow matching: OT pairing vs brute force, path velocities vs autograd, the exact Gaussian velocity field."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fokker.diffusion import FlowMatching, ot_pairing
from fokker.diffusion import ResidualTimeMLP
from fokker.errors import DeviceDtypeError, ParameterError, ShapeError
from fokker.tolerances import Z_SCORE, assert_close


def test_ot_pairing_is_optimal():
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    perm = ot_pairing(x0, x1)
    cost = lambda p: ((x0[list(p)] - x1) ** 2).sum()  # noqa: E731
    best = min((cost(p) for p in itertools.permutations(range(6))), key=float)
    assert_close(cost(perm.tolist()), best)
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
    assert_close(u, dxdt)
    if path == "linear":
        xt0, _ = fm.interpolate(x0, x1, torch.zeros(5, dtype=torch.float64))
        assert_close(xt0, x0)


class GaussVelocity(torch.nn.Module):
    """Marginal velocity of the linear path for data N(m, s^2 I): x_t ~ N(t m, ((1-t)^2 + t^2 s^2) I),
    v = m + (d/dt log std_t) (x - t m)."""

    def __init__(self, m, s, shift=0.0):
        super().__init__()
        self.m, self.s, self.shift, self.dim = m, s, shift, m.shape[-1]
        self.p = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.calls = 0

    def forward(self, x, t):
        self.calls += 1
        t = t[:, None].to(x.dtype)
        var = (1 - t) ** 2 + t**2 * self.s**2
        dlog = (-(1 - t) + t * self.s**2) / var
        return self.m + dlog * (x - t * self.m) + self.shift + 0 * self.p


def test_exact_velocity_samples_and_log_prob():
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    net = GaussVelocity(m, s)
    fm = FlowMatching(net)
    out, nfe = fm.sample((4000,), num_steps=40, return_nfe=True, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float64  # the network's
    assert nfe == net.calls == 80  # Heun: two velocity evaluations per step
    n = out.shape[0]
    assert bool(((out.mean(0) - m).abs() < Z_SCORE * s / math.sqrt(n)).all())
    assert bool(((out.var(0) - s**2).abs() < Z_SCORE * s**2 * math.sqrt(2 / n)).all())
    x = m + s * torch.randn(8, 2, dtype=torch.float64)
    exact = (-0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)
    net.calls = 0
    lp = fm.log_prob(x, rtol=1e-8, atol=1e-8)
    assert_close(lp, exact, loose=True)
    assert fm.last_nfe == net.calls
    # the exact flow map of the linear path for N(m, s^2 I) data: x_1 = m + s x_0
    x0 = torch.randn(5, 2, dtype=torch.float64)
    x_ad, _ = fm.integrate(x0, 0.0, 1.0, None, rtol=1e-10, atol=1e-10)  # adaptive path
    assert_close(x_ad, m + s * x0, loose=True)


def test_cfm_loss_minimized_by_marginal_velocity():
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    data = m + s * torch.randn(20_000, 2, dtype=torch.float64)
    losses = []
    for shift in (0.0, 0.1):
        torch.manual_seed(3)
        losses.append(float(FlowMatching(GaussVelocity(m, s, shift)).loss(data).detach()))
    assert losses[0] < losses[1]


def test_ot_coupling_loss_pairs_noise_by_the_exact_assignment():
    """coupling="ot": the loss is the CFM loss of the noise re-paired by the exact assignment, recomputed
    here from the same draws (noise, then times) and the brute-force velocity of the linear path."""
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    x1 = m + s * torch.randn(64, 2, dtype=torch.float64)
    net = GaussVelocity(m, s)
    torch.manual_seed(3)
    loss = FlowMatching(net, coupling="ot").loss(x1)
    torch.manual_seed(3)
    x0 = torch.randn_like(x1)
    x0 = x0[ot_pairing(x0, x1)]
    t = torch.rand(64, dtype=torch.float64)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    expected = ((net(xt, t) - (x1 - x0)) ** 2).sum(-1).mean()
    assert_close(loss, expected)
    # the pairing lowers the transport cost of the batch below the independent pairing's
    torch.manual_seed(3)
    noise = torch.randn_like(x1)
    assert float(((noise[ot_pairing(noise, x1)] - x1) ** 2).sum()) < float(((noise - x1) ** 2).sum())


def test_bad_arguments():
    with pytest.raises(ParameterError, match="path"):
        FlowMatching(torch.nn.Identity(), path="cosine")
    with pytest.raises(ParameterError, match="coupling"):
        FlowMatching(torch.nn.Identity(), coupling="sinkhorn")
    fm = FlowMatching(lambda x, t: x[:, :1], event_shape=(2,))  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="net output"):
        fm.loss(torch.randn(4, 2))
    with pytest.raises(ParameterError, match=r"net must be a torch\.nn\.Module \(or a callable\).*got str"):
        FlowMatching("mlp")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"sde must be a linear SDE satisfying fokker\.sde\.Schedule"):
        FlowMatching(torch.nn.Identity(), path="vp", sde=object())  # type: ignore[arg-type]


def test_data_of_another_dtype_than_the_network_raises():
    """float64 data and a float32 network: DeviceDtypeError naming both (before: RuntimeError in nn.Linear)."""
    fm = FlowMatching(ResidualTimeMLP(2, hidden=16, depth=1))
    x = torch.randn(8, 2, dtype=torch.float64)
    with pytest.raises(DeviceDtypeError, match=r"x1 has dtype torch\.float64 but the network of the FlowMatching model has dtype torch\.float32"):
        fm.loss(x)
    with pytest.raises(DeviceDtypeError, match="x has dtype torch.float64"):
        fm.log_prob(x)
    with pytest.raises(DeviceDtypeError, match=r"dtype=torch\.float64 differs from the network's dtype torch\.float32"):
        fm.sample((4,), num_steps=2, dtype=torch.float64)


def test_sample_generator_reproducible():
    fm = FlowMatching(GaussVelocity(torch.zeros(2, dtype=torch.float64), 0.5))
    g = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    state = torch.get_rng_state()
    a = fm.sample((8,), num_steps=3, generator=g(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, fm.sample((8,), num_steps=3, generator=g(0)))
    assert not torch.equal(a, fm.sample((8,), num_steps=3, generator=g(1)))
