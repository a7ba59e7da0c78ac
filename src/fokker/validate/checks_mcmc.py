"""Validation of ``fokker.mcmc``: posteriordb posteriors through ``from_pyro``, and AIS/SMC log Z.

posteriordb (``shared/validation/posteriordb``): each posterior is written as a
Pyro model (:mod:`fokker.mcmc.posteriordb`), wrapped with ``from_pyro`` and
sampled with ``fokker.mcmc.sample(target, HMC())`` (default settings: Stan
warm-up, 1000 + 1000 iterations; quick mode: 300 + 300).  Per parameter:

* mean z-score ``(m - m_ref) / sqrt(mcse^2 + mcse_ref^2)`` (our MCSE from the
  ESS, the reference's from posteriordb);
* sd: relative error ``|sd - sd_ref| / sd_ref`` and its z-score: our error from
  the MCSE of the mean of ``(x - m)^2`` (``d sd = d var / (2 sd)``), the
  reference's as ``sd_ref / sqrt(2 ESS_ref)`` with ``ESS_ref = (sd_ref / mcse_ref)^2``.

Rows: max |z| of the means and of the sds (pass at ``Z_SCORE``), the max
relative sd error (informational bound 10%), max R-hat (< 1.01 full, 1.05 quick)
and the min bulk ESS (>= 400, the threshold of Vehtari et al. 2021, Sec. 4, below
which R-hat and MCSE are themselves unreliable).  The full per-parameter table goes
into the report's details.

log Z: AIS / SMC on Funnel(10), mog40 and ManyWell(32) against the exact log Z,
within 3 standard errors (the estimators return a :class:`~fokker.importance.LogZEstimate`;
its ESS, a fraction, is in the details).
"""

from __future__ import annotations

import copy
import math
import time

import torch

from .._random import rng_scope
from ..tolerances import Z_SCORE
from . import CheckResult, Context, register

_POSTERIORS = [
    "eight_schools_noncentered",
    "eight_schools_centered",
    "arK",
    "sblrc_blr",
    "low_dim_gauss_mix",
    "gp_pois_regr",
]
_QUICK = ["eight_schools_noncentered"]
#: Vehtari et al. (2021), Sec. 4: bulk ESS of at least 400 before trusting R-hat and the MCSE.
MIN_BULK_ESS = 400.0


def compare_to_reference(res, summary: dict) -> list[dict]:
    """Per-parameter comparison rows (see the module docstring)."""
    from ..mcmc import diagnostics as diag
    from ..mcmc.posteriordb import stan_name

    named = res.named_draws()
    rows = []
    for name, draws in named.items():
        sname = stan_name(name)
        if sname not in summary:
            continue
        ref = summary[sname]
        x = draws.index_select(0, res.good_chains).double().unsqueeze(-1)  # (C, N, 1)
        flat = x.reshape(-1)
        m, sd = float(flat.mean()), float(flat.std())
        mcse_m = float(diag.mcse_mean(x))
        r_m, r_sd = ref["mean"], ref["sd"]
        r_mcse_m = ref["posteriordb_mean_value_mcse"]
        z_mean = (m - r_m) / math.hypot(mcse_m, r_mcse_m)
        # sd errors: ours from the MCSE of the mean of the centred squares, d sd = d var / (2 sd);
        # the reference's from its effective size ESS_ref = (sd_ref / mcse_ref)^2 and the
        # normal-theory sd / sqrt(2 ESS_ref) (posteriordb gives no MCSE of the central moment)
        se_sd = float(diag.mcse_mean((x - m) ** 2)) / (2 * sd)
        ess_ref = (r_sd / r_mcse_m) ** 2
        se_sd_ref = r_sd / math.sqrt(2 * ess_ref)
        z_sd = (sd - r_sd) / math.hypot(se_sd, se_sd_ref)
        rows.append(
            {
                "param": sname,
                "mean": m,
                "ref_mean": r_m,
                "z_mean": z_mean,
                "sd": sd,
                "ref_sd": r_sd,
                "rel_sd_err": abs(sd - r_sd) / r_sd,
                "z_sd": z_sd,
                "ess_bulk": float(diag.ess_bulk(x)),
                "r_hat": float(diag.rhat(x)),
            }
        )
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'param':<14}{'mean':>11}{'ref':>11}{'z':>7}{'sd':>11}{'ref sd':>11}{'rel err':>9}{'z sd':>7}{'ESS':>8}{'R-hat':>7}"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['param']:<14}{r['mean']:>11.4g}{r['ref_mean']:>11.4g}{r['z_mean']:>7.2f}{r['sd']:>11.4g}"
            f"{r['ref_sd']:>11.4g}{r['rel_sd_err']:>9.3f}{r['z_sd']:>7.2f}{r['ess_bulk']:>8.0f}{r['r_hat']:>7.3f}"
        )
    return "\n".join(lines)


