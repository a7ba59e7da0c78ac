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

import math

import torch

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


def run_posterior(name: str, quick: bool, seed: int = 0, num_chains: int | None = None):
    """Sample posterior ``name`` with the default kernel of :func:`fokker.mcmc.sample`; return (result, rows, seconds)."""
    import time

    from ..mcmc import sample
    from ..mcmc.posteriordb import load

    target, summary = load(name)
    n = 300 if quick else 1000
    chains = num_chains or (8 if quick else 16)
    t0 = time.perf_counter()
    res = sample(target, None, num_chains=chains, num_samples=n, warmup=n, seed=seed, progress=False)
    return res, compare_to_reference(res, summary), time.perf_counter() - t0


class UnadjustedHMC:
    """Negative control: HMC with its Metropolis-Hastings step removed (every finite proposal accepted).

    Built around an adapted HMC kernel with its step size doubled; leapfrog's energy error is then
    never corrected, so the chains sample a distorted distribution (inflated spread).
    """

    @staticmethod
    def make(adapted):
        import copy

        from ..mcmc import HMC, State

        class _Unadjusted(HMC):
            def accept_reject(self, state, proposal, log_ratio, num_steps, step_size, energy=False, extra=None):
                finite = torch.isfinite(log_ratio) & torch.isfinite(proposal.grad).all(-1)
                f2 = finite.unsqueeze(-1)
                new = State(torch.where(f2, proposal.x, state.x), torch.where(finite, proposal.log_prob, state.log_prob),
                            torch.where(f2, proposal.grad, state.grad))
                ones = torch.ones_like(log_ratio)
                return new, self.step_info(ones, finite, torch.zeros_like(log_ratio), ~finite, num_steps, step_size)

        kernel = _Unadjusted(step_size=2 * torch.as_tensor(adapted.step_size).mean().item(),
                             metric=adapted.metric.inv_mass, adapt_step_size=False)
        kernel.trajectory_length = copy.copy(getattr(adapted, "trajectory_length", 2.0)) or 2.0
        return kernel


def control_rows(res, summary: dict, seed: int) -> list[dict]:
    """The comparison rows for draws of :class:`UnadjustedHMC` started at the real run's last draws."""
    import warnings

    from ..errors import ConvergenceWarning
    from ..mcmc import sample

    kernel = UnadjustedHMC.make(res.kernel)
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
            + "\n\ncontrol (HMC without its accept step, doubled step size, 8 chains x 500 draws):\n" + format_rows(wrong)
        )
        zmax = max(abs(r["z_mean"]) for r in rows)
        zsd = max(abs(r["z_sd"]) for r in rows)
        rel = max(r["rel_sd_err"] for r in rows)
        rh = max(r["r_hat"] for r in rows)
        ess = min(r["ess_bulk"] for r in rows)
        z_wrong = max(max(abs(r["z_mean"]), abs(r["z_sd"])) for r in wrong)
        _rank_plot(res, ctx, name)
        return [
            CheckResult.bound("max |z| posterior mean", zmax, Z_SCORE, details=details),
            CheckResult.bound("max |z| posterior sd", zsd, Z_SCORE),
            CheckResult.bound("max relative sd error", rel, 0.1),
            CheckResult.bound("max R-hat", rh, 1.05 if ctx.quick else 1.01),
            CheckResult.bound("min bulk ESS", ess, MIN_BULK_ESS, upper=False),
            CheckResult.bound("fraction of divergent transitions", divergent / draws, MAX_DIVERGENT_FRACTION,
                              details=f"{divergent} divergent transitions of {draws}"),
            CheckResult.bound("max |z| mean and sd, HMC without accept step", z_wrong, Z_SCORE, control=True),
        ]

    return check


for _name in _POSTERIORS:
    register(f"mcmc.posteriordb.{_name}", group="mcmc", needs_data=True)(_posterior_check(_name))


@register("mcmc.log_z", group="mcmc")
def log_z_checks(ctx: Context) -> list[CheckResult]:
    """AIS / SMC log Z on ManyWell(32), mog40 and Funnel(10) within 3 standard errors."""
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
    return out
