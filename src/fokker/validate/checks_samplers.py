"""Validation table for the learned diffusion samplers (issue 8).

For Funnel(10), mog40 and ManyWell(32) (exact samples and log Z known) each method
-- DDS, PIS, DIS (trained with the reverse-KL loss through ``fokker.train.fit``) and
the baselines AIS / SMC from ``fokker.mcmc`` (geometric path, one MALA move per
temperature, adaptive step size) -- is run; rows report the IS log Z estimate
(mean over evaluation seeds, bias vs the true value, spread in the details), the
normalized ESS, and MMD (median bandwidth) / energy distance of unweighted samples
to exact samples (the floor between two exact sample sets is given beside).  For
Ionosphere (d = 35) and Sonar (d = 61) DDS and SMC give log Z next to the published
long-run estimates.

Budgets.  The evaluation budget is matched: a learned sampler with ``K`` steps spends
``K + 1`` target evaluations (log-density and score) per sample; AIS/SMC get the
same number of particles and ``K`` temperatures with one MALA move each (one
log-density-and-gradient evaluation per move, plus one log-density for the
incremental weight).  The samplers' *training* cost is extra and reported in the
details (steps x batch x (K + 1) evaluations).  The spread is over evaluation seeds of
one trained model per method (training several seeds does not fit the CPU budget).
Pass criteria: the log Z row compares the *median* IS estimate over the evaluation
seeds (mean +- std in the details) with the true value; where a published number
exists the tolerance is the published error plus its spread (the issue's goal: "within
the published spread"), elsewhere a fixed quality tolerance (funnel / mog40 0.5 nats,
ManyWell and the logistic regressions 1 nat).  MMD^2 rows must lie within 20x the
exact-vs-exact floor (or 0.02).  ESS rows are reported (always pass).  A FAIL is a
quality gap of the CPU-sized run, not necessarily a bug; ``--quick`` uses smoke-level
tolerances.  Published numbers (``shared/validation/targets/README.md``) come from models
trained for ~10^4 steps with 512 discretization steps on accelerators; the CPU
budget here (``fokker validate`` <= 30 min on 2 cores) allows a few hundred training
steps with ``K = 64``, so the learned samplers are not expected to reach them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import TrainingDivergedError
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
class RunConfig:
    num_steps: int  # K (sampler steps = annealing temperatures)
    train_steps: int
    batch_size: int
    n_eval: int
    eval_seeds: int
    sigma: float  # scale of the reference / base distribution
    methods: tuple[str, ...] = ("DDS", "PIS", "DIS", "AIS", "SMC")
    extra: dict[str, Any] = field(default_factory=dict)
    train_steps_by_method: dict[str, int] = field(default_factory=dict)  # overrides train_steps

    def steps_for(self, kind: str) -> int:
        return self.train_steps_by_method.get(kind, self.train_steps)


def _make_sampler(kind: str, target, cfg: RunConfig):
    from .. import samplers

    s = cfg.sigma
    if kind == "DDS":
        # DDS funnel configuration (T = 6.4, cosine grid, alpha = 0.6875) with the reference scale sigma
        return samplers.DDS(target, num_steps=cfg.num_steps, T=6.4, sigma=s)
    if kind == "PIS":
        # T = 5 as in sde_sampler; sigma chosen so that the reference ends in N(0, s^2 I)
        return samplers.PIS(target, num_steps=cfg.num_steps, T=5.0, sigma=s / math.sqrt(5.0))
    if kind == "DIS":
        return samplers.DIS(target, num_steps=cfg.num_steps, sigma=s)
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


def _resample(x: torch.Tensor, log_w: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    p = torch.softmax(log_w.double().nan_to_num(-math.inf), 0).cpu()
    idx = torch.multinomial(p, n, replacement=True, generator=gen)
    return x[idx.to(x.device)]


@dataclass
class MethodResult:
    log_z: list[float]
    ess: list[float]
    samples: torch.Tensor
    evals_per_estimate: int
    train_evals: int
    seconds: float
    note: str = ""


def _run_method(kind: str, target, cfg: RunConfig, seed: int) -> MethodResult:
    t0 = time.perf_counter()
    log_z, ess, elbos = [], [], []
    if kind in ("DDS", "PIS", "DIS"):
        torch.manual_seed(seed)
        sampler = _make_sampler(kind, target, cfg).to(device=target.device)
        steps = cfg.steps_for(kind)
        sched = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-4)  # noqa: E731
        lr = cfg.extra.get("lr", 5e-3)
        sampler.fit(steps=steps, batch_size=cfg.batch_size, lr=lr, scheduler=sched, progress=False, seed=seed)
        xs = None
        for r in range(cfg.eval_seeds):
            torch.manual_seed(seed + 1000 + r)
            x, lw = sampler.sample(cfg.n_eval)
            from ..samplers import log_weight_stats

            elbo, imp, e, _ = log_weight_stats(lw)
            elbos.append(elbo)
            log_z.append(imp)
            ess.append(e)
            xs = x if xs is None else xs
        return MethodResult(
            log_z, ess, xs, cfg.n_eval * (cfg.num_steps + 1), steps * cfg.batch_size * (cfg.num_steps + 1),
            time.perf_counter() - t0, note=f"ELBO {_mean_std(elbos)[0]:.3f}; ",
        )
    ann = _annealer(kind, target, cfg)
    gen = torch.Generator().manual_seed(seed)
    xs = None
    for r in range(cfg.eval_seeds):
        res = ann.run(cfg.n_eval, seed=seed + 1000 + r, progress=False)
        log_z.append(float(res.log_Z))
        ess.append(float(res.ess) / cfg.n_eval)  # AISResult.ess is unnormalized
        if xs is None:
            xs = _resample(res.samples, res.log_weights, cfg.n_eval, gen)
    return MethodResult(log_z, ess, xs, cfg.n_eval * cfg.num_steps * 2, 0, time.perf_counter() - t0)


def _mean_std(v: list[float]) -> tuple[float, float]:
    t = torch.tensor(v, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(v) > 1 else 0.0


def _median(v: list[float]) -> float:
    return float(torch.tensor(v, dtype=torch.float64).median())


def _table(target_name: str, target, cfg: RunConfig, ctx: Context, log_z_tol: float) -> list[CheckResult]:
    from .. import metrics

    rows: list[CheckResult] = []
    true = target.log_Z
    exact = target.sample((cfg.n_eval,)) if target.has_exact_samples else None
    exact2 = target.sample((cfg.n_eval,)) if target.has_exact_samples else None
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
            f"K={cfg.num_steps}, n={cfg.n_eval}, {res.evals_per_estimate} target evals per estimate"
            + (f", training {cfg.steps_for(kind)} steps x {cfg.batch_size} ({res.train_evals} evals)" if res.train_evals else "")
            + f", {res.seconds:.0f}s"
        )
        spread = f"median {med:.3f}, mean {mean:.3f} +- {std:.3f} over {len(res.log_z)} eval seeds; " + res.note
        name = f"{target_name}/{kind}"
        if ctx.quick:
            budget = "quick smoke run (smoke-level tolerances); " + budget
        if true is not None:
            tol = log_z_tol
            if pub is not None and pub[1] is not None and not ctx.quick:
                tol = abs(pub[0] - true) + pub[1]  # goal: no worse than the published error plus its spread
            rows.append(
                CheckResult.compare(f"{name} log Z (IS)", med, float(true), tol, details=pub_s + spread + budget)
            )
        else:
            ref, tol = (pub[0], 2 * pub[1]) if pub is not None and pub[1] is not None else (float("nan"), log_z_tol)
            if math.isfinite(ref):
                rows.append(CheckResult.compare(f"{name} log Z (IS)", med, ref, tol, details=pub_s + spread + budget))
            else:
                rows.append(CheckResult(f"{name} log Z (IS)", med, "-", "-", math.isfinite(med), details=spread + budget))
        rows.append(CheckResult.bound(f"{name} ESS (normalized)", ess_mean, 0.0, upper=False, details="reported; >= 0"))
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
    return rows


def _skipped_quick() -> CheckResult:
    return CheckResult("full run only", "-", "-", "-", True, status="skipped: --quick")


# --------------------------------------------------------------------- settings
def _cfg(target_name: str, quick: bool) -> RunConfig:
    if quick:
        return RunConfig(num_steps=32, train_steps=60, batch_size=64, n_eval=512, eval_seeds=3, sigma=1.0,
                         methods=("DDS", "SMC"), extra={"step_size_spread": 3.0})
    # the DDS rows carry the published comparison: DDS gets the larger share of the CPU budget
    base = dict(num_steps=64, train_steps=250, batch_size=128, n_eval=1024, eval_seeds=8,
                train_steps_by_method={"DDS": 400})
    if target_name == "funnel":
        return RunConfig(**base, sigma=1.0, extra={"step_size_spread": 3.0})
    if target_name == "mog40":
        # sigma = 20 makes the DDS/DIS gains ~sigma^2: a smaller learning rate keeps training stable
        return RunConfig(**base, sigma=20.0, extra={"mala_step": 1.0, "lr": 1e-3})
    if target_name == "manywell":
        return RunConfig(**base, sigma=2.0)
    return RunConfig(**base, sigma=1.0, methods=("DDS", "SMC"), extra={"mala_step": 0.01})


@register("samplers.funnel_table", group="samplers")
def funnel_table(ctx: Context) -> list[CheckResult]:
    from ..targets import Funnel

    return _table("funnel", Funnel(10, 3.0), _cfg("funnel", ctx.quick), ctx, log_z_tol=1.5 if ctx.quick else 0.5)


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


@register("samplers.logreg_table", group="samplers", needs_data=True)
def logreg_table(ctx: Context) -> list[CheckResult]:
    if ctx.quick:
        return [_skipped_quick()]
    from ..targets import ionosphere, sonar

    rows = _table("ionosphere", ionosphere(), _cfg("ionosphere", False), ctx, log_z_tol=1.0)
    rows += _table("sonar", sonar(), _cfg("sonar", False), ctx, log_z_tol=1.0)
    return rows