def run_posterior(name: str, quick: bool, seed: int = 0, num_chains: int | None = None):
    """Sample posterior ``name`` with default HMC; return (result, rows, seconds)."""
    import time

    from ..mcmc import HMC, sample
    from ..mcmc.posteriordb import load

    target, summary = load(name)
    n = 300 if quick else 1000
    chains = num_chains or (8 if quick else 16)
    t0 = time.perf_counter()
    res = sample(target, HMC(), num_chains=chains, num_samples=n, warmup=n, seed=seed, progress=False)
    return res, compare_to_reference(res, summary), time.perf_counter() - t0


def _posterior_check(name: str):
    def check(ctx: Context) -> list[CheckResult]:
        if ctx.quick and name not in _QUICK:
            return [CheckResult(name, "-", "-", "-", True, "skipped: full mode only")]
        res, rows, secs = run_posterior(name, ctx.quick, seed=ctx.seed)
        details = (
            f"{res.samples.shape[0]} chains x {res.samples.shape[1]} draws, {secs:.1f} s, "
            f"step size {float(torch.as_tensor(res.step_size).mean()):.3g}, "
            f"accept {float(res.accept_rate.mean()):.3f}, divergences {int(res.divergences.sum())}, "
            f"nan chains {res.nan_chains}\n" + format_rows(rows)
        )
        zmax = max(abs(r["z_mean"]) for r in rows)
        zsd = max(abs(r["z_sd"]) for r in rows)
        rel = max(r["rel_sd_err"] for r in rows)
        rh = max(r["r_hat"] for r in rows)
        ess = min(r["ess_bulk"] for r in rows)
        return [
            CheckResult.bound("max |z| posterior mean", zmax, Z_SCORE, details=details),
            CheckResult.bound("max |z| posterior sd", zsd, Z_SCORE),
            CheckResult.bound("max relative sd error", rel, 0.1),
            CheckResult.bound("max R-hat", rh, 1.05 if ctx.quick else 1.01),
            CheckResult.bound("min bulk ESS", ess, MIN_BULK_ESS, upper=False),
        ]

    return check


for _name in _POSTERIORS:
    register(f"mcmc.posteriordb.{_name}", group="mcmc", needs_data=True)(_posterior_check(_name))


