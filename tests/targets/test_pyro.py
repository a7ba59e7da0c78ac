"""``from_pyro``: unconstrained log density vs hand-written ones, constrain, init strategies, errors."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from fokker import mcmc
from fokker.errors import ModelError, NonFiniteError, ParameterError, ShapeError
from fokker.targets import EightSchools, from_pyro
from fokker.targets.pyro import TRACE_AFTER, multinomial_log_prob
from fokker.tolerances import Z_SCORE, assert_close

Y = torch.tensor([28.0, 8, -3, 7, -1, 1, 18, 12], dtype=torch.float64)
SIGMA = torch.tensor([15.0, 10, 16, 11, 9, 11, 10, 18], dtype=torch.float64)


def eight_schools(y, sigma, centered=False):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=y.dtype)))
    with pyro.plate("J", 8):
        if centered:
            theta = pyro.sample("theta", dist.Normal(mu, tau))
        else:
            tt = pyro.sample("theta_trans", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
            theta = pyro.deterministic("theta", mu + tau * tt)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


@pytest.mark.parametrize("centered", [False, True])
def test_eight_schools_equals_hand_written_up_to_a_constant(centered: bool) -> None:
    t = from_pyro(eight_schools, Y, SIGMA, centered=centered, reparam=None)  # the model as written
    ref = EightSchools(centered=centered).to(torch.float64)
    assert t.dim == 10
    assert t.param_names == ["mu", "tau", "theta" if centered else "theta_trans"]
    z = torch.randn(500, 10, dtype=torch.float64) * torch.tensor([5.0, 1.5] + [2.0] * 8, dtype=torch.float64)
    # both keep every normalizing constant, so they agree exactly (to rounding), not up to a constant
    assert_close(t.log_prob(z), ref.log_prob(z))
    assert_close(t.score(z), ref.score(z))
    # constrained values agree with the hand-written map
    c, r = t.constrain(z[:7]), ref.constrain(z[:7])
    assert_close(c["mu"], r["mu"])
    assert_close(c["tau"], r["tau"])
    assert_close(c["theta"], r["theta"])


def test_log_prob_against_explicit_change_of_variables() -> None:
    """Simplex and positive sites: log p(T(z)) + log|det J_T(z)| by hand (stick-breaking Jacobian by autograd)."""

    def model():
        w = pyro.sample("w", dist.Dirichlet(torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)))
        s = pyro.sample("s", dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 1.5))
        pyro.sample("obs", dist.Normal(w[..., 0] * s, 1.0), obs=torch.tensor(0.7, dtype=torch.float64))

    t = from_pyro(model)
    assert t.dim == 3 and t.unconstrained_shapes == {"w": (2,), "s": ()}
    sb = torch.distributions.transforms.StickBreakingTransform()
    z = torch.randn(20, 3, dtype=torch.float64)
    ref = []
    for zi in z:
        u, ls = zi[:2], zi[2]
        w, s = sb(u), ls.exp()
        # Jacobian of the stick-breaking map onto the first 2 coordinates (the simplex's chart)
        jac = torch.autograd.functional.jacobian(lambda v: sb(v)[:2], u)
        lp = (
            dist.Dirichlet(torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)).log_prob(w)
            + dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 1.5).log_prob(s)
            + dist.Normal(w[0] * s, 1.0).log_prob(torch.tensor(0.7, dtype=torch.float64))
            + torch.linalg.slogdet(jac)[1]
            + ls
        )
        ref.append(lp)
    assert_close(t.log_prob(z), torch.stack(ref))
    c = t.constrain(z.reshape(4, 5, 3))
    assert c["w"].shape == (4, 5, 3) and c["s"].shape == (4, 5)
    assert_close(c["w"].sum(-1), torch.ones(4, 5, dtype=torch.float64))
    assert_close(t.unconstrain(c), z.reshape(4, 5, 3))


def test_vmap_and_loop_fallback_agree() -> None:
    def model_with_python_branch(y):
        m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        if float(m) > 100.0:  # data-dependent Python control flow: vmap cannot trace it
            m = m * 1.0
        pyro.sample("y", dist.Normal(m, 1.0), obs=y)

    def model_plain(y):
        m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        pyro.sample("y", dist.Normal(m, 1.0), obs=y)

    y = torch.tensor(0.3, dtype=torch.float64)
    a, b = from_pyro(model_plain, y), from_pyro(model_with_python_branch, y)
    z = torch.randn(6, 1, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="falling back"):
        lb = b.log_prob(z)
    assert_close(a.log_prob(z), lb)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z[:, 0]) + torch.distributions.Normal(z[:, 0], 1.0).log_prob(y)
    assert_close(lb, want)


def test_init_strategies() -> None:
    t = from_pyro(eight_schools, Y, SIGMA)
    u = t.init(200, "uniform", generator=torch.Generator().manual_seed(0))
    assert u.shape == (200, 10) and u.dtype == torch.float64
    # Pyro's uniform(-2, 2) box in every coordinate: sd 4 / sqrt(12); the SE of a sample sd is
    # sd * sqrt((kurtosis - 1) / (4 n)) with kurtosis 9/5 for a uniform
    assert (u.abs() <= 2.0).all()
    sd = 4 / math.sqrt(12)
    assert ((u.std(0) - sd).abs() < Z_SCORE * sd * math.sqrt(0.8 / (4 * 200))).all()
    assert torch.equal(t.init(3, "feasible"), torch.zeros(3, 10, dtype=torch.float64))
    med = t.init(200, "median", generator=torch.Generator().manual_seed(1))
    # median of 15 prior draws.  mu ~ N(0, 5): the median of 15 normals has sd ~ 5 * 0.32, mean 0.
    assert abs(float(med[:, 0].mean())) < Z_SCORE * 5 * 0.32 / math.sqrt(200)
    # log tau: the median of 15 HalfCauchy(5) draws has median exactly 5; the density of its log
    # there is (15! / (7! 7!)) 2^-14 (order statistic) * 1 / pi (log-HalfCauchy at its median),
    # so the median over 200 chains has SE 1 / (2 density sqrt(200))
    density = math.comb(15, 7) * 8 * 2.0**-14 / math.pi
    assert abs(float(med[:, 1].median()) - math.log(5.0)) < Z_SCORE / (2 * density * math.sqrt(200))
    with pytest.raises(ParameterError, match="strategy"):
        t.init(2, "random")
    with pytest.raises(ParameterError, match="num_chains"):
        t.init(0)


def test_improper_uniform_flat_prior_init_and_sampling() -> None:
    """Stan-style flat prior on a positive parameter: ImproperUniform cannot be sampled by Pyro's inits."""

    def model(y):
        s = pyro.sample("s", dist.ImproperUniform(constraints.positive, (), ()))
        m = pyro.sample("m", dist.ImproperUniform(constraints.real, (), ()))
        with pyro.plate("n", y.shape[0]):
            pyro.sample("y", dist.Normal(m, s), obs=y)

    y = torch.linspace(-1, 3, 30, dtype=torch.float64)
    t = from_pyro(model, y)
    for strategy in ("uniform", "median", "feasible"):
        x = t.init(5, strategy)
        assert x.shape == (5, 2) and torch.isfinite(t.log_prob(x)).all()
    assert torch.equal(t.init(2, "feasible"), torch.zeros(2, 2, dtype=torch.float64))
    # the flat-prior posterior of m is a Student-t around ybar: check the mean
    res = mcmc.sample(t, mcmc.HMC(), num_chains=8, num_samples=150, warmup=150, seed=0, progress=False)
    m = res.constrained["m"]
    assert m.shape == (8, 150)
    se = float(mcmc.diagnostics.mcse_mean(m.unsqueeze(-1)))
    assert abs(float(m.mean()) - float(y.mean())) < Z_SCORE * se


