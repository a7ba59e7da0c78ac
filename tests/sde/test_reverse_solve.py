"""Reverse SDE / PF-ODE with the exact GMM score reproduce the data; solve vs torchsde/torchdiffeq."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq
import torchsde

from fokker import sde
from fokker.analytic import DiffusedGaussianMixture
from fokker.errors import DomainError, ParameterError, ShapeError
from fokker.targets import GaussianMixture
from fokker.tolerances import Z_SCORE, tolerance


def _gmm(device: torch.device) -> GaussianMixture:
    loc = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=torch.float64, device=device)
    L = torch.tensor(
        [[[0.6, 0.0], [0.2, 0.5]], [[0.4, 0.0], [-0.1, 0.7]], [[0.5, 0.0], [0.0, 0.3]]], dtype=torch.float64, device=device
    )
    return GaussianMixture(loc, L, torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64, device=device))


def _moment_z(x: torch.Tensor, gm: GaussianMixture) -> float:
    """Largest z-score of the sample mean and second moments vs the exact GMM moments.

    SE of each moment estimated from the sample (n = len(x)); z = |est - exact| / SE.
    """
    n = x.shape[0]
    feats = torch.cat([x, x[:, :1] ** 2, x[:, 1:] ** 2, x[:, :1] * x[:, 1:]], -1)
    mean = gm.mean()
    cov = gm.covariance()
    second = cov + mean[:, None] * mean[None, :]
    exact = torch.stack([mean[0], mean[1], second[0, 0], second[1, 1], second[0, 1]])
    se = feats.std(0) / math.sqrt(n)
    return float(((feats.mean(0) - exact).abs() / se).max())


@pytest.mark.parametrize("kind", ["reverse_em", "pf_heun"])
def test_reverse_and_pf_ode_reproduce_gmm(kind: str, device: torch.device) -> None:
    """From exact p_T samples, reverse EM (500 steps) / PF-ODE Heun (100 steps) with the exact score
    reach the GMM at t = 0: mean and second moments within Z_SCORE standard errors (n = 6000).

    Discretization bias, measured once with n = 200000 paths: largest moment z-score 0.94
    (EM, 500 steps; 3.5 at 125 steps) and 1.7 (Heun, 100 steps), i.e. at most ~0.3 SE at
    n = 6000 -- small next to the 4 SE tolerance, so the test has power against a wrong
    score or sign error (which move the moments by many SE)."""
    gm = _gmm(device)
    vp = sde.VPSDE()
    oracle = DiffusedGaussianMixture(gm, vp)
    gen = torch.Generator(device=device).manual_seed(3)
    xT = oracle.sample((6000,), vp.T)
    if kind == "reverse_em":
        rev = vp.reverse(oracle.score_fn)
        x = sde.solve(rev, xT, torch.linspace(0, rev.T, 501, dtype=torch.float64), generator=gen)
    else:
        ode = vp.probability_flow(oracle.score_fn)
        x = sde.solve(ode, xT, torch.linspace(vp.T, 0.0, 101, dtype=torch.float64), method="heun")
    assert _moment_z(x, gm) < Z_SCORE


def test_pf_ode_is_deterministic_transport(device: torch.device) -> None:
    """PF-ODE Heun converges at 2nd order: halving the step cuts the endpoint change ~4x."""
    gm = _gmm(device)
    vp = sde.VPSDE()
    ode = vp.probability_flow(DiffusedGaussianMixture(gm, vp).score_fn)
    xT = torch.randn(200, 2, dtype=torch.float64, device=device)
    ends = [sde.solve(ode, xT, torch.linspace(1.0, 1e-3, n + 1, dtype=torch.float64), method="heun") for n in (50, 100, 200)]
    e1, e2 = (ends[0] - ends[2]).abs().max(), (ends[1] - ends[2]).abs().max()
    assert float(e2) < 0.45 * float(e1)


def test_reverse_drift_formula() -> None:
    vp = sde.VPSDE()
    score = lambda x, t: -x * (1 + t[:, None])  # noqa: E731
    rev = vp.reverse(score)
    y = torch.randn(4, 2, dtype=torch.float64)
    s = torch.tensor([0.1, 0.2, 0.5, 0.9], dtype=torch.float64)
    t = vp.T - s
    expected = -vp.f(t)[:, None] * y + vp.g2(t)[:, None] * score(y, t)
    torch.testing.assert_close(rev.drift(y, s), expected)
    torch.testing.assert_close(rev.diffusion(y, s), vp.g(t)[:, None])
    ode = vp.probability_flow(score)
    torch.testing.assert_close(ode.drift(y, t), vp.f(t)[:, None] * y - 0.5 * vp.g2(t)[:, None] * score(y, t))
    assert rev.T == vp.T - vp.t_min


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_solve_matches_torchsde_same_brownian(method: str) -> None:
    """Same Brownian increments: fokker.sde.solve == torchsde.sdeint on the same grid."""
    vp = sde.VPSDE()
    oracle = DiffusedGaussianMixture(_gmm(torch.device("cpu")), vp)
    rev = vp.reverse(oracle.score_fn)
    y0 = torch.randn(64, 2, dtype=torch.float64)
    ts = torch.linspace(0.0, 0.75, 49, dtype=torch.float64)  # h = 1/64: grid points exact in binary
    bm = torchsde.BrownianInterval(t0=0.0, t1=float(ts[-1]), size=y0.shape, dtype=torch.float64, entropy=7)
    ours = sde.solve(rev, y0, ts, method=method, bm=bm)
    if method == "euler":
        theirs = torchsde.sdeint(rev, y0, ts, method="euler", bm=bm, dt=float(ts[1] - ts[0]))[-1]
    else:  # torchsde's Heun is for Stratonovich SDEs; additive noise: Ito = Stratonovich
        rev.sde_type = "stratonovich"
        theirs = torchsde.sdeint(rev, y0, ts, method="heun", bm=bm, dt=float(ts[1] - ts[0]))[-1]
        rev.sde_type = "ito"
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
    # the forward SDE too, via the generic and the linear paths
    fwd = sde.solve(vp, y0, ts, bm=bm)
    theirs_f = torchsde.sdeint(vp, y0, ts, method="euler", bm=bm, dt=float(ts[1] - ts[0]))[-1]
    torch.testing.assert_close(fwd, theirs_f, rtol=1e-9, atol=1e-9)


def test_solve_matches_torchdiffeq() -> None:
    vp = sde.VPSDE()
    ode = vp.probability_flow(DiffusedGaussianMixture(_gmm(torch.device("cpu")), vp).score_fn)
    x = torch.randn(32, 2, dtype=torch.float64)
    ts = torch.linspace(1.0, 1e-3, 51, dtype=torch.float64)
    ours = sde.solve(ode, x, ts, method="euler")
    theirs = torchdiffeq.odeint(ode, x, ts, method="euler")[-1]
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    # dispatch: adaptive dopri5 through solve vs Heun on a fine grid
    ad = sde.solve(ode, x, ts, method="dopri5", rtol=1e-8, atol=1e-8)
    fine = sde.solve(ode, x, torch.linspace(1.0, 1e-3, 801, dtype=torch.float64), method="heun")
    torch.testing.assert_close(ad, fine, rtol=1e-4, atol=1e-4)


def test_solve_generic_sde_and_path(dtype: torch.dtype) -> None:
    """A non-linear user SDE goes through the generic loop; EM matches a hand-written loop."""

    class Cubic(sde.SDE):
        def _drift(self, x, t):
            return -(x**3)

        def _diffusion(self, x, t):
            return torch.ones((), dtype=x.dtype) * 0.5

    obj = Cubic()
    x0 = torch.randn(10, 3, dtype=dtype)
    ts = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    noise = torch.randn(20, 10, 3, dtype=dtype)
    path = sde.solve(obj, x0, ts, noise=noise, return_path=True)
    x = x0.clone()
    h = 0.05
    for k in range(20):
        x = x - h * x**3 + 0.5 * math.sqrt(h) * noise[k]
    tol = tolerance(dtype)
    assert path.shape == (21, 10, 3)
    torch.testing.assert_close(path[-1], x, rtol=tol.rtol * 10, atol=tol.atol * 10)
    with pytest.raises(ParameterError, match="heun"):
        sde.solve(obj, x0, ts, method="heun")


def test_solve_grad_and_score_fn_shortcut() -> None:
    vp = sde.VPSDE()
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    x = torch.randn(8, 2, dtype=torch.float64)
    out = sde.solve(vp, x, torch.linspace(1.0, 0.0, 11, dtype=torch.float64), score_fn=lambda y, t: -w * y, ode=True, grad=True)
    (g,) = torch.autograd.grad(out.sum(), w)
    assert torch.isfinite(g)
    # score_fn shortcut == explicit reverse SDE in reversed time
    noise = torch.randn(10, 8, 2, dtype=torch.float64)
    a = sde.solve(vp, x, torch.linspace(1.0, 0.0, 11, dtype=torch.float64), score_fn=lambda y, t: -y, noise=noise)
    b = sde.solve(vp.reverse(lambda y, t: -y), x, torch.linspace(0.0, 1.0, 11, dtype=torch.float64), noise=noise)
    torch.testing.assert_close(a, b)


def test_solve_errors() -> None:
    vp = sde.VPSDE()
    x = torch.randn(4, 2)
    with pytest.raises(ParameterError, match="increasing"):
        sde.solve(vp, x, torch.tensor([0.0, 0.5, 0.3]))
    with pytest.raises(DomainError, match="ts must lie"):
        sde.solve(vp, x, torch.tensor([0.0, 1.5]))
    with pytest.raises(ShapeError, match="noise must have shape"):
        sde.solve(vp, x, torch.tensor([0.0, 0.5, 1.0]), noise=torch.randn(3, 4, 2))
    with pytest.raises(ShapeError, match="ts must be a 1-d grid"):
        sde.solve(vp, x, torch.tensor([0.5]))


def test_solve_dispatches_to_torchsde_and_follows_dtype() -> None:
    """Other SDE methods go to torchsde.sdeint (same result as calling it); float32 stays float32."""
    vp = sde.VPSDE()
    y0 = torch.randn(16, 2, dtype=torch.float64)
    ts = torch.linspace(0.0, 0.5, 33, dtype=torch.float64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=0.5, size=y0.shape, dtype=torch.float64, entropy=3)
    ours = sde.solve(vp, y0, ts, method="milstein", bm=bm, dt=1 / 64)
    theirs = torchsde.sdeint(vp, y0, ts, method="milstein", bm=bm, dt=1 / 64)[-1]
    torch.testing.assert_close(ours, theirs)
    x32 = torch.randn(8, 2)
    for method in ("euler", "heun"):
        out = sde.solve(vp.reverse(lambda x, t: -x), x32, torch.linspace(0.0, 1.0, 11), method=method)
        assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