@register("mcmc.log_z", group="mcmc")
def log_z_checks(ctx: Context) -> list[CheckResult]:
    """AIS / SMC log Z on ManyWell(32), mog40 and Funnel(10) within 3 standard errors; control: SMC without moves."""
    from torch.distributions import Independent, Normal

    from .. import targets
    from ..mcmc import AIS, HMC, MALA, SMC

    def iso(scales: torch.Tensor) -> Independent:
        return Independent(Normal(torch.zeros_like(scales), scales), 1)

    dt = torch.float64
    out = []
    cases = [
        ("SMC ManyWell(32)", SMC, targets.ManyWell(32).to(dt), iso(torch.full((32,), 2.0, dtype=dt)),
         lambda: HMC(step_size=0.2, num_steps=3), 64 if ctx.quick else 256, 1024, {}),
        ("AIS mog40", AIS, targets.mog40(dtype=dt), iso(torch.full((2,), 30.0, dtype=dt)),
         lambda: MALA(step_size=0.5), 32 if ctx.quick else 128, 512 if ctx.quick else 2048, {}),
    ]
    if not ctx.quick:
        cases += [
            ("AIS ManyWell(32)", AIS, targets.ManyWell(32).to(dt), iso(torch.full((32,), 2.0, dtype=dt)),
             lambda: HMC(step_size=0.2, num_steps=3), 1024, 2048, {"num_mcmc_steps": 2}),
            ("SMC mog40", SMC, targets.mog40(dtype=dt), iso(torch.full((2,), 30.0, dtype=dt)),
             lambda: MALA(step_size=0.5), 128, 2048, {}),
        ]
    for fcls in ((SMC, AIS) if not ctx.quick else (SMC,)):
        cases.append(
            (f"{fcls.__name__} Funnel(10)", fcls, targets.Funnel(10).to(dt), iso(torch.full((10,), 3.0, dtype=dt)),
             lambda: HMC(step_size=0.3, num_steps=5), 256 if ctx.quick else 512, 1024,
             {"num_mcmc_steps": 3, "step_size_spread": 3.0})
        )
    for label, cls, target, base, kern, K, N, kw in cases:
        res = cls(target, base, K, kernel=kern(), **kw).run(N, seed=ctx.seed, progress=False)
        z = (res.log_Z - target.log_Z) / res.stderr
        out.append(
            CheckResult.bound(
                f"{label} |log Z error| / SE",
                abs(z),
                3.0,
                details=f"log Z = {res.log_Z:.4f} +- {res.stderr:.4f} (true {target.log_Z:.4f}), "
                f"K = {K} temperatures, N = {N} particles, ESS = {res.ess:.3f} N",
            )
        )
    # control: the same SMC without MCMC moves (reweighting and resampling only) cannot reach log Z
    mw = targets.ManyWell(32).to(dt)
    bad = SMC(mw, iso(torch.full((32,), 2.0, dtype=dt)), 64, kernel=HMC(step_size=0.2, num_steps=3),
              num_mcmc_steps=0).run(1024, seed=ctx.seed, progress=False)
    out.append(CheckResult.bound("control: SMC ManyWell(32) without MCMC moves |log Z error| / SE",
                                 abs(bad.log_Z - mw.log_Z) / bad.stderr, 3.0, control=True,
                                 details=f"log Z = {bad.log_Z:.4f} +- {bad.stderr:.4f} (true {mw.log_Z:.4f})"))
    return out