def test_sample_returns_constrained_named_draws() -> None:
    t = from_pyro(eight_schools, Y, SIGMA)
    res = mcmc.sample(t, mcmc.HMC(), num_chains=4, num_samples=50, warmup=60, seed=0, progress=False)
    c = res.constrained
    assert set(c) == {"mu", "tau", "theta_trans", "theta"}
    assert c["theta"].shape == (4, 50, 8)
    assert_close(c["tau"], res.samples[..., 1].exp())  # tau = exp(log tau), the unconstrained coordinate
    names = [r["name"] for r in res.summary_table()]
    assert names[:3] == ["mu", "tau", "theta_trans[0]"] and "theta[7]" in names


def test_errors() -> None:
    t = from_pyro(eight_schools, Y, SIGMA)
    with pytest.raises(ShapeError, match=r"\(\.\.\., 10\)"):
        t.log_prob(torch.zeros(3, 9, dtype=torch.float64))
    with pytest.raises(ShapeError, match="z"):
        t.constrain(torch.zeros(3, dtype=torch.float64))

    def discrete():
        pyro.sample("k", dist.Bernoulli(0.3))

    with pytest.raises(ParameterError, match="discrete"):
        from_pyro(discrete)

    def nothing(y):
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ParameterError, match="no latent"):
        from_pyro(nothing, torch.tensor(0.0))
    with pytest.raises(TypeError, match="callable"):
        from_pyro(42)

    def impossible():
        x = pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        pyro.factor("wall", torch.where(x.abs() < 10, torch.tensor(-math.inf, dtype=torch.float64), x * 0))

    with pytest.raises(NonFiniteError, match="initial point"):
        from_pyro(impossible).init(2, "uniform", max_tries=3)


