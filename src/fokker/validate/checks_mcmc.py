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
into the report's details.  Control (:class:`UnadjustedHMC`): HMC without its accept step
must fail those rows (the worst of max |z| / ``Z_SCORE`` and max relative sd error / 0.1
above 1); for a posterior that ``from_pyro``'s default VIP rewrote (centred eight schools)
a second control, the model as written, must fail the R-hat row.

log Z: AIS / SMC on Funnel(10), mog40 and ManyWell(32) against the exact log Z,
within 3 standard errors (the estimators return a :class:`~fokker.importance.LogZEstimate`;
its ESS, a fraction, is in the details).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from typing import Any

import torch

from .._random import rng_scope
from ..errors import ConvergenceWarning
from ..mcmc.posteriordb import POSTERIORS
from ..tolerances import Z_SCORE
from . import CheckResult, Context, register

_QUICK = ["eight_schools_noncentered"]
#: Vehtari et al. (2021), Sec. 4: bulk ESS of at least 400 before trusting R-hat and the MCSE.
MIN_BULK_ESS = 400.0
#: divergent transitions are reported; above this fraction the draws are not trusted either
MAX_DIVERGENT_FRACTION = 0.05


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


def run_posterior(name: str, quick: bool, seed: int = 0, num_chains: int | None = None, reparam: Any = "auto"):
    """Sample posterior ``name`` with the default kernel of :func:`fokker.mcmc.sample`; return (result, rows, seconds).
    ``reparam`` goes to ``from_pyro`` (``None``: the model as written)."""

    from ..mcmc import sample
    from ..mcmc.posteriordb import load

    target, summary = load(name, reparam=reparam)
    n = 300 if quick else 1000
    chains = num_chains or (8 if quick else 16)
    t0 = time.perf_counter()
    res = sample(target, None, num_chains=chains, num_samples=n, warmup=n, seed=seed, progress=False)
    return res, compare_to_reference(res, summary), time.perf_counter() - t0


#: the control's leapfrog step in units whitened by the posterior's own spread: unadjusted, on a Gaussian it
#: samples a variance 1 / (1 - h^2 / 4) = 1.56 times too large
_CONTROL_STEP = 1.2


class UnadjustedHMC:
    """Negative control: HMC with its Metropolis-Hastings step removed (every finite proposal accepted).

    The metric is the posterior variance of the real run's draws and the step size :data:`_CONTROL_STEP` in those
    whitened units, so the control is equally wrong whatever the warm-up adapted (a doubled adapted step was not:
    on low_dim_gauss_mix, whose warm-up keeps a small step, its bias went unseen under another thread count).
    Leapfrog's energy error is never corrected, so the chains sample a distorted distribution (inflated spread).
    """

    @staticmethod
    def make(adapted, draws: torch.Tensor):
        from ..mcmc import HMC, State

        class _Unadjusted(HMC):
            def accept_reject(self, state, proposal, log_ratio, num_steps, step_size, energy=False, extra=None):
                finite = torch.isfinite(log_ratio) & torch.isfinite(proposal.grad).all(-1)
                f2 = finite.unsqueeze(-1)
                new = State(torch.where(f2, proposal.x, state.x), torch.where(finite, proposal.log_prob, state.log_prob),
                            torch.where(f2, proposal.grad, state.grad))
                ones = torch.ones_like(log_ratio)
                return new, self.step_info(ones, finite, torch.zeros_like(log_ratio), ~finite, num_steps, step_size)

        flat = draws.reshape(-1, draws.shape[-1])
        inv_mass = torch.cov(flat.T).reshape(flat.shape[-1], -1) if adapted.dense else flat.var(0)
        kernel = _Unadjusted(step_size=_CONTROL_STEP, metric=inv_mass, adapt_step_size=False)
        kernel.trajectory_length = copy.copy(getattr(adapted, "trajectory_length", 2.0)) or 2.0
        return kernel