@register("mcmc.adaptive_smc", group="mcmc")
def adaptive_smc_checks(ctx: Context) -> list[CheckResult]:
    """Adaptive-tempered SMC (Jasra et al. 2011; waste-free, Dau & Chopin 2022) log Z against the exact value.

    Rows: ``|log Z - truth| / SE`` within 3 on ManyWell(32) (quick), plus waste-free ManyWell(32) and
    mog40 (full); Funnel(10) (full) against a 0.5-nat quality tolerance beside the published SMC-512
    median -0.163 (Vargas et al. 2023; SMC is biased low on the funnel's neck); Ionosphere and Sonar
    (full, waste-free) within two published standard deviations of the published SMC-512 mean; LGCP
    pines127 (full) at least the published CMCD-256 mean minus two of its sd.  Control: the same
    sampler with no MCMC moves (resampling only: the particles degenerate) must be rejected.
    """
    from torch.distributions import Independent, Normal

    from .. import targets
    from ..mcmc import AdaptiveSMC

    def iso(dim: int, scale: float) -> Independent:
        z = torch.zeros(dim, dtype=torch.float64)
        return Independent(Normal(z, scale * torch.ones_like(z)), 1)

    mw = targets.ManyWell(32).to(torch.float64)
    cases = [("ManyWell(32)", mw, iso(32, 2.0), dict(num_mcmc_steps=4), 1024 if ctx.quick else 4096, False)]
    if not ctx.quick:
        cases += [
            ("ManyWell(32), waste-free", mw, iso(32, 2.0), dict(waste_free=True, chain_length=16), 4096, False),
            ("mog40", targets.mog40(dtype=torch.float64), iso(2, 30.0), dict(num_mcmc_steps=4), 4096, False),
            ("Funnel(10)", targets.Funnel(10).to(torch.float64), iso(10, 3.0),
             dict(num_mcmc_steps=10, step_size_spread=3.0, target_ess=0.9), 4096, True),
        ]
    rows = []
    for label, target, base, kw, n, funnel in cases:
        t0 = time.perf_counter()
        res = AdaptiveSMC(target, base, **({"target_ess": 0.8} | kw)).run(n, seed=ctx.seed, progress=False)
        err = res.log_Z - target.log_Z
        details = (f"log Z = {res.log_Z:.4f} +- {res.stderr:.4f} (true {target.log_Z:.4f}), {n} particles, "
                   f"temperatures per group {res.details['num_steps']}, {res.num_target_evals} target evaluations, "
                   f"{time.perf_counter() - t0:.1f} s")
        if funnel:
            rows.append(CheckResult.bound(f"AdaptiveSMC {label}: |log Z error| (published SMC-512: -0.163)", abs(err), 0.5,
                                          details=details))
        else:
            rows.append(CheckResult.bound(f"AdaptiveSMC {label}: |log Z error| / SE", abs(err) / res.stderr, 3.0,
                                          details=details))
    if not ctx.quick:  # Bayesian logistic regressions, from the N(0, I) prior, beside the published SMC-512
        for label, make, published in (("Ionosphere", targets.ionosphere, (-111.585, 0.19)),
                                       ("Sonar", targets.sonar, (-108.806, 0.486))):
            target = make(dtype=torch.float64)
            t0 = time.perf_counter()
            res = AdaptiveSMC(target, iso(target.dim, 1.0), target_ess=0.8, waste_free=True, chain_length=4).run(
                4096, seed=ctx.seed, progress=False)
            rows.append(CheckResult.compare(
                f"AdaptiveSMC (waste-free) {label}: log Z vs published SMC-512 +- 2 sd", res.log_Z, published[0],
                2 * published[1], details=f"+- {res.stderr:.4f}, temperatures per group {res.details['num_steps']}, "
                f"{time.perf_counter() - t0:.1f} s; published {published[0]} +- {published[1]} (Vargas et al. 2023)"))
    if not ctx.quick:  # LGCP on pines127 (d = 1600, whitened: same Z), against the published learned samplers
        from ..mcmc import HMC

        lgcp = targets.LGCP("pines127", whitened=True, dtype=torch.float64)
        t0 = time.perf_counter()
        res = AdaptiveSMC(lgcp, iso(lgcp.dim, 1.0), target_ess=0.5, waste_free=True, chain_length=8, num_groups=4,
                          kernel=HMC(step_size=0.2, num_steps=5, adapt_step_size=False, adapt_metric=False)).run(
            1024, seed=ctx.seed, progress=False)
        rows.append(CheckResult.bound(
            "AdaptiveSMC (waste-free) LGCP pines127: log Z >= published CMCD-256 - 2 sd (509.89 - 4.60)", res.log_Z,
            509.89 - 2 * 2.30, upper=False,
            details=f"log Z = {res.log_Z:.3f} +- {res.stderr:.3f} (4 groups of 256), temperatures per group "
            f"{res.details['num_steps']}, {time.perf_counter() - t0:.0f} s; published: CMCD-256 509.89 +- 2.30, "
            f"UHA 511.66 +- 0.72, PIS-512 506.34 +- 0.62, DDS-512 503.01 +- 0.76, SMC-512 504.16 +- 2.82"))
    bad = AdaptiveSMC(mw, iso(32, 2.0), target_ess=0.8, num_mcmc_steps=0).run(1024, seed=ctx.seed, progress=False)
    rows.append(CheckResult.bound(
        "control: AdaptiveSMC ManyWell(32) without MCMC moves (degenerate particles): |log Z error| / SE",
        abs(bad.log_Z - mw.log_Z) / bad.stderr, 3.0, control=True,
        details=f"log Z = {bad.log_Z:.4f} +- {bad.stderr:.4f} (true {mw.log_Z:.4f})"))
    return rows


