"""Min bulk ESS per second: fokker.mcmc (many chains) vs NumPyro NUTS (4 chains, and 64 vectorized chains).

Run:  python benchmarks/mcmc_vs_numpyro.py [--quick] [--only NAME,NAME] [--kernels default,HMC,NUTS,ChEESHMC]
                                           [--chains 64] [--warmup 1000] [--draws 1000] [--skip-numpyro]
                                           [--threads 1] [--fokker-targets LABEL,LABEL]

Posteriors (the same model in both libraries, float64):
* eight schools, non-centred: fokker samples the Pyro model through ``from_pyro`` and the
  hand-written ``targets.EightSchools``;
* Neal's funnel in 10-D (scale 3): centred (``targets.Funnel`` and NumPyro's model as written)
  and non-centred (``from_pyro(model, reparam="noncentered")`` and NumPyro's
  ``LocScaleReparam(0)``), the documented way to sample it;
* the six posteriordb posteriors of ``shared/validation/posteriordb`` (``fokker.mcmc.posteriordb``
  Pyro models, NumPyro models written here from the same Stan programs).

One ESS function for every row: ArviZ's rank-normalized bulk ESS (``az.ess(method="bulk")``,
Vehtari et al. 2021), minimum over the latent sites' scalar components, and ArviZ's R-hat
(maximum).  Time is the wall time of warm-up plus sampling as a user sees it (NumPyro's JIT
compilation included; fokker's graph tracing included).  NumPyro: ``NUTS()`` defaults,
4 chains run one after the other (``chain_method="sequential"``) and 64 chains vectorized.
fokker: ``fokker.mcmc.sample`` with ``--chains`` chains and each kernel's defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore", category=FutureWarning)

#: posteriors also run with ``from_pyro(..., compile="inductor")`` (64 chains x 1000 observations of a
#: two-component mixture: 43 ms per evaluation traced, 17.5 ms compiled, after a ~30 s compilation)
COMPILED = ["low_dim_gauss_mix"]


# ----------------------------------------------------------------------------- the ESS function
def ess_rhat(draws: dict[str, np.ndarray]) -> tuple[float, float]:
    """(min bulk ESS, max R-hat) over every scalar component of ``{name: (chains, draws, ...)}``, by ArviZ."""
    import arviz as az

    ds = az.convert_to_dataset({k: np.asarray(v, dtype=np.float64) for k, v in draws.items()})
    ess = az.ess(ds, method="bulk")
    rhat = az.rhat(ds)
    return (float(min(np.nanmin(ess[k].values) for k in draws)), float(max(np.nanmax(rhat[k].values) for k in draws)))


# ----------------------------------------------------------------------------- NumPyro models
def numpyro_models() -> dict:
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd
    from numpyro.distributions import constraints

    def eight_schools(y, sigma, centered=False):
        mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
        with numpyro.plate("J", y.shape[-1]):
            if centered:
                theta = numpyro.sample("theta", nd.Normal(mu, tau))
            else:
                tt = numpyro.sample("theta_trans", nd.Normal(0.0, 1.0))
                theta = numpyro.deterministic("theta", mu + tau * tt)
            numpyro.sample("y", nd.Normal(theta, sigma), obs=y)

    def ark(y, K):
        T = y.shape[-1]
        alpha = numpyro.sample("alpha", nd.Normal(0.0, 10.0))
        beta = numpyro.sample("beta", nd.Normal(0.0, 10.0).expand([K]).to_event(1))
        sigma = numpyro.sample("sigma", nd.HalfCauchy(2.5))
        lags = jnp.stack([y[K - k - 1 : T - k - 1] for k in range(K)], -1)
        with numpyro.plate("T", T - K):
            numpyro.sample("y", nd.Normal(alpha + lags @ beta, sigma), obs=y[K:])

    def blr(X, y):
        beta = numpyro.sample("beta", nd.Normal(0.0, 10.0).expand([X.shape[-1]]).to_event(1))
        sigma = numpyro.sample("sigma", nd.HalfNormal(10.0))
        with numpyro.plate("N", X.shape[0]):
            numpyro.sample("y", nd.Normal(X @ beta, sigma), obs=y)

    def low_dim_gauss_mix(y):
        mu = numpyro.sample("mu", nd.ImproperUniform(constraints.ordered_vector, (), (2,)))
        numpyro.factor("mu_prior", nd.Normal(0.0, 2.0).log_prob(mu).sum(-1))
        sigma = numpyro.sample("sigma", nd.HalfNormal(2.0).expand([2]).to_event(1))
        theta = numpyro.sample("theta", nd.Beta(5.0, 5.0))
        mix = nd.MixtureSameFamily(nd.Categorical(probs=jnp.stack([theta, 1 - theta], -1)), nd.Normal(mu, sigma))
        with numpyro.plate("N", y.shape[-1]):
            numpyro.sample("y", mix, obs=y)

    def gp_pois_regr(x, k):
        n = x.shape[-1]
        rho = numpyro.sample("rho", nd.Gamma(25.0, 4.0))
        alpha = numpyro.sample("alpha", nd.HalfNormal(2.0))
        f_tilde = numpyro.sample("f_tilde", nd.Normal(0.0, 1.0).expand([n]).to_event(1))
        d2 = (x[:, None] - x[None, :]) ** 2
        cov = alpha**2 * jnp.exp(-d2 / (2 * rho**2)) + 1e-10 * jnp.eye(n)
        f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
        with numpyro.plate("N", n):
            numpyro.sample("k", nd.Poisson(jnp.exp(f)), obs=k)

    def funnel(dim=10, scale=3.0):
        x0 = numpyro.sample("x0", nd.Normal(0.0, scale))
        numpyro.sample("x", nd.Normal(0.0, jnp.exp(x0 / 2)).expand([dim - 1]).to_event(1))

    return {"eight_schools": eight_schools, "arK": ark, "blr": blr, "low_dim_gauss_mix": low_dim_gauss_mix,
            "gp_pois_regr": gp_pois_regr, "funnel": funnel}


def run_numpyro(model, args: tuple, kwargs: dict, latent: list[str], chains: int, method: str, warmup: int,
                draws: int, seed: int = 0) -> dict:
    import jax
    from numpyro.infer import MCMC, NUTS

    mc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, num_chains=chains, chain_method=method,
              progress_bar=False)
    t0 = time.perf_counter()
    mc.run(jax.random.PRNGKey(seed), *args, **kwargs)
    samples = mc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    secs = time.perf_counter() - t0
    ess, rhat = ess_rhat({k: np.asarray(samples[k]) for k in latent})
    div = int(np.asarray(mc.get_extra_fields(group_by_chain=True)["diverging"]).sum())
    return {"ess": ess, "s": secs, "rhat": rhat, "div": div}


# ----------------------------------------------------------------------------- fokker
def run_fokker(target, kernel_name: str, latent: list[str] | None, chains: int, warmup: int, draws: int,
               seed: int = 0) -> dict:
    from fokker import mcmc

    kernel = None if kernel_name == "default" else getattr(mcmc, kernel_name)()
    t0 = time.perf_counter()
    res = mcmc.sample(target, kernel, num_chains=chains, num_samples=draws, warmup=warmup, seed=seed, progress=False)
    secs = time.perf_counter() - t0
    keep = res.good_chains
    if res.constrained is not None:
        names = latent or list(res.constrained)
        draws_np = {k: res.constrained[k].index_select(0, keep).cpu().numpy() for k in names}
    else:
        draws_np = {"x": res.samples.index_select(0, keep).cpu().numpy()}
    ess, rhat = ess_rhat(draws_np)
    return {"ess": ess, "s": secs, "rhat": rhat, "div": int(res.divergences.sum()),
            "kernel": type(res.kernel).__name__, "nan_chains": len(res.nan_chains)}


# ----------------------------------------------------------------------------- the posteriors
def cases(quick: bool) -> list[dict]:
    """Each case: name, fokker targets (label -> factory), NumPyro model/args, latent site names."""
    import jax.numpy as jnp

    from fokker import targets
    from fokker.data import data_file
    from fokker.mcmc import posteriordb as pdb
    from fokker.targets import from_pyro

    nm = numpyro_models()
    out = []

    def pdb_data(name: str) -> dict:
        return json.loads(open(data_file("posteriordb", pdb.POSTERIORS[name].folder, "data.json")).read())

    def funnel_pyro(dim: int = 10, scale: float = 3.0) -> None:
        import pyro
        import pyro.distributions as dist

        x0 = pyro.sample("x0", dist.Normal(torch.tensor(0.0, dtype=torch.float64), scale))
        pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=torch.float64), torch.exp(x0 / 2)).expand([dim - 1]).to_event(1))

    d = pdb_data("eight_schools_noncentered")
    y, sigma = jnp.asarray(d["y"], dtype=jnp.float64), jnp.asarray(d["sigma"], dtype=jnp.float64)
    out.append({
        "name": "eight schools (nc)",
        "fokker": {"from_pyro": lambda: pdb.load("eight_schools_noncentered")[0],
                   "EightSchools": lambda: targets.EightSchools().to(torch.float64)},
        "numpyro": (nm["eight_schools"], (y, sigma), {"centered": False}),
        "latent": ["mu", "tau", "theta_trans"],
    })
    out.append({
        "name": "funnel(10) centred",
        "fokker": {"Funnel": lambda: targets.Funnel(10, scale=3.0).to(torch.float64)},
        "numpyro": (nm["funnel"], (), {}),
        "latent": ["x0", "x"],
    })
    out.append({
        "name": "funnel(10) non-centred",
        "fokker": {"from_pyro reparam": lambda: from_pyro(funnel_pyro, reparam="noncentered")},
        "numpyro": (_numpyro_noncentered(nm["funnel"]), (), {}),
        "latent": ["x0", "x"],
    })
    for name in pdb.POSTERIORS:
        post = pdb.POSTERIORS[name]
        d = pdb_data(name)
        if name.startswith("eight_schools"):
            args, kw, model = (jnp.asarray(d["y"], dtype=jnp.float64), jnp.asarray(d["sigma"], dtype=jnp.float64)), post.kwargs, nm["eight_schools"]
        elif name == "arK":
            args, kw, model = (jnp.asarray(d["y"], dtype=jnp.float64), int(d["K"])), {}, nm["arK"]
        elif name == "sblrc_blr":
            args, kw, model = (jnp.asarray(d["X"], dtype=jnp.float64), jnp.asarray(d["y"], dtype=jnp.float64)), {}, nm["blr"]
        elif name == "low_dim_gauss_mix":
            args, kw, model = (jnp.asarray(d["y"], dtype=jnp.float64),), {}, nm["low_dim_gauss_mix"]
        else:
            args, kw, model = (jnp.asarray(d["x"], dtype=jnp.float64), jnp.asarray(d["k"], dtype=jnp.float64)), {}, nm["gp_pois_regr"]
        target = pdb.load(name, reparam=None)[0]  # the model's own latent sites name the ESS (as NumPyro's)
        fk = {"from_pyro": (lambda n=name: pdb.load(n)[0])}
        if name in COMPILED:  # an expensive potential: torch.compile's fused kernels pay their compile time
            fk["from_pyro compile='inductor'"] = (
                lambda p=post, dd=d: from_pyro(p.model, *p.args(dd), compile="inductor", **p.kwargs))
        out.append({
            "name": f"posteriordb {name}",
            "fokker": fk,
            "numpyro": (model, args, kw),
            "latent": list(target.param_names),
        })
    return out


def _numpyro_noncentered(model):
    from numpyro.handlers import reparam
    from numpyro.infer.reparam import LocScaleReparam

    return reparam(model, config={"x0": LocScaleReparam(0), "x": LocScaleReparam(0)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="200 warm-up + 200 draws (for development)")
    p.add_argument("--only", default=None, help="comma-separated substrings of the posterior names to run")
    p.add_argument("--kernels", default="default", help="comma-separated fokker kernels (default = sample()'s)")
    p.add_argument("--chains", type=int, default=64)
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 1000, --quick 200)")
    p.add_argument("--draws", type=int, default=None, help="draws per chain (default 1000, --quick 200)")
    p.add_argument("--skip-numpyro", action="store_true")
    p.add_argument("--fokker-targets", default=None,
                   help="comma-separated substrings of the fokker rows' target labels to run (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and XLA (default: as the environment says; 1 on a shared machine)")
    a = p.parse_args()
    warmup = draws = 200 if a.quick else 1000
    warmup = warmup if a.warmup is None else a.warmup
    draws = draws if a.draws is None else a.draws
    if a.threads is not None:
        torch.set_num_threads(a.threads)
        if a.threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import numpyro

    numpyro.enable_x64()
    numpyro.set_platform("cpu")
    rows = []
    for case in cases(a.quick):
        if a.only and not any(o in case["name"] for o in a.only.split(",")):
            continue
        np_rows = {}
        if not a.skip_numpyro:
            model, args, kw = case["numpyro"]
            for label, chains, method in (("NumPyro NUTS 4 chains", 4, "sequential"), ("NumPyro NUTS 64 chains", 64, "vectorized")):
                r = run_numpyro(model, args, kw, case["latent"], chains, method, warmup, draws)
                np_rows[label] = r
                rows.append((case["name"], label, r, None))
                print(rows[-1], flush=True)
        ref = np_rows.get("NumPyro NUTS 64 chains")
        for label, make in case["fokker"].items():
            if a.fokker_targets and not any(t in label for t in a.fokker_targets.split(",")):
                continue
            for kname in a.kernels.split(","):
                target = make()
                latent = case["latent"] if hasattr(target, "constrain") and label != "EightSchools" else None
                if label == "EightSchools":
                    latent = ["mu", "tau", "theta"]
                r = run_fokker(target, kname, latent, a.chains, warmup, draws)
                rows.append((case["name"], f"fokker {r['kernel']} {a.chains} chains, {label}", r, ref))
                print(rows[-1], flush=True)
    print()
    print(f"{warmup} warm-up + {draws} draws per chain; ESS = ArviZ bulk ESS (min over latent components); "
          f"R-hat = ArviZ (max); time = warm-up + sampling wall time; torch threads = {torch.get_num_threads()}")
    print("| posterior | sampler | min bulk ESS | s | ESS/s | max R-hat | divergences | vs NumPyro 64 chains |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label, r, ref in rows:
        ratio = "" if ref is None else f"{(r['ess'] / r['s']) / (ref['ess'] / ref['s']):.2f}x"
        print(f"| {name} | {label} | {r['ess']:.0f} | {r['s']:.1f} | {r['ess'] / r['s']:.0f} | {r['rhat']:.3f} | "
              f"{r['div']} | {ratio} |")


if __name__ == "__main__":
    main()