def control_rows(res, summary: dict, seed: int) -> list[dict]:
    """The comparison rows for draws of :class:`UnadjustedHMC` started at the real run's last draws."""
    from ..mcmc import sample

    kernel = UnadjustedHMC.make(res.kernel, res.samples.index_select(0, res.good_chains))
    init = res.samples[:, -1].index_select(0, res.good_chains)[:8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        wrong = sample(res.target, kernel, num_chains=init.shape[0], num_samples=500, warmup=0, init=init,
                       seed=seed + 1, progress=False)
    return compare_to_reference(wrong, summary)


def _rank_plot(res, ctx: Context, name: str) -> None:
    """Rank plots of the first few parameters (ArviZ; skipped when it is not installed)."""
    try:
        import arviz  # noqa: F401
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = None
    if res.constrained is not None:  # the scalar sites (at most 3), else the first site
        c, n = res.samples.shape[:2]
        scalars = [k for k, v in res.constrained.items() if v.shape == (c, n)]
        names = scalars[:3] or list(res.constrained)[:1]
    fig = res.plot("rank", var_names=names)
    fig.savefig(ctx.figure(f"mcmc_posteriordb_{name}_rank.png",
                           f"posteriordb {name}: rank plots per chain of {', '.join(names or ['x'])} (uniform when the chains "
                           "mix; Vehtari et al. 2021)"),
                bbox_inches="tight")
    plt.close(fig)


def _posterior_check(name: str):
    def check(ctx: Context) -> list[CheckResult]:
        if ctx.quick and name not in _QUICK:
            return [CheckResult(name, "-", "-", "-", True, "skipped: full mode only")]
        from ..mcmc.posteriordb import load

        res, rows, secs = run_posterior(name, ctx.quick, seed=ctx.seed)
        _, summary = load(name)
        wrong = control_rows(res, summary, ctx.seed)
        divergent = int(res.divergences.sum())
        draws = res.samples.shape[0] * res.samples.shape[1]
        details = (
            f"{type(res.kernel).__name__}: {res.samples.shape[0]} chains x {res.samples.shape[1]} draws, {secs:.1f} s, "
            f"step size {float(torch.as_tensor(res.step_size).mean()):.3g}, "
            f"accept {float(res.accept_rate.mean()):.3f}, divergent transitions {divergent} of {draws}, "
            f"nan chains {res.nan_chains}\n" + format_rows(rows)
            + f"\n\ncontrol (HMC without its accept step, step {_CONTROL_STEP} in units of the posterior spread, 8 chains x "
            "500 draws):\n" + format_rows(wrong)
        )
        zmax = max(abs(r["z_mean"]) for r in rows)
        zsd = max(abs(r["z_sd"]) for r in rows)
        rel = max(r["rel_sd_err"] for r in rows)
        rh = max(r["r_hat"] for r in rows)
        ess = min(r["ess_bulk"] for r in rows)
        # the control fails the same rows the run passes: the mean and sd z-scores and the relative sd error (a
        # heavy-tailed wrong sampler has an sd MCSE as wide as its error, so the z-score alone can miss it)
        z_wrong = max(max(abs(r["z_mean"]), abs(r["z_sd"])) / Z_SCORE for r in wrong)
        z_wrong = max(z_wrong, max(r["rel_sd_err"] for r in wrong) / 0.1)
        _rank_plot(res, ctx, name)
        controls = [CheckResult.bound("HMC without accept step: worst of max |z| / 4 and max relative sd error / 0.1",
                                      z_wrong, 1.0, control=True)]
        rewritten = getattr(res.target, "centeredness", {})
        if rewritten:
            # VIP rewrote the model (from_pyro's default reparam="auto"): a second control, the model as written,
            # whose funnel the default sampler does not cross, shows the rows see what the rewrite fixed
            c_text = ", ".join(f"{k}: {float(v.mean()):.3f}" for k, v in rewritten.items())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                as_written, _, _ = run_posterior(name, ctx.quick, seed=ctx.seed, reparam=None)
            controls.append(CheckResult.bound("max R-hat, the model as written (reparam=None)",
                                              float(as_written.rhat().max()), 1.05 if ctx.quick else 1.01, control=True,
                                              details=f"VIP centredness (mean per site) {c_text}; as written: "
                                                      f"{int(as_written.divergences.sum())} divergent transitions"))
        return [
            CheckResult.bound("max |z| posterior mean", zmax, Z_SCORE, details=details),
            CheckResult.bound("max |z| posterior sd", zsd, Z_SCORE),
            CheckResult.bound("max relative sd error", rel, 0.1),
            CheckResult.bound("max R-hat", rh, 1.05 if ctx.quick else 1.01),
            CheckResult.bound("min bulk ESS", ess, MIN_BULK_ESS, upper=False),
            CheckResult.bound("fraction of divergent transitions", divergent / draws, MAX_DIVERGENT_FRACTION,
                              details=f"{divergent} divergent transitions of {draws}"),
            *controls,
        ]

    return check


for _name in POSTERIORS:  # the six posteriordb posteriors with reference draws
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
    # control: AIS with 4 temperatures instead of 1024 (each step leaves the kernel far from its
    # annealed target): a biased estimate whose standard error does not cover the bias
    cases.append(("AIS ManyWell(32), 4 temperatures (control)", AIS, targets.ManyWell(32).to(dt),
                  iso(torch.full((32,), 2.0, dtype=dt)), lambda: HMC(step_size=0.2, num_steps=3), 4, 1024, {}))
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
                control="(control)" in label,
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


# ----------------------------------------------------------------------------- Neal's funnel
#: the documented configuration for funnels: the Pyro model through ``from_pyro`` with Pyro's
#: ``LocScaleReparam(0)`` on both sites (non-centred), sampled with the default kernel of ``sample``
FUNNEL_DIM, FUNNEL_SCALE = 10, 3.0
#: E log|x_i| = E[x0] / 2 + E log|N(0, 1)| = -(Euler's gamma + log 2) / 2, Var = scale^2 / 4 + pi^2 / 8
LOG_ABS_NORMAL_MEAN = -(0.5772156649015329 + math.log(2.0)) / 2


def funnel_model(dim: int = FUNNEL_DIM, scale: float = FUNNEL_SCALE) -> None:
    """Neal's funnel as a Pyro model: ``x0 ~ N(0, scale)``, ``x_i | x0 ~ N(0, exp(x0 / 2))``, i < dim."""
    import pyro
    import pyro.distributions as dist

    zero = torch.tensor(0.0, dtype=torch.float64)
    x0 = pyro.sample("x0", dist.Normal(zero, scale))
    pyro.sample("x", dist.Normal(zero, torch.exp(x0 / 2)).expand([dim - 1]).to_event(1))


def funnel_rows(res) -> dict[str, float]:
    """Max R-hat, min bulk ESS over the model's sites (x0, x_i), and the max |z| of three exact moments.

    Exact: E x0 = 0, sd x0 = ``scale``, E log|x_i| = -(gamma + log 2) / 2 (the last one sees the
    neck: chains that do not enter it over-state log|x_i|). z-scores use the MCSE of each mean
    (the sd's by the centred squares, as :func:`compare_to_reference`).
    """
    from ..mcmc import diagnostics as diag

    keep = res.good_chains
    x0 = res.constrained["x0"].index_select(0, keep).double()  # (C, N)
    x = res.constrained["x"].index_select(0, keep).double()  # (C, N, dim - 1)
    sites = torch.cat([x0.unsqueeze(-1), x], -1)
    rhat, ess = float(diag.rhat(sites).max()), float(diag.ess_bulk(sites).min())
    m0 = x0.mean()
    z_mean = float(m0 / diag.mcse_mean(x0.unsqueeze(-1)))
    sd0 = x0.reshape(-1).std()
    z_sd = float((sd0 - FUNNEL_SCALE) / (diag.mcse_mean(((x0 - m0) ** 2).unsqueeze(-1)) / (2 * sd0)))
    log_abs = torch.log(x.abs())
    z_log = (log_abs.mean((0, 1)) - LOG_ABS_NORMAL_MEAN) / diag.mcse_mean(log_abs)
    return {"rhat": rhat, "ess": ess, "z": max(abs(z_mean), abs(z_sd), float(z_log.abs().max())),
            "x0_sd": float(sd0), "divergent": int(res.divergences.sum())}


def _funnel_plot(ctx: Context, res, res_c) -> None:
    """Histograms of x0 (non-centred and centred runs) against the exact N(0, scale^2) density."""
    runs = {f"{title}: R-hat {float(funnel_rows(r)['rhat']):.3f}": r.constrained["x0"].reshape(-1)
            for r, title in ((res, "non-centred (LocScaleReparam)"), (res_c, "centred (control)"))}
    _plot_funnel_x0(ctx.figure("mcmc_funnel_x0.png", "Neal's funnel (10-D): histogram of x0 from sample()'s default "
                               "kernel, non-centred (left) and centred (right, the control), against the exact N(0, 9) "
                               "density; the centred chains miss the neck (x0 < -3)"), runs)


@register("mcmc.funnel", group="mcmc")
def funnel_checks(ctx: Context) -> list[CheckResult]:
    """Neal's funnel (10-D, scale 3) non-centred through ``from_pyro(reparam=LocScaleReparam)``: R-hat, ESS, moments;
    the same rows for the model as written through ``from_pyro``'s default VIP rewrite.

    Control: the same model centred (``reparam=None``) with the same kernel, which cannot
    enter the neck: its R-hat and moment z-scores must reject it.
    """
    from pyro.infer.reparam import LocScaleReparam

    from ..mcmc import sample
    from ..targets import from_pyro

    n = 500 if ctx.quick else 1000
    chains = 64
    nc = from_pyro(funnel_model, reparam={"x0": LocScaleReparam(0.0), "x": LocScaleReparam(0.0)})
    t0 = time.perf_counter()
    res = sample(nc, None, num_chains=chains, num_samples=n, warmup=n, seed=ctx.seed, progress=False)
    secs = time.perf_counter() - t0
    good = funnel_rows(res)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        n_c = 300 if ctx.quick else 1000
        res_c = sample(from_pyro(funnel_model, reparam=None), None, num_chains=32, num_samples=n_c, warmup=n_c, seed=ctx.seed,
                       progress=False)
        wrong = funnel_rows(res_c)
    # the model as written through from_pyro's default (VIP): x's scale depends on x0 and nothing observes x, so
    # it is rewritten fully non-centred (c = 0); x0's N(0, 3) prior is a constant and stays
    auto_target = from_pyro(funnel_model)
    auto = funnel_rows(sample(auto_target, None, num_chains=chains, num_samples=n, warmup=n, seed=ctx.seed,
                              progress=False))
    c_auto = ", ".join(f"{k}: {float(v.max()):.3g}" for k, v in auto_target.centeredness.items())
    _funnel_plot(ctx, res, res_c)
    details = (f"{type(res.kernel).__name__} (sample's default), {chains} chains x {n} warm-up + {n} draws, {secs:.1f} s, "
               f"sd of x0 {good['x0_sd']:.3f} (exact {FUNNEL_SCALE}), divergent transitions {good['divergent']}; "
               f"control (centred, 32 chains x {n_c} + {n_c}): R-hat {wrong['rhat']:.3f}, sd of x0 {wrong['x0_sd']:.3f}, "
               f"divergent transitions {wrong['divergent']}")
    # the issue's R-hat < 1.01 is the full run's bound; 500 + 500 draws measured 1.0087, too close to 1.01 to
    # hold on every BLAS, so quick mode uses the 1.05 of the posteriordb rows (the control measures 1.30)
    rhat_bound = 1.05 if ctx.quick else 1.01
    return [
        CheckResult.bound("non-centred: max R-hat", good["rhat"], rhat_bound, details=details),
        CheckResult.bound("non-centred: min bulk ESS", good["ess"], MIN_BULK_ESS, upper=False),
        CheckResult.bound("non-centred: max |z| of E x0, sd x0, E log|x_i|", good["z"], Z_SCORE),
        CheckResult.bound("as written, from_pyro default (VIP): max R-hat", auto["rhat"], rhat_bound,
                          details=f"VIP centredness (max per site) {c_auto}; sd of x0 {auto['x0_sd']:.3f}, min bulk ESS "
                                  f"{auto['ess']:.0f}, divergent transitions {auto['divergent']}"),
        CheckResult.bound("as written, from_pyro default (VIP): max |z| of E x0, sd x0, E log|x_i|", auto["z"], Z_SCORE),
        CheckResult.bound("centred (control): max R-hat", wrong["rhat"], rhat_bound, control=True),
        CheckResult.bound("centred (control): max |z| of E x0, sd x0, E log|x_i|", wrong["z"], Z_SCORE, control=True),
    ]


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
    """One panel per run: the histogram of its x0 draws against the exact N(0, scale^2) density, the neck
    (x0 < -3) marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional
        return
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.2), squeeze=False)
    grid = torch.linspace(-12, 12, 400, dtype=torch.float64)
    exact = torch.exp(-0.5 * (grid / FUNNEL_SCALE) ** 2) / (FUNNEL_SCALE * math.sqrt(2 * math.pi))
    for ax, (label, x0) in zip(axes[0], runs.items()):
        ax.hist(x0.clamp(-12, 12).numpy(), bins=80, range=(-12, 12), density=True, alpha=0.6, label="draws")
        ax.plot(grid.numpy(), exact.numpy(), "k", lw=1, label=f"exact N(0, {FUNNEL_SCALE ** 2:g})")
        ax.axvline(-3, color="grey", ls=":")
        ax.set_title(label[:60], fontsize=8)
        ax.set_xlabel("x0 (log-variance of x_i)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