def test_sample_accepts_an_init_strategy_name() -> None:
    t = from_pyro(eight_schools, Y, SIGMA)
    res = mcmc.sample(t, mcmc.HMC(step_size=0.1, num_steps=2), num_chains=3, num_samples=2, warmup=0, init="feasible", progress=False)
    assert res.samples.shape == (3, 2, 10)
    with pytest.raises(ParameterError, match="strategy"):
        mcmc.sample(t, mcmc.HMC(step_size=0.1), num_chains=2, num_samples=2, warmup=0, init="random", progress=False)


# ----------------------------------------------------------------- the traced potential
def _multinomial_model(counts, total):
    p = pyro.sample("p", dist.Dirichlet(torch.ones(4, dtype=torch.float64)))
    with pyro.plate("n", counts.shape[0]):
        pyro.sample("obs", dist.Multinomial(total, p), obs=counts)


def _lkj_model(y):
    L = pyro.sample("L", dist.LKJCholesky(3, torch.tensor(2.0, dtype=torch.float64)))
    s = pyro.sample("s", dist.HalfNormal(torch.ones(3, dtype=torch.float64)).to_event(1))
    with pyro.plate("n", y.shape[0]):
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(3, dtype=torch.float64), scale_tril=s[..., None] * L), obs=y)


def _factor_mixture(y):
    """A two-component mixture written with pyro.factor (no Categorical site)."""
    w = pyro.sample("w", dist.Dirichlet(torch.ones(2, dtype=torch.float64)))
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2, dtype=torch.float64), 5.0).to_event(1))
    pyro.factor("lik", torch.logsumexp(w.log() + dist.Normal(mu, 1.0).log_prob(y[:, None]), -1).sum())