@register("mcmc.neutra", group="mcmc")
def neutra_checks(ctx: Context) -> list[CheckResult]:
    """A flow fitted to Funnel(10) by reverse KL (``flows.fit_to_target``) and NeuTra-HMC through it.

    Rows: the fitted flow's importance-sampling log Z within 0.1 nats of 0 (the issue's goal for the
    funnel is |median| < 0.05); NeuTra-HMC's mass of the neck ``P(x0 < -3) = Phi(-1) = 0.159`` within 0.05
    (its Monte-Carlo error, from the bulk ESS of x0, in the details) and max R-hat <= 1.05.  Controls: the same metrics through the
    untrained flow (a random transport), which must be rejected.  Figure: histograms of x0.
    """
    from .. import flows, targets
    from ..mcmc import HMC, neutra

    target = targets.Funnel(10).to(torch.float64)
    steps, chains, draws = (600, 8, 150) if ctx.quick else (3000, 16, 1000)
    with rng_scope(seed=ctx.seed):
        flow = flows.realnvp(10, transforms=4 if ctx.quick else 6, hidden=(32, 32) if ctx.quick else (64, 64)).double()
        untrained = copy.deepcopy(flow)
    t0 = time.perf_counter()
    est = flows.fit_to_target(flow, target, steps, lr=3e-3 if ctx.quick else 1e-3, batch_size=256, seed=ctx.seed,
                              progress=False)
    fit_s = time.perf_counter() - t0
    est0 = flows.fit_to_target(untrained, target, 0, seed=ctx.seed, num_samples=4096, progress=False)
    p = 0.5 * math.erfc(1 / math.sqrt(2))
    rows = [
        CheckResult.compare("fitted flow (reverse KL), Funnel(10): IS log Z", est.log_Z, 0.0, 0.1,
                            details=f"+- {est.stderr:.4f}, ESS {est.ess:.3f}, ELBO {est.elbo:.4f}, {steps} iterations x 256, "
                            f"{fit_s:.1f} s"),
        CheckResult.compare("control: untrained flow, Funnel(10): IS log Z", est0.log_Z, 0.0, 0.1, control=True,
                            details=f"+- {est0.stderr:.4f}, ESS {est0.ess:.4f}"),
    ]
    runs = {}
    for label, fl in (("NeuTra-HMC", flow), ("control: NeuTra-HMC through the untrained flow", untrained)):
        t0 = time.perf_counter()
        res = neutra(target, fl, HMC(num_steps=4), num_chains=chains, num_samples=draws, warmup=draws,
                     seed=ctx.seed, progress=False)
        x0 = res.samples[..., 0]
        ess = float(res.ess_bulk()[0])
        neck = float((x0 < -3).double().mean())
        mcse = math.sqrt(p * (1 - p) / max(ess, 1.0))
        control = label.startswith("control")
        info = (f"MCSE {mcse:.4f} from the bulk ESS(x0) {ess:.0f}, mean x0 {float(x0.mean()):.3f}, "
                f"sd x0 {float(x0.std()):.3f} (exact 0, 3), divergences {int(res.divergences.sum())}, "
                f"{chains} chains x {draws} + {draws}, {time.perf_counter() - t0:.1f} s")
        rows.append(CheckResult.compare(f"{label}, Funnel(10): mass of the neck P(x0 < -3)", neck, p, 0.05,
                                        control=control, details=info))
        rows.append(CheckResult.bound(f"{label}, Funnel(10): max R-hat", float(res.rhat().max()), 1.05, control=control))
        runs[label] = x0.reshape(-1)
    _plot_funnel_x0(ctx.figure("mcmc_neutra_funnel_x0.png",
                               "Funnel(10): histogram of x0 from NeuTra-HMC through the fitted flow and through the "
                               "untrained flow, against the exact N(0, 9) density; the neck is x0 < -3 (mass 0.159)"),
                    runs)
    return rows


def _plot_funnel_x0(path, runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    grid = torch.linspace(-10, 10, 400, dtype=torch.float64)
    ax.plot(grid, torch.exp(-0.5 * (grid / 3) ** 2) / (3 * math.sqrt(2 * math.pi)), "k-", label="exact N(0, 9)")
    for label, x0 in runs.items():
        ax.hist(x0.clamp(-10, 10).numpy(), bins=60, range=(-10, 10), density=True, histtype="step", label=label[:48])
    ax.axvline(-3, color="grey", ls=":")
    ax.set_xlabel("x0")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
