"""``from_pyro(model, reparam="auto")``: VIP (Gorinova, Moore & Hoffman 2020) against the change of variables it
claims, its site selection, and the centredness it learns where the answer is known."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from fokker.targets import EightSchools, from_pyro
from fokker.targets.vip import hierarchical_loc_scale_sites, learn_centeredness
from fokker.tolerances import assert_close

F64 = torch.float64
Y = torch.tensor([28.0, 8, -3, 7, -1, 1, 18, 12], dtype=F64)
SIGMA = torch.tensor([15.0, 10, 16, 11, 9, 11, 10, 18], dtype=F64)


def eight_schools(y, sigma, centered=True):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=F64)))
    with pyro.plate("J", 8):
        if centered:
            theta = pyro.sample("theta", dist.Normal(mu, tau))
        else:
            tt = pyro.sample("theta_trans", dist.Normal(torch.zeros((), dtype=F64), 1.0))
            theta = pyro.deterministic("theta", mu + tau * tt)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def funnel():
    x0 = pyro.sample("x0", dist.Normal(torch.tensor(0.0, dtype=F64), 3.0))
    pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=F64), torch.exp(x0 / 2)).expand([4]).to_event(1))


def test_sites_that_depend_on_other_latents_are_found() -> None:
    assert hierarchical_loc_scale_sites(eight_schools, (Y, SIGMA)) == ["theta"]
    assert hierarchical_loc_scale_sites(eight_schools, (Y, SIGMA), {"centered": False}) == []  # N(0, 1): constant
    assert hierarchical_loc_scale_sites(funnel) == ["x"]  # inside to_event and expand


def test_auto_reparam_is_the_exact_change_of_variables() -> None:
    """log gamma_auto(mu, log tau, theta~) = log gamma_centred(mu, log tau, theta) + sum_j (1 - c_j) log tau with
    theta_j = mu + tau^(1-c_j) (theta~_j - c_j mu): the hand-written centred density plus the Jacobian, at random points."""
    t = from_pyro(eight_schools, Y, SIGMA)
    assert t.param_names == ["mu", "tau", "theta_decentered"]
    c = t.centeredness["theta"]
    ref = EightSchools(centered=True).to(F64)
    z = torch.randn(200, 10, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2
    mu, log_tau, tt = z[:, :1], z[:, 1:2], z[:, 2:]
    tau = log_tau.exp()
    theta = mu + tau ** (1 - c) * (tt - c * mu)
    expected = ref.log_prob(torch.cat([mu, log_tau, theta], -1)) + (1 - c).sum() * log_tau[:, 0]
    assert_close(t.log_prob(z), expected, scale=float(expected.abs().max()))
    assert_close(t.constrain(z)["theta"], theta)


def test_learned_centredness_follows_how_much_the_data_say() -> None:
    """Eight schools' data say little about each theta_j (sigma_j ~ 10 against tau ~ 3): non-centred (c near 0),
    as Gorinova et al. report.  Measured a hundred times more precisely (sigma_j / 100) the likelihood pins each
    theta_j and the centred form is the better one (c near 1)."""
    weak = learn_centeredness(eight_schools, (Y, SIGMA))["theta"]
    strong = learn_centeredness(eight_schools, (Y, SIGMA / 100))["theta"]
    assert float(weak.max()) < 0.2
    assert float(strong.min()) > 0.8


def test_auto_is_deterministic_and_leaves_the_global_state_alone() -> None:
    pyro.get_param_store().clear()
    pyro.param("user_param", torch.ones(2))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = from_pyro(eight_schools, Y, SIGMA).centeredness["theta"]
    assert torch.equal(torch.random.get_rng_state(), before)
    assert list(pyro.get_param_store().keys()) == ["user_param"]
    b = from_pyro(eight_schools, Y, SIGMA).centeredness["theta"]
    assert torch.equal(a, b)
    pyro.get_param_store().clear()


def test_models_without_hierarchical_sites_are_not_rewritten() -> None:
    t = from_pyro(eight_schools, Y, SIGMA, centered=False)
    assert t.centeredness == {} and t.param_names == ["mu", "tau", "theta_trans"]
    none = from_pyro(eight_schools, Y, SIGMA, reparam=None)
    assert none.param_names == ["mu", "tau", "theta"]


def test_a_model_the_guide_cannot_run_warns_and_stays_as_written() -> None:
    def flat_scale():
        s = pyro.sample("s", dist.ImproperUniform(dist.constraints.positive, (), ()))
        pyro.sample("x", dist.Normal(torch.zeros(3, dtype=F64), s).to_event(1))
        pyro.sample("y", dist.Normal(torch.zeros(3, dtype=F64), 1.0).to_event(1), obs=torch.ones(3, dtype=F64))

    with pytest.warns(RuntimeWarning, match="reparam='auto'"):
        t = from_pyro(flat_scale)
    assert t.param_names == ["s", "x"]


def test_flat_priors_without_hierarchy_build_silently() -> None:
    """Stan-style flat priors (ImproperUniform, which Pyro cannot sample) are started by fokker's own init: no
    spurious warning, nothing rewritten."""
    import warnings

    def flat_mean(y):
        mu = pyro.sample("mu", dist.ImproperUniform(dist.constraints.real, (), ()))
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = from_pyro(flat_mean, Y)
    assert t.centeredness == {} and t.param_names == ["mu"]


def test_bad_arguments_are_named() -> None:
    from fokker.errors import ParameterError

    with pytest.raises(ParameterError, match="'auto'"):
        from_pyro(eight_schools, Y, SIGMA, reparam="automatic")
    with pytest.raises(ParameterError, match="num_steps"):
        learn_centeredness(eight_schools, (Y, SIGMA), num_steps=0)
