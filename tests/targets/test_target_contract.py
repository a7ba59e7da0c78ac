"""Every target: the generator contract of ``sample`` and the dtype contract of its inputs."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from fokker import targets
from fokker.errors import DataNotFoundError, DeviceDtypeError, NonFiniteError, ShapeError

from target_testlib import KS_ALPHA, ks_pvalue


def _pyro_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.ones((), dtype=y.dtype)))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def _builders() -> dict:
    out = dict(targets.catalogue())
    out.update(
        gaussian_mixture=lambda: targets.GaussianMixture.isotropic(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), 0.7),
        doublewell_default=targets.DoubleWell,
        eight_schools_centered=lambda: targets.EightSchools(centered=True),
        lgcp_whitened=lambda: targets.LGCP(grid=8, whitened=True),
        logistic=lambda: targets.LogisticRegression(torch.randn(20, 3), (torch.rand(20) < 0.5).float()),
        from_pyro=lambda: targets.from_pyro(_pyro_model, torch.tensor([0.5, 1.5, -0.2])),
    )
    out["lgcp"] = lambda: targets.LGCP(grid=8)  # the 40 x 40 benchmark costs seconds; the contract is the same
    return out


BUILDERS = _builders()


def _build(name: str, dtype: torch.dtype) -> targets.Target:
    try:
        t = BUILDERS[name]()
    except DataNotFoundError:
        pytest.skip(f"{name}: shared/validation data not found")
    if name == "from_pyro":  # a Pyro target follows the dtype of the model's data
        return t if dtype == torch.float32 else targets.from_pyro(_pyro_model, torch.tensor([0.5, 1.5, -0.2], dtype=dtype))
    return t.to(dtype)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_input_of_the_other_dtype_raises(name: str, dtype: torch.dtype) -> None:
    t = _build(name, dtype)
    assert t.dtype == dtype
    other = torch.float64 if dtype == torch.float32 else torch.float32
    x = torch.zeros(2, t.dim, dtype=dtype)
    assert t.log_prob(x).dtype == dtype
    for method in (t.log_prob, t.score):
        with pytest.raises(DeviceDtypeError, match=f"x has dtype {other} but {type(t).__name__} has dtype {dtype}"):
            method(x.to(other))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_input_errors(name: str) -> None:
    t = _build(name, torch.float32)
    with pytest.raises(ShapeError, match=rf"x must have shape \(\.\.\., {t.dim}\)"):
        t.log_prob(torch.zeros(2, t.dim + 1))
    bad = torch.zeros(2, t.dim)
    bad[1, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="x contains 1 non-finite"):
        t.score(bad)
    bad[1, 0] = -float("inf")
    with pytest.raises(NonFiniteError, match="x contains 1 non-finite"):
        t.log_prob(bad)
    with pytest.raises(DeviceDtypeError, match="x is on device meta"):
        t.score(torch.zeros(2, t.dim, device="meta"))


EXACT = sorted(n for n in BUILDERS if n not in {"eight_schools", "eight_schools_centered", "lgcp", "lgcp_whitened",
                                                "logistic", "from_pyro", "breast_cancer", "ionosphere", "sonar",
                                                "german_credit"})


@pytest.mark.parametrize("name", EXACT)
def test_exact_samples_come_from_the_generator(name: str) -> None:
    t = _build(name, torch.float64)
    assert t.has_exact_samples
    state = torch.get_rng_state()
    a = t.sample((3, 4), generator=torch.Generator().manual_seed(5))
    b = t.sample((3, 4), generator=torch.Generator().manual_seed(5))
    c = t.sample(12, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not touched
    assert a.shape == (3, 4, t.dim) and c.shape == (12, t.dim) and a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a.reshape(12, -1), c)
    torch.manual_seed(1)
    d = t.sample(12)
    torch.manual_seed(1)
    assert torch.equal(d, t.sample(12))  # generator=None: the global RNG, as torch does


def test_generator_samples_have_the_right_law() -> None:
    # the funnel's x_0 ~ N(0, scale^2) and x_1 / exp(x_0 / 2) ~ N(0, 1), drawn from a generator
    from scipy import stats

    f = targets.Funnel(dim=3, scale=3.0).double()
    x = f.sample(4000, generator=torch.Generator().manual_seed(0))
    assert ks_pvalue(x[:, 0] / 3.0, stats.norm.cdf) > KS_ALPHA
    assert ks_pvalue(x[:, 1] / torch.exp(0.5 * x[:, 0]), stats.norm.cdf) > KS_ALPHA


def test_prior_sample_and_pyro_init_take_a_generator(tmp_path) -> None:
    # a CSV of points written here: the test needs no reference data
    pts = torch.rand(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (tmp_path / "points.csv").write_text("x,y\n" + "\n".join(f"{a:.6f},{b:.6f}" for a, b in pts.tolist()))
    lgcp = targets.LGCP(grid=6, points=tmp_path / "points.csv").double()
    state = torch.get_rng_state()
    assert torch.equal(lgcp.prior_sample(3, generator=torch.Generator().manual_seed(2)),
                       lgcp.prior_sample((3,), generator=torch.Generator().manual_seed(2)))
    t = targets.from_pyro(_pyro_model, torch.tensor([0.5, 1.5, -0.2]))
    a = t.init(4, "uniform", generator=torch.Generator().manual_seed(9))
    b = t.init(4, "uniform", generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and a.shape == (4, 2)
    assert torch.equal(torch.get_rng_state(), state)
