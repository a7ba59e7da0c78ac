"""ArviZ export: groups and names, the pointwise log-likelihood for LOO, plots, and our diagnostics against ArviZ's."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from fokker import mcmc
from fokker.errors import ParameterError
from fokker.mcmc import diagnostics as diag
from fokker.targets import from_pyro
from fokker.tolerances import assert_close

az = pytest.importorskip("arviz")
# ArviZ 0.23's matplotlib backend calls an API matplotlib 3.11 deprecates (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:Passing a dict or None as alias_mapping:DeprecationWarning")

Y = torch.tensor([28.0, 8, -3, 7, -1, 1, 18, 12], dtype=torch.float64)
SIGMA = torch.tensor([15.0, 10, 16, 11, 9, 11, 10, 18], dtype=torch.float64)


def eight_schools(y, sigma):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=y.dtype)))
    with pyro.plate("J", 8):
        tt = pyro.sample("theta_trans", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
        theta = pyro.deterministic("theta", mu + tau * tt)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


@pytest.fixture(scope="module")
def result():
    t = from_pyro(eight_schools, Y, SIGMA)
    return mcmc.sample(t, mcmc.NUTS(), num_chains=4, num_samples=100, warmup=100, seed=0, progress=False)


def test_to_arviz_groups_names_and_values(result) -> None:
    idata = result.to_arviz()
    assert set(idata.groups()) == {"posterior", "sample_stats", "observed_data", "log_likelihood"}
    post = idata.posterior
    assert set(post.data_vars) == {"mu", "tau", "theta_trans", "theta"}
    assert post["theta"].shape == (4, 100, 8)
    assert_close(torch.from_numpy(post["tau"].values), result.constrained["tau"])
    stats = idata.sample_stats
    assert {"diverging", "step_size", "tree_depth", "energy", "n_steps", "acceptance_rate", "lp"} <= set(stats.data_vars)
    assert stats["diverging"].dtype == bool and int(stats["diverging"].sum()) == int(result.divergences.sum())
    assert_close(torch.from_numpy(stats["lp"].values), result.log_prob)
    assert_close(torch.from_numpy(idata.observed_data["y"].values), Y)
    # pointwise log-likelihood: log N(y_j; theta_j, sigma_j) at every draw, computed here independently
    theta = result.constrained["theta"]
    ref = torch.distributions.Normal(theta, SIGMA).log_prob(Y)
    assert_close(torch.from_numpy(idata.log_likelihood["y"].values), ref)


def test_arviz_functions_work_on_the_export(result) -> None:
    idata = result.to_arviz()
    summ = az.summary(idata, var_names=["mu", "tau"])
    # ArviZ's R-hat of the exported draws is ours (the same rank-normalized split R-hat)
    assert summ.loc["mu", "r_hat"] == pytest.approx(float(diag.rhat(result.constrained["mu"].unsqueeze(-1))), abs=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto k warnings with 400 draws are expected
        loo = az.loo(idata, pointwise=True)
    assert loo.loo_i.shape == (8,)
    # elpd_loo is at most the log pointwise predictive density: lppd - p_loo
    ll = torch.from_numpy(idata.log_likelihood["y"].values).reshape(-1, 8)
    lppd = float((torch.logsumexp(ll, 0) - torch.log(torch.tensor(ll.shape[0], dtype=ll.dtype))).sum())
    assert loo.elpd_loo == pytest.approx(lppd - loo.p_loo, rel=1e-6)


@pytest.mark.parametrize("kind", ["trace", "rank", "pair", "energy"])
def test_plot_returns_a_figure_and_saves_it(result, kind: str, tmp_path) -> None:
    import matplotlib.pyplot as plt

    path = tmp_path / f"{kind}.png"
    fig = result.plot(kind, var_names=None if kind == "energy" else ["mu", "tau"], path=str(path))
    assert path.stat().st_size > 1000 and len(fig.axes) >= 1
    plt.close(fig)


def test_plot_errors(result) -> None:
    with pytest.raises(ParameterError, match="kind"):
        result.plot("violin")


def test_plain_target_exports_x_and_named_parameters() -> None:
    from fokker.targets import EightSchools

    res = mcmc.sample(lambda x: -0.5 * (x * x).sum(-1), mcmc.HMC(), num_chains=2, num_samples=20, warmup=20,
                      dim=3, seed=0, progress=False)
    idata = res.to_arviz()
    assert list(idata.posterior.data_vars) == ["x"] and idata.posterior["x"].shape == (2, 20, 3)
    assert "observed_data" not in idata.groups()
    res = mcmc.sample(EightSchools(), mcmc.HMC(), num_chains=2, num_samples=10, warmup=10, seed=0, progress=False)
    assert {"mu", "tau", "theta"} <= set(res.to_arviz().posterior.data_vars)


def test_our_diagnostics_agree_with_arviz_on_typical_chains() -> None:
    """AR(1) chains with phi = 0.5 (a typical MCMC autocorrelation) plus one shifted chain:
    bulk/tail ESS from pyro.ops.stats within 1% of ArviZ's, R-hat equal."""
    g = torch.Generator().manual_seed(0)
    e = torch.randn(8, 1000, 2, dtype=torch.float64, generator=g)
    x = torch.zeros_like(e)
    for t in range(1000):
        x[:, t] = (0.5 * x[:, t - 1] if t else 0) + e[:, t]
    x[0] += 0.2
    ds = az.convert_to_dataset({"x": x.numpy()})
    assert ((diag.ess_bulk(x) / torch.from_numpy(az.ess(ds, method="bulk")["x"].values) - 1).abs() < 0.01).all()
    assert ((diag.ess_tail(x) / torch.from_numpy(az.ess(ds, method="tail")["x"].values) - 1).abs() < 0.01).all()
    assert_close(diag.rhat(x), torch.from_numpy(az.rhat(ds)["x"].values))