def _ordered_logistic(y):
    c = pyro.sample("c", dist.Normal(torch.zeros(3, dtype=torch.float64), 3.0).to_event(1))
    eta = pyro.sample("eta", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    with pyro.plate("n", y.shape[0]):
        pyro.sample("y", dist.OrderedLogistic(eta.expand(y.shape), c.sort(-1).values), obs=y)


COUNTS = torch.tensor([[3.0, 2, 1, 4], [1, 1, 5, 3], [0, 0, 4, 6]], dtype=torch.float64)
MODELS = {
    "eight_schools": (eight_schools, (Y, SIGMA)),
    "multinomial": (_multinomial_model, (COUNTS, 10)),
    "lkj": (_lkj_model, (torch.tensor([[0.5, 1.0, -1.0], [0.1, 0.2, 0.3], [-1.0, 0.4, 2.0]], dtype=torch.float64),)),
    "factor_mixture": (_factor_mixture, (torch.tensor([-1.0, 2.0, 3.0, 0.5, 2.5], dtype=torch.float64),)),
    "ordered_logistic": (_ordered_logistic, (torch.tensor([0, 1, 3, 2, 2]),)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_traced_potential_equals_the_pyro_trace_at_new_points(name: str) -> None:
    """The graph traced at one batch is the model's log density and gradient at other points too,
    compared with Pyro's own trace evaluated point by point (autograd through ``log_prob_sum``)."""
    model, args = MODELS[name]
    t = from_pyro(model, *args)
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to a loop, no failed trace
        for _ in range(TRACE_AFTER):
            t.log_prob_and_score(torch.randn(16, t.dim, dtype=torch.float64, generator=g))
    assert t.evaluation == "traced"
    z = torch.randn(16, t.dim, dtype=torch.float64, generator=g)
    lp, grad = t.log_prob_and_score(z)
    ref_lp, ref_grad = [], []
    for zi in z:
        zi = zi.clone().requires_grad_(True)
        lpi = _pyro_potential(t, zi)
        ref_lp.append(lpi.detach())
        ref_grad.append(torch.autograd.grad(lpi, zi)[0])
    assert_close(lp, torch.stack(ref_lp))
    assert_close(grad, torch.stack(ref_grad))


def _pyro_potential(t, z):
    """-potential_energy of Pyro's HMC machinery (``pyro.infer.mcmc.util.initialize_model``) at one point."""
    from pyro.infer.mcmc.util import initialize_model

    _, potential_fn, _, _ = initialize_model(t.model, t.model_args, t.model_kwargs)
    blocks = t._split(z)
    return -potential_fn(blocks)


def test_multinomial_log_prob_matches_torch_and_batches() -> None:
    logits = torch.tensor([[0.1, -math.inf, 2.0], [0.3, 0.2, -1.0]], dtype=torch.float64)
    value = torch.tensor([[3.0, 0.0, 1.0], [0.0, 2.0, 2.0]], dtype=torch.float64)
    d = torch.distributions.Multinomial(4, logits=logits)
    assert_close(multinomial_log_prob(d, value), d.log_prob(value))
    # and vmap batches it (torch's masked assignment does not)
    f = lambda lg: multinomial_log_prob(torch.distributions.Multinomial(4, logits=lg), value[1])  # noqa: E731
    assert_close(torch.func.vmap(f)(logits[1:].expand(5, 3)), d.log_prob(value)[1].expand(5))


def test_multinomial_model_stays_vectorized_and_fast() -> None:
    """64 points in one batched call (the issue: a per-point loop took ~1.7 s), no fallback warning."""
    import time

    t = from_pyro(_multinomial_model, COUNTS, 10)
    z = torch.randn(64, t.dim, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(TRACE_AFTER):  # the second call traces the graph
            t.log_prob_and_score(z)
        t0 = time.perf_counter()
        t.log_prob_and_score(z)
    assert t.evaluation == "traced"
    # a loop over 64 Pyro traces costs > 0.1 s on any machine; the traced graph ~1 ms
    assert time.perf_counter() - t0 < 0.1


def test_untraceable_model_stays_on_vmap_and_is_correct() -> None:
    def model(y):
        m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        n = int(y.sum())  # a Python number from the data: make_fx cannot record it
        pyro.sample("y", dist.Normal(m, 1.0).expand([n]).to_event(1), obs=torch.zeros(n, dtype=torch.float64))

    t = from_pyro(model, torch.tensor([1.0, 2.0], dtype=torch.float64))
    z = torch.randn(4, 1, dtype=torch.float64)
    t.log_prob_and_score(z)
    with pytest.warns(RuntimeWarning, match="could not be traced"):
        lp, grad = t.log_prob_and_score(z)
    assert t.evaluation == "vmap"
    m = z[:, 0]
    assert_close(lp, dist.Normal(0.0, 1.0).log_prob(m) + 3 * dist.Normal(m, 1.0).log_prob(torch.zeros(())))
    assert_close(grad[:, 0], -m - 3 * m)


@pytest.mark.parametrize("mode", ["none", "trace"])
def test_compile_modes_agree(mode: str) -> None:
    t = from_pyro(eight_schools, Y, SIGMA, compile=mode)
    ref = EightSchools().to(torch.float64)
    z = torch.randn(8, 10, dtype=torch.float64)
    for _ in range(TRACE_AFTER + 1):
        lp, grad = t.log_prob_and_score(z)
    assert t.evaluation == ("vmap" if mode == "none" else "traced")
    assert_close(lp, ref.log_prob(z))
    assert_close(grad, ref.score(z))


def test_trace_simplifies_but_never_folds_random_operations() -> None:
    from fokker.targets._tracing import trace

    c = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)

    def fn(x):
        k = torch.log(c).exp() * 1.0 + 0.0  # constant: folded to c
        return (x * k).sum(-1) + torch.randn(x.shape[0], dtype=x.dtype)

    num = 4000
    gm = trace(fn, torch.zeros(num, 3, dtype=torch.float64))
    ops = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert not any("log" in o or "exp" in o for o in ops), ops  # the constant chain is gone
    assert sum("randn" in o for o in ops) == 1  # the random draw stays, once
    x = torch.ones(num, 3, dtype=torch.float64)
    a, b = gm(x) - 6.0, gm(x) - 6.0  # x . c = 6: what is left is the N(0, 1) noise, fresh at every call
    assert not torch.equal(a, b)
    for r in (a, b):
        assert abs(float(r.mean())) < Z_SCORE / math.sqrt(num)
        assert abs(float(r.std()) - 1.0) < Z_SCORE * math.sqrt(1 / (2 * num))


# --------------------------------------------------------------------- reparam, likelihood
def test_noncentered_reparam_turns_the_funnel_into_a_gaussian() -> None:
    def funnel():
        x0 = pyro.sample("x0", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 3.0))
        pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=torch.float64), torch.exp(x0 / 2)).expand([4]).to_event(1))

    t = from_pyro(funnel, reparam="noncentered")
    assert t.param_names == ["x0_decentered", "x_decentered"]
    z = torch.randn(10, 5, dtype=torch.float64)
    # every site becomes N(0, 1): the log density is the standard normal one
    assert_close(t.log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))
    c = t.constrain(z)
    assert_close(c["x0"], 3.0 * z[:, 0])
    assert_close(c["x"], torch.exp(c["x0"] / 2)[:, None] * z[:, 1:])
    with pytest.raises(ParameterError, match="reparam"):
        from_pyro(funnel, reparam="centred")
    with pytest.raises(ParameterError, match="compile"):
        from_pyro(funnel, compile="fast")


