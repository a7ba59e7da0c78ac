"""Funnel, ManyWell, DoubleWell, Banana, Rings: log Z by quadrature, exact samples (KS), score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from target_testlib import KS_ALPHA, autograd_score, gauss_legendre_log_Z_2d, grid_cdf, grid_log_Z, ks_pvalue

from fokker.errors import ParameterError
from fokker.targets import Banana, DoubleWell, Funnel, ManyWell, Rings, catalogue
from fokker.tolerances import Z_SCORE, assert_close

FACTORIES = {
    "funnel": lambda: Funnel(dim=5, scale=3.0),
    "manywell": lambda: ManyWell(dim=6),
    "doublewell": lambda: DoubleWell(dim=4, num_wells=3, delta=2.0),
    "banana": lambda: Banana(dim=3, curvature=0.1, scale=10.0),
    "rings": lambda: Rings(),
}
SPREAD = {"funnel": 2.0, "manywell": 1.5, "doublewell": 1.5, "banana": 5.0, "rings": 2.5}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_score_matches_autograd(name, device):
    t = FACTORIES[name]().to(device=device, dtype=torch.float64)
    x = SPREAD[name] * torch.randn(6, 3, t.dim, dtype=torch.float64, device=device)
    s = t.score(x)
    assert s.shape == x.shape and s.dtype == torch.float64
    assert_close(s, autograd_score(t.log_prob, x))
    lp, s2 = t.log_prob_and_score(x.clone().requires_grad_(True))
    assert not lp.requires_grad and not s2.requires_grad  # detached, as the base contract says
    assert_close(lp, t.log_prob(x))
    assert_close(s2, s)
    assert t.log_prob(x).shape == (6, 3)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_sample_shape_dtype_device(name, device):
    t = FACTORIES[name]().to(device=device, dtype=torch.float64)
    x = t.sample((4, 3))
    assert x.shape == (4, 3, t.dim) and x.dtype == torch.float64 and x.device.type == torch.device(device).type
    assert torch.isfinite(t.log_prob(x)).all()
    assert t.sample(()).shape == (t.dim,)
    assert t.sample((0, 2)).shape == (0, 2, t.dim)
    assert t.to(torch.float32).sample((2,)).dtype == torch.float32


def _close(actual: float, expected: float) -> None:
    """Two float64 numbers equal to rounding (relative to their size)."""
    assert_close(torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64))


def _grid_log_Z(t, lo, hi, n=1501) -> float:
    """log of the 2-D trapezoid integral of exp(log_prob) over [lo, hi]^2 (independent of log_Z)."""
    return grid_log_Z(t.log_prob, lo, hi, n)


def test_funnel_log_Z_by_quadrature():
    t = Funnel(dim=2, scale=3.0).double()
    s = t.scale
    # Gauss-Legendre in x0, inner limits following the neck +-12 e^{x0/2}
    lz = gauss_legendre_log_Z_2d(
        t.log_prob, -8 * s, 8 * s, lambda x0: -12 * torch.exp(x0 / 2), lambda x0: 12 * torch.exp(x0 / 2)
    )
    _close(lz, t.log_Z)


def test_manywell_log_Z_matches_published_and_quadrature():
    zx, _ = integrate.quad(lambda x: math.exp(-(x**4) + 6 * x**2 + 0.5 * x), -np.inf, np.inf, epsabs=0, epsrel=1e-13)
    one_pair = math.log(zx) + 0.5 * math.log(2 * math.pi)
    t = ManyWell(dim=32)
    _close(t.log_Z, 16 * one_pair)
    assert abs(t.log_Z - 164.695675) <= 0.5e-6  # the published value, rounded to 6 decimals
    # the 2-D factor by a 2-D grid integral of log_prob itself
    _close(_grid_log_Z(ManyWell(dim=2).double(), -8, 8, n=2001), ManyWell(dim=2).log_Z)


@pytest.mark.parametrize("num_wells,delta", [(2, 4.0), (1, 1.0)])
def test_doublewell_log_Z_by_quadrature(num_wells, delta):
    t = DoubleWell(dim=2, num_wells=num_wells, delta=delta).double()
    z1, _ = integrate.quad(lambda x: math.exp(-((x * x - delta) ** 2)), -np.inf, np.inf, epsrel=1e-13)
    expected = num_wells * math.log(z1) + (2 - num_wells) * 0.5 * math.log(2 * math.pi)
    _close(t.log_Z, expected)
    _close(_grid_log_Z(t, -8, 8, n=2001), t.log_Z)


def test_banana_log_Z_by_quadrature():
    t = Banana(dim=2, curvature=0.1, scale=10.0).double()
    b, s = t.curvature, t.scale
    # Gauss-Legendre in x1, inner window of +-10 around the banana's arc x2 = -b (x1^2 - s^2)
    lz = gauss_legendre_log_Z_2d(
        t.log_prob, -9 * s, 9 * s, lambda x1: -b * (x1**2 - s**2) - 10, lambda x1: -b * (x1**2 - s**2) + 10
    )
    _close(lz, t.log_Z)


def test_rings_log_Z_by_cartesian_grid():
    t = Rings(radii=(0.0, 1.0, 2.5), sigma=0.3).double()
    _close(_grid_log_Z(t, -4.5, 4.5, n=1201), t.log_Z)
    t = Rings().double()
    _close(_grid_log_Z(t, -5.5, 5.5, n=2001), t.log_Z)


def test_funnel_deep_neck_float32_is_finite():
    """At x0 < -88, exp(-x0) overflows float32; at x_{1:} = 0 the density is still finite.

    Oracle: the same point in float64, where nothing overflows.
    """
    x = torch.tensor([[-100.0, 0.0, 0.0], [-100.0, 1e-3, 0.0]])
    t32, t64 = Funnel(dim=3, scale=3.0), Funnel(dim=3, scale=3.0).double()
    lp32, lp64 = t32.log_prob(x), t64.log_prob(x.double())
    assert torch.isfinite(lp32[0])
    assert_close(lp32[0], lp64[0].float())
    assert float(lp32[1]) == -math.inf and float(lp64[1]) < -1e30  # true density underflows float32
    sc32, sc64 = t32.score(x[:1]), t64.score(x[:1].double())
    assert torch.isfinite(sc32).all()
    assert_close(sc32, sc64.float())
    xg = x[:1].clone().requires_grad_(True)  # autograd through log_prob: also finite, equal to the score
    (g,) = torch.autograd.grad(t32.log_prob(xg).sum(), xg)
    assert_close(g, sc64.float())


# ------------------------------------------------------------------ samples
N = 4000


def test_funnel_samples_ks(device):
    t = Funnel(dim=3, scale=3.0).to(device=device, dtype=torch.float64)
    x = t.sample((N,))
    assert ks_pvalue(x[:, 0], stats.norm(0, 3).cdf) > KS_ALPHA
    # marginal of x_i: F(u) = int N(x0; 0, 9) Phi(u e^{-x0/2}) dx0, by quadrature on a grid
    g = np.linspace(-27, 27, 1501)
    w = stats.norm(0, 3).pdf(g) * (g[1] - g[0])

    def cdf(u):
        return (stats.norm.cdf(np.asarray(u)[:, None] * np.exp(-g / 2)[None, :]) * w).sum(1)

    for i in (1, 2):
        assert ks_pvalue(x[:, i], cdf) > KS_ALPHA


def test_manywell_samples_ks(device):
    t = ManyWell(dim=4).to(device=device, dtype=torch.float64)
    x = t.sample((N,))
    cdf_x = grid_cdf(lambda a: -(a**4) + 6 * a**2 + 0.5 * a, -5, 5)
    for i in (0, 2):
        assert ks_pvalue(x[:, i], cdf_x) > KS_ALPHA
    for i in (1, 3):
        assert ks_pvalue(x[:, i], stats.norm.cdf) > KS_ALPHA
    # the deep well (x > 0) carries the exact mass fraction
    p_right = 1 - cdf_x(np.array([0.0]))[0]
    frac = (x[:, 0] > 0).double().mean().item()
    assert abs(frac - p_right) < Z_SCORE * math.sqrt(p_right * (1 - p_right) / N)


def test_doublewell_samples_ks(device):
    t = DoubleWell(dim=3, num_wells=2, delta=3.0).to(device=device, dtype=torch.float64)
    x = t.sample((N,))
    cdf_q = grid_cdf(lambda a: -((a * a - 3.0) ** 2), -6, 6)
    for i in (0, 1):
        assert ks_pvalue(x[:, i], cdf_q) > KS_ALPHA
    assert ks_pvalue(x[:, 2], stats.norm.cdf) > KS_ALPHA


def test_banana_samples_ks(device):
    t = Banana(dim=2, curvature=0.1, scale=10.0).to(device=device, dtype=torch.float64)
    x = t.sample((N,))
    assert ks_pvalue(x[:, 0], stats.norm(0, 10).cdf) > KS_ALPHA
    g = np.linspace(-90, 90, 1501)
    w = stats.norm(0, 10).pdf(g) * (g[1] - g[0])

    def cdf(u):  # P(x2 <= u) = int N(x1) Phi(u + b (x1^2 - s^2)) dx1
        return (stats.norm.cdf(np.asarray(u)[:, None] + 0.1 * (g[None, :] ** 2 - 100.0)) * w).sum(1)

    assert ks_pvalue(x[:, 1], cdf) > KS_ALPHA


def test_rings_samples_ks(device):
    t = Rings(radii=(1.0, 2.0, 3.0), sigma=0.2).to(device=device, dtype=torch.float64)
    x = t.sample((N,))
    rho = torch.linalg.vector_norm(x, dim=-1)
    r = np.array([1.0, 2.0, 3.0])
    cdf_rho = grid_cdf(
        lambda p: np.log(np.maximum(p, 1e-300)) + np.log(np.exp(-((p[:, None] - r) ** 2) / 0.08).sum(1) + 1e-300), 0, 5
    )
    assert ks_pvalue(rho, cdf_rho) > KS_ALPHA
    theta = torch.atan2(x[:, 1], x[:, 0])
    assert ks_pvalue(theta, stats.uniform(-math.pi, 2 * math.pi).cdf) > KS_ALPHA


@pytest.mark.parametrize(
    "make", [lambda: ManyWell(dim=2)._x, lambda: DoubleWell(dim=1, delta=6.0)._x, lambda: Rings()._radius]
)
def test_rejection_bound_holds_on_wide_grid(make):
    u = make()
    g = torch.linspace(-40, 40, 400001, dtype=torch.float64)
    ratio = u.f(g) - u._log_q(g)
    assert float(ratio.max()) <= u.log_M


# --------------------------------------------------------------- validation
def test_parameter_errors():
    with pytest.raises(ParameterError, match="dim must be an integer >= 2"):
        Funnel(dim=1)
    with pytest.raises(ParameterError, match="scale must be a positive finite number"):
        Funnel(scale=0.0)
    with pytest.raises(ParameterError, match="dim must be even"):
        ManyWell(dim=5)
    with pytest.raises(ParameterError, match="num_wells must be <= dim"):
        DoubleWell(dim=2, num_wells=3)
    with pytest.raises(ParameterError, match="delta must be a positive finite number"):
        DoubleWell(dim=2, delta=-1.0)
    with pytest.raises(ParameterError, match="scale must be a positive finite number"):
        Banana(scale=-2.0)
    with pytest.raises(ParameterError, match="curvature must be a finite number"):
        Banana(curvature=float("nan"))
    with pytest.raises(ParameterError, match="radii must be a non-empty sequence"):
        Rings(radii=(1.0, -1.0))
    with pytest.raises(ParameterError, match="sigma must be a positive finite number"):
        Rings(sigma=float("inf"))


@settings(max_examples=15)
@given(
    dim=st.integers(2, 6),
    scale=st.floats(0.2, 5.0),
    curvature=st.floats(-0.5, 0.5),
    delta=st.floats(0.1, 6.0),
    seed=st.integers(0, 2**16),
)
def test_property_scores_match_autograd(dim, scale, curvature, delta, seed):
    g = torch.Generator().manual_seed(seed)
    for t in (
        Funnel(dim, scale),
        Banana(dim, curvature, scale),
        DoubleWell(dim, num_wells=dim // 2, delta=delta),
        ManyWell(2 * (dim // 2)),
    ):
        t = t.double()
        x = 2 * torch.randn(5, t.dim, dtype=torch.float64, generator=g)
        assert_close(t.score(x), autograd_score(t.log_prob, x))


def test_catalogue_builds_every_analytic_target():
    cat = catalogue()
    for name in ("funnel", "manywell", "doublewell", "banana", "rings"):
        t = cat[name]()
        assert t.log_Z is not None and t.has_exact_samples
    assert cat["funnel"]().dim == 10 and cat["manywell"]().dim == 32


@pytest.mark.parametrize("name", list(FACTORIES))
def test_deepcopy_and_save_load_roundtrip(name, tmp_path):
    import copy

    t = FACTORIES[name]().double()
    x = torch.randn(4, t.dim, dtype=torch.float64)
    c = copy.deepcopy(t)  # e.g. EMA copies of a sampler holding the target
    torch.save(t, tmp_path / "t.pt")
    u = torch.load(tmp_path / "t.pt", weights_only=False)
    for other in (c, u):
        assert torch.equal(other.log_prob(x), t.log_prob(x))
        assert other.sample((3,)).shape == (3, t.dim)
    assert t.state_dict() == {}  # parameter-free: only a non-persistent dtype/device buffer
