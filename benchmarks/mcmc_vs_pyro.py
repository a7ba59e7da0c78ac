"""Min bulk-ESS per second: fokker.mcmc HMC (many chains) vs Pyro NUTS (1 chain).

Run:  python benchmarks/mcmc_vs_pyro.py [--chains 64] [--draws 1000] [--warmup 1000] [--threads 1]

Posteriors:
* eight schools, non-centred (posteriordb data), as a Pyro model: Pyro NUTS samples
  the model; fokker samples ``from_pyro(model)`` (same Pyro log density, vmapped) and,
  for reference, the hand-written ``fokker.targets.EightSchools`` (analytic score);
* Neal's funnel in 10-D (scale 3): Pyro NUTS on the Pyro model, fokker on ``targets.Funnel(10)``.

ESS is the rank-normalized bulk ESS (Vehtari et al. 2021; invariant to monotone
reparameterizations, so constrained and unconstrained draws give the same number),
minimum over parameters; time is the wall time of warm-up plus sampling.
Pyro: ``NUTS()`` defaults, 1 chain, ``warmup`` + ``draws`` iterations.  fokker:
``HMC()`` defaults (Stan-style warm-up, dual averaging to 0.8, diagonal metric).
"""

from __future__ import annotations

import argparse
import time

import torch


def eight_schools_model(y, sigma):
    import pyro
    import pyro.distributions as dist

    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=y.dtype)))
    with pyro.plate("J", 8):
        tt = pyro.sample("theta_trans", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 1.0))
        pyro.sample("y", dist.Normal(mu + tau * tt, sigma), obs=y)


def funnel_model(dim: int = 10, scale: float = 3.0):
    import pyro
    import pyro.distributions as dist

    x0 = pyro.sample("x0", dist.Normal(torch.tensor(0.0, dtype=torch.float64), scale))
    pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=torch.float64), torch.exp(x0 / 2)).expand([dim - 1]).to_event(1))


def pyro_nuts(model, args, warmup: int, draws: int, seed: int = 0) -> tuple[float, float, float]:
    """(min bulk ESS, seconds, max R-hat=nan for 1 chain) of Pyro NUTS on ``model``."""
    import pyro
    from pyro.infer import MCMC, NUTS

    from fokker.mcmc import diagnostics as diag

    pyro.set_rng_seed(seed)
    mc = MCMC(NUTS(model), num_samples=draws, warmup_steps=warmup, num_chains=1, disable_progbar=True)
    t0 = time.perf_counter()
    mc.run(*args)
    secs = time.perf_counter() - t0
    s = mc.get_samples(group_by_chain=True)
    x = torch.cat([v.reshape(v.shape[0], v.shape[1], -1) for v in s.values()], -1).double()
    return float(diag.ess_bulk(x).min()), secs, float(diag.rhat(x).max())


def ours(target, chains: int, warmup: int, draws: int, seed: int = 0) -> tuple[float, float, float]:
    from fokker import mcmc

    t0 = time.perf_counter()
    res = mcmc.sample(target, mcmc.HMC(), num_chains=chains, num_samples=draws, warmup=warmup, seed=seed, progress=False)
    secs = time.perf_counter() - t0
    return float(res.ess_bulk().min()), secs, float(res.rhat().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, default=64)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-pyro", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from fokker import targets
    from fokker.targets import from_pyro
    from fokker.targets.eight_schools import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y

    y = torch.tensor(EIGHT_SCHOOLS_Y, dtype=torch.float64)
    sigma = torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=torch.float64)
    rows = []
    cases = [
        ("eight schools (nc)", "from_pyro", lambda: from_pyro(eight_schools_model, y, sigma), eight_schools_model, (y, sigma)),
        ("eight schools (nc)", "EightSchools", lambda: targets.EightSchools().to(torch.float64), None, None),
        ("funnel(10)", "Funnel", lambda: targets.Funnel(10).to(torch.float64), funnel_model, ()),
    ]
    pyro_done = {}
    for post, which, make, pmodel, pargs in cases:
        ess, secs, rh = ours(make(), a.chains, a.warmup, a.draws)
        if pmodel is not None and not a.skip_pyro and post not in pyro_done:
            pyro_done[post] = pyro_nuts(pmodel, pargs, a.warmup, a.draws)
        pe, ps, _ = pyro_done.get(post, (float("nan"), float("nan"), float("nan")))
        rows.append((post, which, ess, secs, ess / secs, rh, pe, ps, pe / ps, (ess / secs) / (pe / ps)))
        print(rows[-1], flush=True)
    print()
    print(f"fokker HMC: {a.chains} chains x ({a.warmup} warm-up + {a.draws}); Pyro NUTS: 1 chain x ({a.warmup} + {a.draws}); "
          f"torch threads = {a.threads}")
    print("| posterior | fokker target | fokker min bulk ESS | s | ESS/s | max R-hat | Pyro min bulk ESS | s | ESS/s | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.1f} | {r[4]:.0f} | {r[5]:.3f} | {r[6]:.0f} | {r[7]:.1f} | {r[8]:.1f} | {r[9]:.0f}x |")


if __name__ == "__main__":
    main()
