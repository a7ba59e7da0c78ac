"""2-D toy samplers: determinism, exact support properties, distribution vs independent samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from fokker.datasets import TOY_DATASETS, ToyDataset, load, sample
from fokker.datasets import checkerboard, eight_gaussians, pinwheel, rings, swiss_roll, two_moons
from fokker.errors import ParameterError
from fokker.tolerances import Z_SCORE

KS_ALPHA = float(2 * stats.norm.sf(Z_SCORE))
N = 4000


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_shape_seed_dtype_device(name, device):
    f = TOY_DATASETS[name]
    x = f(257, seed=3, dtype=torch.float64, device=device)
    assert x.shape == (257, 2) and x.dtype == torch.float64 and x.device.type == torch.device(device).type
    assert torch.isfinite(x).all()
    assert torch.equal(x.cpu(), f(257, seed=3, dtype=torch.float64))
    assert torch.equal(x.cpu(), f(257, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    assert not torch.equal(x.cpu(), f(257, seed=4, dtype=torch.float64))
    assert f(5).dtype == torch.get_default_dtype()


def test_generator_and_seed_leave_the_global_rng_alone_and_none_uses_it():
    torch.manual_seed(7)
    a = torch.rand(4)
    torch.manual_seed(7)
    g = torch.Generator().manual_seed(1)
    for f in TOY_DATASETS.values():
        f(10, seed=2)
        f(10, generator=g)
    assert torch.equal(torch.rand(4), a)
    for f in TOY_DATASETS.values():  # neither: the global RNG, reproducible from torch.manual_seed
        torch.manual_seed(3)
        first = f(10)
        torch.manual_seed(3)
        assert torch.equal(f(10), first)
    with pytest.raises(ParameterError, match="either generator= or seed="):
        two_moons(10, seed=1, generator=g)


def _ks2(a, b) -> float:
    return float(stats.ks_2samp(np.asarray(a), np.asarray(b)).pvalue)


def test_swiss_roll_matches_sklearn():
    from sklearn.datasets import make_swiss_roll

    ref = make_swiss_roll(N, noise=1.0, random_state=0)[0][:, [0, 2]] / 5
    x = swiss_roll(N, seed=0, dtype=torch.float64).numpy()
    for i in range(2):
        assert _ks2(x[:, i], ref[:, i]) > KS_ALPHA


def test_two_moons_matches_sklearn():
    from sklearn.datasets import make_moons

    ref = 2 * (make_moons(N, noise=0.1, random_state=0)[0] - np.array([0.5, 0.25]))
    x = two_moons(N, seed=0, dtype=torch.float64).numpy()
    for i in range(2):
        assert _ks2(x[:, i], ref[:, i]) > KS_ALPHA


def test_eight_gaussians_components():
    x = eight_gaussians(N, seed=0, dtype=torch.float64) * math.sqrt(2)
    ang = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centres = 4 * torch.stack([torch.cos(ang), torch.sin(ang)], -1)
    k = torch.cdist(x, centres).argmin(1)
    counts = torch.bincount(k, minlength=8).double()
    p = 1 / 8
    assert ((counts - N * p).abs() <= Z_SCORE * math.sqrt(N * p * (1 - p))).all()
    resid = (x - centres[k]).numpy()
    for i in range(2):
        assert stats.kstest(resid[:, i], stats.norm(0, 0.5).cdf).pvalue > KS_ALPHA


def test_checkerboard_support_and_uniform_marginal():
    x = checkerboard(N, seed=0, dtype=torch.float64)
    assert (x.abs() <= 4).all()
    parity = (torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)).remainder(2)
    assert (parity == 0).all()
    for i in range(2):
        assert stats.kstest(x[:, i].numpy(), stats.uniform(-4, 8).cdf).pvalue > KS_ALPHA


def test_rings_radii_and_uniform_angle():
    x = rings(N, seed=0, dtype=torch.float64)
    r = torch.linalg.vector_norm(x, dim=-1)
    radii = 3 * torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    k = (r[:, None] - radii).abs().argmin(1)
    assert torch.equal(torch.bincount(k, minlength=4), torch.full((4,), N // 4))
    resid = r - radii[k]
    # |c + e| - |c| for e ~ N(0, s^2 I) in 2-D: mean s^2 / (2 r) + O(s^4 / r^3) (the tangential
    # component adds e_t^2 / (2 r)), variance s^2 to leading order.  Compare per ring within
    # Z_SCORE standard errors (plus the neglected O(s^4 / r^3) term).
    s = 0.08
    for j, rj in enumerate(radii.tolist()):
        rk = resid[k == j]
        se = s / math.sqrt(len(rk))
        assert abs(rk.mean().item() - s * s / (2 * rj)) < Z_SCORE * se + s**4 / rj**3
        # sd of a sample sd of normals: s / sqrt(2 (n - 1))
        assert abs(rk.std().item() - s) < Z_SCORE * s / math.sqrt(2 * (len(rk) - 1)) + s**3 / rj**2
    theta = torch.atan2(x[:, 1], x[:, 0]).numpy()
    assert stats.kstest(theta, stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > KS_ALPHA


def test_pinwheel_radius_matches_independent_numpy_sampler():
    x = pinwheel(N, seed=0, dtype=torch.float64)
    rng = np.random.default_rng(1)
    e = rng.standard_normal((N, 2))
    ref_r = 2 * np.hypot(1 + 0.3 * e[:, 0], 0.1 * e[:, 1])  # rotation-invariant radius
    assert _ks2(torch.linalg.vector_norm(x, dim=-1).numpy(), ref_r) > KS_ALPHA


def test_load_fixed_split():
    ds = load("checkerboard", num_train=300, num_test=100, seed=5)
    assert isinstance(ds, ToyDataset) and ds.seed == 5
    assert ds.train.shape == (300, 2) and ds.test.shape == (100, 2)
    again = load("checkerboard", num_train=300, num_test=100, seed=5)
    assert torch.equal(ds.train, again.train) and torch.equal(ds.test, again.test)
    assert torch.equal(torch.cat([ds.train, ds.test]), sample("checkerboard", 400, seed=5))
    b = ds.sampler(generator=torch.Generator().manual_seed(0))(64)
    # independently: the indices the same generator gives torch.randint
    idx = torch.randint(300, (64,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(b, ds.train[idx])


def test_errors():
    with pytest.raises(ParameterError, match="num_samples must be an integer >= 1"):
        two_moons(0)
    with pytest.raises(ParameterError, match="name must be one of"):
        load("spirals")
    with pytest.raises(ParameterError, match="seed must be an integer"):
        rings(10, seed=1.5)
    with pytest.raises(ParameterError, match="num_test must be an integer >= 1"):
        load("rings", num_train=10, num_test=0)