def test_log_likelihood_and_observed_sites() -> None:
    t = from_pyro(eight_schools, Y, SIGMA)
    z = torch.randn(3, 5, 10, dtype=torch.float64)
    ll = t.log_likelihood(z)
    assert set(ll) == {"y"} and ll["y"].shape == (3, 5, 8)
    theta = t.constrain(z)["theta"]
    assert_close(ll["y"], torch.distributions.Normal(theta, SIGMA).log_prob(Y))
    assert set(t.observed) == {"y"} and torch.equal(t.observed["y"], Y)
    # pyro.factor terms are not observations
    model, args = MODELS["factor_mixture"]
    mix = from_pyro(model, *args)
    assert mix.observed == {} and mix.log_likelihood(torch.zeros(2, mix.dim, dtype=torch.float64)) == {}


def test_model_errors_are_named() -> None:
    def raises(y):
        pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        raise KeyError("no column 'age'")

    with pytest.raises(ModelError, match="raises.*KeyError.*age"):
        from_pyro(raises, Y)

    def wishart():
        pyro.sample("S", dist.Wishart(df=torch.tensor(5.0, dtype=torch.float64),
                                      covariance_matrix=torch.eye(2, dtype=torch.float64)))

    with pytest.raises(ParameterError, match="'S'.*no bijection"):
        from_pyro(wishart)

    def raises_sometimes(y):
        m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        if float(m) > 1.0:  # Python control flow: evaluated point by point
            raise FloatingPointError("overflow in the user's ODE solver")
        pyro.sample("y", dist.Normal(m, 1.0), obs=y)

    t = from_pyro(raises_sometimes, torch.tensor(0.0, dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="falling back"), pytest.raises(ModelError, match="ODE solver"):
        t.log_prob_and_score(torch.tensor([[0.0], [2.0]], dtype=torch.float64))


def test_unconstrained_names_label_every_coordinate() -> None:
    t = from_pyro(eight_schools, Y, SIGMA)
    assert t.unconstrained_names == ["mu", "tau"] + [f"theta_trans[{i}]" for i in range(8)]
    model, args = MODELS["lkj"]
    t = from_pyro(model, *args)
    assert len(t.unconstrained_names) == t.dim and t.unconstrained_names[:3] == ["L[0]", "L[1]", "L[2]"]
