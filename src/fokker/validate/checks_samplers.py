"""Validation table for the learned diffusion samplers (issue 8).

For Funnel(10), mog40 and ManyWell(32) (exact samples and log Z known) each method
-- DDS, PIS, DIS (trained through ``fokker.train.fit``) and the baselines AIS / SMC from
``fokker.mcmc`` (geometric path, one MALA move per temperature, adaptive step size) -- is
run; rows report the IS log Z estimate (median over evaluation seeds, mean +- std in the
details), the normalized ESS, and MMD (median bandwidth) / energy distance of unweighted
samples to exact samples (the floor between two exact sample sets is given beside).  For
Ionosphere (d = 35) and Sonar (d = 61) DDS and SMC give log Z next to the published
long-run estimates and to a reference value computed here (SMC started at the Laplace
approximation, :func:`laplace_smc_log_Z`).

Budgets.  The evaluation budget is matched: a learned sampler with ``K`` steps spends
``K + 1`` target evaluations (log-density and score) per sample; AIS/SMC get the same
number of particles and ``K`` temperatures with one MALA move each (one
log-density-and-gradient evaluation per move, plus one log-density for the incremental
weight).  The samplers' *training* cost is extra and reported in the details (steps x
batch x (K + 1) evaluations).  DDS carries the published comparison and gets the larger
training share (see ``_cfg``).  The spread is over evaluation seeds of one trained model per
method (training several seeds does not fit the CPU budget).

Pass criteria (the issue's goal: "DDS within the published spread on every row, and better
on the funnel"):

* funnel DDS: ``|median - 0|`` below the published DDS error ``0.176``;
* Ionosphere / Sonar DDS and SMC: within two published standard deviations of the
  published mean; the reference row checks our target definition against the published
  SMC value.  The error against our reference is in the details: on Sonar the published
  DDS mean itself lies ~0.5 nats below the reference;
* elsewhere a fixed quality tolerance (funnel / mog40 0.5 nats, ManyWell 1 nat);
* MMD^2 within 20x the exact-vs-exact floor (or 0.02);
* the reported normalized ESS equals ``(sum w)^2 / (n sum w^2)`` recomputed here from the kept
  log weights (float64, max-shifted), to the loose float64 tolerance; for the learned samplers
  also ``log_Z`` equals ``log mean w`` recomputed the same way.

A FAIL of a baseline or of PIS/DIS is a quality gap of the CPU-sized run, not necessarily
a bug; ``--quick`` uses smoke-level tolerances.  Published numbers come from
``shared/validation/targets/README.md`` (models trained for ~10^4 steps with 512
discretization steps on accelerators).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .._random import make_generator, rng_scope, spawn_seed
from ..errors import ParameterError, TrainingDivergedError
from ..tolerances import tolerance
from . import CheckResult, Context, register

PUBLISHED = {
    # (mean, std, source) from shared/validation/targets/README.md
    ("funnel", "DDS"): (-0.176, 0.066, "DDS 512 steps, Vargas et al. 2023"),
    ("funnel", "SMC"): (-0.163, None, "SMC 512 temperatures (median), Vargas et al. 2023"),
    ("ionosphere", "DDS"): (-111.582, 0.116, "DDS 512 steps, Vargas et al. 2023"),
    ("ionosphere", "SMC"): (-111.585, 0.19, "SMC 512 temperatures, Vargas et al. 2023"),
    ("sonar", "DDS"): (-108.922, 0.248, "DDS 512 steps, Vargas et al. 2023"),
    ("sonar", "SMC"): (-108.806, 0.486, "SMC 512 temperatures, Vargas et al. 2023"),
}


@dataclass
class TrainConfig:
    """How one learned sampler is built and trained in the table."""

    steps: int
    batch_size: int
    loss: str = "kl"
    lr: float = 5e-3
    options: dict[str, Any] = field(default_factory=dict)  # constructor keywords (beta, T, width, ...)


@dataclass
class RunConfig:
    num_steps: int  # K (sampler steps = annealing temperatures)
    num_eval_samples: int  # samples / particles per log Z estimate
    eval_seeds: int
    sigma: float  # scale of the reference / base distribution
    train: dict[str, TrainConfig]  # per learned method
    methods: tuple[str, ...] = ("DDS", "PIS", "DIS", "AIS", "SMC")
    extra: dict[str, Any] = field(default_factory=dict)
    num_metric_samples: int = 4096  # samples used for MMD / energy distance (quadratic cost)


def _make_sampler(kind: str, target, cfg: RunConfig):
    from .. import samplers

    s, tc = cfg.sigma, cfg.train[kind]
    if kind == "DDS":
        # DDS funnel configuration (T = 6.4, cosine grid, alpha = 0.6875) with the reference scale sigma
        opts = dict(T=6.4) | tc.options
        return samplers.DDS(target, num_steps=cfg.num_steps, sigma=s, loss=tc.loss, **opts)
    if kind == "PIS":
        # T = 5 as in sde_sampler; sigma chosen so that the reference ends in N(0, s^2 I)
        opts = dict(T=5.0) | tc.options
        return samplers.PIS(target, num_steps=cfg.num_steps, sigma=s / math.sqrt(opts["T"]), loss=tc.loss, **opts)
    if kind == "DIS":
        return samplers.DIS(target, num_steps=cfg.num_steps, loss=tc.loss, **(dict(sigma=s) | tc.options))
    raise ValueError(kind)


def _base(target, sigma: float):
    from torch.distributions import Independent, Normal

    z = torch.zeros(target.dim, dtype=target.dtype, device=target.device)
    return Independent(Normal(z, sigma * torch.ones_like(z)), 1)


def _annealer(kind: str, target, cfg: RunConfig):
    from .. import mcmc

    kern = mcmc.MALA(step_size=cfg.extra.get("mala_step", 0.05), adapt_step_size=False, adapt_metric=False)
    betas = mcmc.geometric_betas(cfg.num_steps)
    spread = cfg.extra.get("step_size_spread", 0.0)
    if kind == "AIS":
        return mcmc.AIS(target, _base(target, cfg.sigma), betas, kern, adapt_step_size=True, step_size_spread=spread)
    return mcmc.SMC(target, _base(target, cfg.sigma), betas, kern, adapt_step_size=True, step_size_spread=spread)


def _resample(x: torch.Tensor, log_w: torch.Tensor, num_samples: int, gen: torch.Generator) -> torch.Tensor:
    p = torch.softmax(log_w.double().nan_to_num(-math.inf), 0).cpu()
    idx = torch.multinomial(p, num_samples, replacement=True, generator=gen)
    return x[idx.to(x.device)]


def _weight_summary(log_w: torch.Tensor) -> tuple[float, float]:
    """``(log mean w, (sum w)^2 / (n sum w^2))`` from the definitions (float64, shifted by the max
    log weight), independent of :class:`fokker.importance.LogZEstimate` which the rows check."""
    lw = log_w.detach().double().cpu()
    top = lw.max()
    w = torch.exp(lw - top)
    n = lw.numel()
    return float(top + torch.log(w.mean())), float(w.sum() ** 2 / (n * (w * w).sum()))


@dataclass
class MethodResult:
    log_z: list[float]
    ess: list[float]
    samples: torch.Tensor
    log_z_definition: list[float]  # log mean w from the kept weights (learned samplers; AIS/SMC: NaN)
    ess_definition: list[float]  # (sum w)^2 / (n sum w^2) from the kept weights
    evals_per_estimate: int
    train_evals: int
    seconds: float
    note: str = ""


def _run_method(kind: str, target, cfg: RunConfig, seed: int) -> MethodResult:
    t0 = time.perf_counter()
    log_z, ess, elbos, log_z_def, ess_def = [], [], [], [], []
    if kind in ("DDS", "PIS", "DIS"):
        with rng_scope(make_generator(seed=seed)):  # the network's initialization
            sampler = _make_sampler(kind, target, cfg).to(device=target.device)
        tc = cfg.train[kind]
        sched = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, tc.steps, eta_min=1e-4)  # noqa: E731
        sampler.fit(steps=tc.steps, batch_size=tc.batch_size, lr=tc.lr, scheduler=sched, progress=False, seed=seed)
        xs = None
        for r in range(cfg.eval_seeds):
            est = sampler.log_Z(cfg.num_eval_samples, eubo=False, generator=make_generator(seed=seed + 1000 + r),
                                progress=False)
            elbos.append(est.elbo)
            log_z.append(est.log_Z)
            ess.append(est.ess)
            lz_d, ess_d = _weight_summary(est.log_weights)
            log_z_def.append(lz_d)
            ess_def.append(ess_d)
            xs = est.samples[: cfg.num_metric_samples] if xs is None else xs
        return MethodResult(
            log_z, ess, xs, log_z_def, ess_def, cfg.num_eval_samples * (cfg.num_steps + 1),
            tc.steps * tc.batch_size * (cfg.num_steps + 1),
            time.perf_counter() - t0, note=f"{tc.loss} loss; ELBO {_mean_std(elbos)[0]:.3f}; ",
        )
    ann = _annealer(kind, target, cfg)
    gen = torch.Generator().manual_seed(seed)
    xs = None
    for r in range(cfg.eval_seeds):
        res = ann.run(cfg.num_eval_samples, seed=seed + 1000 + r, progress=False)
        log_z.append(float(res.log_Z))
        ess.append(float(res.ess))  # a LogZEstimate: already a fraction
        log_z_def.append(math.nan)  # SMC's estimate multiplies the resampling stages' mean weights
        ess_def.append(_weight_summary(res.log_weights)[1])
        if xs is None:
            xs = _resample(res.samples, res.log_weights, min(cfg.num_eval_samples, cfg.num_metric_samples), gen)
    return MethodResult(log_z, ess, xs, log_z_def, ess_def, cfg.num_eval_samples * cfg.num_steps * 2, 0,
                        time.perf_counter() - t0)


def _mean_std(v: list[float]) -> tuple[float, float]:
    t = torch.tensor(v, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(v) > 1 else 0.0


def _median(v: list[float]) -> float:
    return float(torch.tensor(v, dtype=torch.float64).median())


def _table(
    target_name: str, target, cfg: RunConfig, ctx: Context, log_z_tol: float,
    reference: float | None = None,
) -> list[CheckResult]:
    from .. import metrics

    rows: list[CheckResult] = []
    true = target.log_Z
    num_metric = min(cfg.num_eval_samples, cfg.num_metric_samples)
    with rng_scope(make_generator(seed=ctx.seed)):  # Target.sample takes no generator
        exact = target.sample((num_metric,)) if target.has_exact_samples else None
        exact2 = target.sample((num_metric,)) if target.has_exact_samples else None
    floor_mmd = float(metrics.mmd(exact, exact2)) if exact is not None else None
    floor_ed = float(metrics.energy_distance(exact, exact2)) if exact is not None else None
    mode_means = getattr(target, "loc", None) if target_name == "mog40" else None
    for kind in cfg.methods:
        try:
            res = _run_method(kind, target, cfg, ctx.seed)
        except TrainingDivergedError as e:  # one diverging method must not hide the other rows
            rows.append(CheckResult(f"{target_name}/{kind} log Z (IS)", "diverged", "-", "-", False, details=str(e)))
            continue
        mean, std = _mean_std(res.log_z)
        med = _median(res.log_z)  # robust to the rare huge weight of a heavy-tailed IS estimate
        ess_mean, _ = _mean_std(res.ess)
        pub = PUBLISHED.get((target_name, kind))
        pub_s = ""
        if pub is not None:
            pub_s = f"published {pub[0]:.3f}" + (f" +- {pub[1]:.3f}" if pub[1] is not None else "") + f" ({pub[2]}); "
        budget = (
            f"K={cfg.num_steps}, n={cfg.num_eval_samples}, {res.evals_per_estimate} target evals per estimate"
            + (f", training {cfg.train[kind].steps} steps x {cfg.train[kind].batch_size} ({res.train_evals} evals)"
               if res.train_evals else "")
            + f", {res.seconds:.0f}s"
        )
        spread = f"median {med:.3f}, mean {mean:.3f} +- {std:.3f} over {len(res.log_z)} eval seeds; " + res.note
        if reference is not None:
            spread += f"error vs the reference log Z {reference:.3f}: {med - reference:+.3f}"
            if pub is not None:
                spread += f" (published: {pub[0] - reference:+.3f})"
            spread += "; "
        name = f"{target_name}/{kind}"
        if ctx.quick:
            budget = "quick smoke run (smoke-level tolerances); " + budget
        if true is not None:
            tol = log_z_tol
            if pub is not None and pub[1] is not None and not ctx.quick:
                tol = abs(pub[0] - true)  # the goal on the funnel: more accurate than the published estimate
            rows.append(
                CheckResult.compare(f"{name} log Z (IS)", med, float(true), tol, details=pub_s + spread + budget)
            )
        else:
            ref, tol = (pub[0], 2 * pub[1]) if pub is not None and pub[1] is not None else (float("nan"), log_z_tol)
            if math.isfinite(ref):
                rows.append(CheckResult.compare(f"{name} log Z (IS)", med, ref, tol, details=pub_s + spread + budget))
            else:
                rows.append(CheckResult(f"{name} log Z (IS)", med, "-", "-", math.isfinite(med), details=spread + budget))
        # the estimates the sampler reports vs their definitions recomputed from the same weights
        rtol = tolerance(torch.float64, loose=True).rtol
        ess_err = max(abs(a - b) / b for a, b in zip(res.ess, res.ess_definition))
        rows.append(CheckResult.bound(
            f"{name} ESS (normalized) vs (sum w)^2/(n sum w^2)", ess_err, rtol,
            details=f"mean ESS {ess_mean:.4f} over {len(res.ess)} eval seeds; relative error to the definition",
        ))
        if all(math.isfinite(v) for v in res.log_z_definition):
            lz_err = max(abs(a - b) for a, b in zip(res.log_z, res.log_z_definition))
            rows.append(CheckResult.bound(f"{name} log Z vs log mean w", lz_err, rtol * max(1.0, abs(med)),
                                          details="absolute error to the definition, from the kept log weights"))
        if exact is not None:
            x = res.samples.to(exact)
            good = torch.isfinite(x).all(-1)
            x = x[good]
            mmd = float(metrics.mmd(x, exact))
            ed = float(metrics.energy_distance(x, exact))
            cov = ""
            if mode_means is not None:
                cov = f"; entropic mode coverage {float(metrics.mode_coverage(x, mode_means.to(x))):.3f}"
            rows.append(
                CheckResult.bound(
                    f"{name} MMD^2 to exact", mmd, 0.3 if ctx.quick else max(20 * abs(floor_mmd), 0.02),
                    details=f"exact-vs-exact floor {floor_mmd:.2e}; energy distance {ed:.4f} (floor {floor_ed:.2e}){cov}",
                )
            )
    rows += _controls(target_name, target, cfg, ctx, log_z_tol, reference, exact, floor_mmd, res)
    return rows


def _controls(target_name: str, target, cfg: RunConfig, ctx: Context, log_z_tol: float, reference: float | None,
              exact: torch.Tensor | None, floor_mmd: float | None, last: MethodResult) -> list[CheckResult]:
    """The table's metrics on deliberately wrong models: an estimate carrying a normalizer error of
    twice the row's tolerance, the ESS reported as a count instead of a fraction, and the base
    distribution's samples in place of the sampler's."""
    from .. import metrics

    rows = []
    ref = target.log_Z if target.log_Z is not None else reference
    if ref is not None:
        pub = PUBLISHED.get((target_name, "DDS"))
        tol = abs(pub[0] - ref) if (pub is not None and target.log_Z is not None and not ctx.quick) else log_z_tol
        off = _median(last.log_z) + 2 * tol
        rows.append(CheckResult.compare(f"{target_name}: the last method's log Z with a normalizer error of 2 x the "
                                        "tolerance", off, float(ref), tol, control=True))
    rtol = tolerance(torch.float64, loose=True).rtol
    err = max(abs(a * cfg.num_eval_samples - b) / b for a, b in zip(last.ess, last.ess_definition))
    rows.append(CheckResult.bound(f"{target_name}: ESS reported as a count vs (sum w)^2/(n sum w^2)", err, rtol,
                                  control=True))
    if exact is not None:
        with rng_scope(make_generator(seed=ctx.seed + 7)):
            base = _base(target, cfg.sigma).sample((exact.shape[0],))
        rows.append(CheckResult.bound(f"{target_name}: MMD^2 of the base N(0, sigma^2 I) to exact",
                                      float(metrics.mmd(base.to(exact), exact)),
                                      0.3 if ctx.quick else max(20 * abs(floor_mmd), 0.02), control=True))
    return rows


def _skipped_quick() -> CheckResult:
    return CheckResult("full run only", "-", "-", "-", True, status="skipped: --quick")


# --------------------------------------------------------------------- settings
def _cfg(target_name: str, quick: bool) -> RunConfig:
    if quick:
        return RunConfig(num_steps=32, num_eval_samples=512, eval_seeds=3, sigma=1.0, train={"DDS": TrainConfig(60, 64)},
                         methods=("DDS", "SMC"), extra={"step_size_spread": 3.0})
    # DDS carries the published comparison and gets the larger share of the CPU budget: K = 128,
    # 600 steps of batch 512 (logistic regressions 1000; funnel K = 64 and 6000 steps).  The IS
    # estimate is taken from 16384 paths (sampling is ~20x cheaper than a training step per
    # path), AIS/SMC get as many particles and K temperatures.
    dds = TrainConfig(600, 512)
    other = TrainConfig(300, 256)
    base = dict(num_steps=128, num_eval_samples=16384, eval_seeds=5)
    if target_name == "funnel":
        # the funnel needs long training more than fine steps: K = 64 with 3000 steps beats K = 128
        # with 1500 at equal cost (median IS log Z -0.18 .. -0.29 vs -0.20 .. -0.23, reverse KL or
        # log-variance loss), 6000 steps give -0.15 / -0.16 (two seeds); sigma = 2 widens the
        # reference towards x0 ~ N(0, 9) (-0.27 vs -0.47 at 600 steps)
        # DIS diverges with sigma = 2 and keeps the table's former sigma = 1
        return RunConfig(**(base | dict(num_steps=64)), sigma=2.0,
                         train={"DDS": replace(dds, steps=6000), "PIS": other,
                                "DIS": replace(other, options={"sigma": 1.0})},
                         extra={"step_size_spread": 3.0})
    if target_name == "mog40":
        # sigma = 20 makes the DDS/DIS gains ~sigma^2: a smaller learning rate keeps training stable;
        # DDS with the log-variance loss covers the 40 modes (coverage 0.99 vs 0.955 with reverse KL)
        slow = replace(other, lr=1e-3)
        return RunConfig(**base, sigma=20.0, train={"DDS": replace(dds, loss="lv", lr=1e-3), "PIS": slow,
                                                    "DIS": slow}, extra={"mala_step": 1.0})
    if target_name == "manywell":
        return RunConfig(**base, sigma=2.0, train={"DDS": dds, "PIS": other, "DIS": other})
    # logistic regressions: the posterior mean is ~4.4 from the origin, and with the funnel's
    # beta = 0.236 the reference keeps e^{-beta T} = 0.22 of it at t = T (an irreducible KL of
    # ~0.5 nats against N(0, I)); beta = 1 forgets it (e^{-6.4} = 0.002)
    # 1000 training steps: Ionosphere -111.66 / -111.59 (two seeds) against -111.73 after 600
    dds = replace(dds, steps=1000, options={"beta": 1.0})
    return RunConfig(**base, sigma=1.0, train={"DDS": dds}, methods=("DDS", "SMC"), extra={"mala_step": 0.01})


@register("samplers.optimal_control", group="samplers")
def optimal_control(ctx: Context) -> list[CheckResult]:
    """The exactness of the discrete importance weights (E[w] = Z at any step size), quickly.

    DDS, PIS and DIS with the closed-form optimal control of a 4-D Gaussian target
    (:class:`fokker.samplers.GaussianOptimalControl`): the IS estimate of ``log Z`` within ``Z_SCORE``
    standard errors of the exact value at a coarse and a 4x finer grid, and ``Var(log w)`` falling like
    ``1/K`` (at most 0.4 x the coarse variance; the discretization is the only error left).
    Controls: the optimal control of the target shifted by 0.5 keeps a variance floor, and weights
    carrying a normalizer 0.1 nats off miss log Z.  (The trained tables below need minutes per method: full mode only.)"""
    from ..samplers import DDS, DIS, PIS, GaussianOptimalControl
    from ..targets import GaussianMixture
    from ..tolerances import Z_SCORE

    mean = torch.tensor([1.0, -0.5, 0.3, 2.0], dtype=torch.float64)
    var = torch.tensor([0.5, 1.5, 0.8, 0.3], dtype=torch.float64)
    target = GaussianMixture(mean[None], torch.diag(var.sqrt())[None], torch.ones(1, dtype=torch.float64))
    n = 4000 if ctx.quick else 20_000

    # (class, coarse and fine step counts, options): DDS on a longer horizon with a faster OU rate so that
    # the reference forgets its start; DIS needs finer steps (its Euler kernels carry the whole error)
    settings = ((DDS, (32, 128), dict(T=10.0, beta=1.0, sigma=1.0, spacing="cosine")), (PIS, (32, 128), {}),
                (DIS, (128, 512), {}))
    rows = []
    for cls, (coarse, fine), opts in settings:
        name = cls.__name__
        variance, weak = {}, {}
        for K in (coarse, fine):
            with rng_scope(make_generator(seed=ctx.seed)):
                sampler = cls(target, num_steps=K, width=8, **opts)
            sampler.net = GaussianOptimalControl(sampler, mean, var)
            est = sampler.log_Z(n, eubo=False, generator=make_generator(seed=ctx.seed + K), progress=False)
            variance[K] = float(est.log_weights.var())
            rows.append(CheckResult.compare(f"{name} with the optimal control, {K} steps: log Z (IS)", est.log_Z,
                                            float(target.log_Z), Z_SCORE * est.stderr,
                                            details=f"ESS {est.ess:.4f}, stderr {est.stderr:.4f}"))
            sampler.net = GaussianOptimalControl(sampler, mean + 0.5, var)
            bad = sampler.log_Z(n, eubo=False, generator=make_generator(seed=ctx.seed + K), progress=False)
            weak[K] = float(bad.log_weights.var())
        rows.append(CheckResult.bound(f"{name} optimal control: Var(log w) at {fine} / at {coarse} steps",
                                      variance[fine] / variance[coarse], 0.4,
                                      details=f"Var(log w): {variance[coarse]:.4g} ({coarse} steps), {variance[fine]:.4g} ({fine})"))
        rows.append(CheckResult.bound(f"{name} optimal control of a target shifted by 0.5: Var(log w) at {fine} / at {coarse} steps",
                                      weak[fine] / weak[coarse], 0.4, control=True))
        rows.append(CheckResult.compare(f"{name} weights with a 0.1-nat normalizer error: log Z", est.log_Z + 0.1,
                                        float(target.log_Z), Z_SCORE * est.stderr, control=True))
    return rows


@register("samplers.funnel_table", group="samplers")
def funnel_table(ctx: Context) -> list[CheckResult]:
    from ..targets import Funnel

    if ctx.quick:  # a few dozen training steps prove nothing here: plain IS from the base beats them
        return [_skipped_quick()]
    return _table("funnel", Funnel(10, 3.0), _cfg("funnel", ctx.quick), ctx, log_z_tol=0.5)


@register("samplers.mog40_table", group="samplers")
def mog40_table(ctx: Context) -> list[CheckResult]:
    if ctx.quick:
        return [_skipped_quick()]
    from ..targets import mog40

    return _table("mog40", mog40(), _cfg("mog40", False), ctx, log_z_tol=0.5)


@register("samplers.manywell_table", group="samplers")
def manywell_table(ctx: Context) -> list[CheckResult]:
    if ctx.quick:
        return [_skipped_quick()]
    from ..targets import ManyWell

    return _table("manywell", ManyWell(32), _cfg("manywell", False), ctx, log_z_tol=1.0)


def laplace_smc_log_Z(
    target,
    num_particles: int = 2048,
    num_steps: int = 200,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> tuple[float, float]:
    """Reference ``log Z`` of a smooth unimodal posterior: ``(estimate, standard error)``.

    SMC (``fokker.mcmc.SMC``, 8 groups) on the geometric path from the Laplace approximation
    ``N(w*, 1.5 H^{-1})`` (MAP ``w*`` by L-BFGS, ``H`` the Hessian of ``-log gamma`` at ``w*``,
    the covariance inflated so the base covers the posterior's skewed tails) to ``gamma``,
    with ``num_steps`` linear temperatures and two HMC moves (5 leapfrog steps, adapted step size)
    each, in float64.  Independent of the learned samplers it is compared with.  The SMC run is
    seeded from ``generator`` (or ``seed``; the global RNG when neither is given).
    """
    from torch.distributions import MultivariateNormal

    from .. import mcmc

    tg = copy.deepcopy(target).to(torch.float64)  # Module.to is in place: keep the caller's dtype
    w = torch.zeros(tg.dim, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -tg.log_prob(w[None])[0]
        loss.backward()
        return loss

    opt.step(closure)
    mode = w.detach()
    H = torch.autograd.functional.hessian(lambda v: -tg.log_prob(v[None])[0], mode)
    if not bool(torch.isfinite(mode).all()) or int(torch.linalg.cholesky_ex(H).info) != 0:
        raise ParameterError(
            f"laplace_smc_log_Z: target {getattr(target, 'name', '?')!r} has no Laplace approximation "
            "(L-BFGS found no finite mode with a positive-definite Hessian of -log gamma); "
            "it needs a smooth unimodal posterior"
        )
    base = MultivariateNormal(mode, 1.5 * torch.linalg.inv(H))
    kernel = mcmc.HMC(step_size=0.05, num_steps=5, adapt_step_size=False, adapt_metric=False)
    betas = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    gen = make_generator(generator, seed)
    res = mcmc.SMC(tg, base, betas, kernel, num_mcmc_steps=2, adapt_step_size=True).run(
        num_particles, seed=None if gen is None else spawn_seed(gen), progress=False
    )
    return float(res.log_Z), float(res.stderr)


def _reference_row(name: str, target, seed: int) -> tuple[CheckResult, float]:
    """Our reference log Z next to the published long-run SMC estimate (checks the target's definition)."""
    t0 = time.perf_counter()
    ref, se = laplace_smc_log_Z(target, seed=seed)
    pub, pub_sd, source = PUBLISHED[(name, "SMC")]
    row = CheckResult.compare(
        f"{name} reference log Z (Laplace-started SMC)", ref, pub, 2 * pub_sd + 3 * se,
        details=f"SMC from N(MAP, 1.5 H^-1), 200 temperatures x 2 HMC moves, 2048 particles: {ref:.3f} +- {se:.3f} "
        f"(SE); compared with the published {source} {pub:.3f} +- {pub_sd:.3f} (tolerance 2 sd + 3 SE); "
        f"{time.perf_counter() - t0:.0f}s",
    )
    return row, ref


@register("samplers.logreg_table", group="samplers", needs_data=True)
def logreg_table(ctx: Context) -> list[CheckResult]:
    if ctx.quick:
        return [_skipped_quick()]
    from ..targets import ionosphere, sonar

    rows: list[CheckResult] = []
    for name, make in (("ionosphere", ionosphere), ("sonar", sonar)):
        target = make()
        ref_row, ref = _reference_row(name, target, ctx.seed)
        rows.append(ref_row)
        rows += _table(name, target, _cfg(name, False), ctx, log_z_tol=1.0, reference=ref)
    return rows
