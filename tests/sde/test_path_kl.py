"""Girsanov path KL (fokker.sde.kl_path) against the closed form for Ornstein-Uhlenbeck processes."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.errors import ParameterError, ShapeError
from fokker.sde import BrownianMotion, OrnsteinUhlenbeck, kl_path, time_grid
from fokker.tolerances import Z_SCORE


def ou_path_kl(a: float, b: float, sigma: float, m0: float, v0: float, T: float) -> float:
    """KL between dX = -a X dt + s dW and dX = -b X dt + s dW from N(m0, v0), per coordinate:
    (b - a)^2 / (2 s^2) int_0^T E_P[X_t^2] dt with E_P X_t^2 = m(t)^2 + v(t) under P."""
    e = (1 - math.exp(-2 * a * T)) / (2 * a)  # int_0^T e^{-2 a t} dt
    int_m2 = m0**2 * e
    int_v = v0 * e + sigma**2 / (2 * a) * (T - e)
    return (b - a) ** 2 / (2 * sigma**2) * (int_m2 + int_v)


def euler_chain_kl(a: float, b: float, sigma: float, m0: float, v0: float, ts: torch.Tensor) -> float:
    """The same KL between the two Euler-Maruyama chains on `ts` (exact, from the moment recursion)."""
    m, v, kl = m0, v0, 0.0
    for h in torch.diff(ts).tolist():
        kl += h * (b - a) ** 2 / (2 * sigma**2) * (m * m + v)
        m, v = (1 - a * h) * m, (1 - a * h) ** 2 * v + sigma**2 * h
    return kl


@pytest.mark.parametrize(
    "a,b,sigma,m0,v0,T",
    [(1.0, 2.0, 1.0, 0.0, 0.0, 1.0), (0.5, 0.2, 0.7, 1.5, 0.3, 2.0), (2.0, 3.5, 2.0, -1.0, 1.0, 0.5), (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)],
)
def test_ou_path_kl_matches_closed_form(a, b, sigma, m0, v0, T) -> None:
    n, d = 4000, 2
    g = torch.Generator().manual_seed(1)
    x0 = m0 + math.sqrt(v0) * torch.randn(n, d, generator=g, dtype=torch.float64)
    ts = time_grid(400, 0.0, T)
    res = kl_path(OrnsteinUhlenbeck(a, sigma, T=T), OrnsteinUhlenbeck(b, sigma, T=T), x0, ts, generator=g)
    exact = d * ou_path_kl(a, b, sigma, m0, v0, T)
    discrete = d * euler_chain_kl(a, b, sigma, m0, v0, ts)
    if a == b:
        assert res.kl == 0.0 and exact == 0.0
        return
    # the Euler chains' KL is within 1% of the continuous one on this grid ...
    assert abs(discrete - exact) <= 0.01 * exact
    # ... and the Monte-Carlo estimate is unbiased for it: within a few standard errors of both
    assert abs(res.kl - exact) <= 3 * res.stderr + abs(discrete - exact)
    assert abs(res.kl - discrete) <= Z_SCORE * res.stderr
    assert res.num_samples == n and res.per_path.shape == (n,)


def test_wrong_drift_is_detected() -> None:
    """A control: the estimate of KL(P||P') is far (many SE) from the closed form of another pair."""
    g = torch.Generator().manual_seed(2)
    ts = time_grid(200, 0.0, 1.0)
    res = kl_path(OrnsteinUhlenbeck(1.0, 1.0), OrnsteinUhlenbeck(1.3, 1.0), torch.zeros(3000, 1, dtype=torch.float64), ts, generator=g)
    assert abs(res.kl - ou_path_kl(1.0, 2.0, 1.0, 0.0, 0.0, 1.0)) > 10 * res.stderr


def test_bad_input() -> None:
    ts = time_grid(10, 0.0, 1.0)
    x0 = torch.zeros(8, 2, dtype=torch.float64)
    with pytest.raises(ParameterError, match="same diffusion"):
        kl_path(OrnsteinUhlenbeck(1.0, 1.0), OrnsteinUhlenbeck(1.0, 2.0), x0, ts)
    with pytest.raises(ShapeError, match="x0"):
        kl_path(OrnsteinUhlenbeck(), OrnsteinUhlenbeck(), torch.zeros(8, dtype=torch.float64), ts)
    with pytest.raises(ParameterError, match="increasing"):
        kl_path(OrnsteinUhlenbeck(), OrnsteinUhlenbeck(), x0, ts.flip(0))
    with pytest.raises(TypeError, match="torchsde"):
        kl_path(lambda x: x, OrnsteinUhlenbeck(), x0, ts)


def test_zero_diffusion_with_different_drift_is_infinite() -> None:
    class Frozen(BrownianMotion):  # dX = c dt with no noise, against dX = 0
        def g(self, t, y=None):
            return torch.zeros_like(y)

        def f(self, t, y=None):
            return torch.ones_like(y) if y is not None else super().f(t)

    class Still(Frozen):
        def f(self, t, y=None):
            return torch.zeros_like(y) if y is not None else super().f(t)

    res = kl_path(Frozen(), Still(), torch.zeros(4, 1, dtype=torch.float64), time_grid(5, 0.0, 1.0))
    assert res.kl == math.inf
