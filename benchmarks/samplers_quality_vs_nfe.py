"""Sample quality vs NFE: fokker's default samplers against the peers' defaults (diffusers, k-diffusion) on
the exact diffused-mixture oracle, and the sampler overhead ratio.

Usage:
    python benchmarks/samplers_quality_vs_nfe.py [--n 2000] [--nfe 10 20 50] [--search] [--skip-overhead]

Part 1 (``quality``): for each mixture (tight, wide, anisotropic, d = 2 and d = 64) and SDE (VP, VE, sub-VP,
cosine VP), every sampler starts from the *same* exact draws of p_T (float64, exact score of
``fokker.analytic.DiffusedGaussianMixture``) and is given an NFE budget; each method runs the largest
configuration within the budget, counting every score evaluation (fokker: the grid plus the final Tweedie
denoising at the grid's end; diffusers: ``num_inference_steps`` with its own final step to sigma = 0;
k-diffusion: Karras levels from sigma/alpha at t_min to that at T, then 0).  Metrics:

* path error (deterministic samplers): RMS over samples and coordinates of the output minus the
  converged PF-ODE map of the same draw to the method's own end point: dopri5 at rtol = atol = 1e-9 down to
  t_min, then the denoiser -- or without the denoiser for a peer whose default grid stops at t_min instead of
  stepping to sigma = 0 (diffusers' DEIS: its ``sigmas`` end at sigma(t_min)/alpha(t_min)); against the
  denoised map such a peer has a floor of |x(t_min) - D(x(t_min))| (RMS 8.4e-4 on tight3/cosine) that its
  discretisation error partly cancels (0.83e-3 at NFE 50, 1.5e-3 at NFE 100, 1.0e-3 at NFE 500);
* energy distance (every sampler) to exact samples of the data mixture (``fokker.metrics``);
* spread error (every sampler): the worst relative error of the within-component spread (samples assigned to their
  most responsible component and whitened by its scale), which the other two barely see -- a final denoising jump
  from a noise level near a tight component's width shrinks every component, one from higher noise leaves samples
  between the components;
* the path error split (deterministic samplers): the fraction of samples that end in another mixture component
  than the converged map (mode flips: draws near a basin boundary, which any small error sends across) and the
  RMS error over the others, printed for every cell where fokker's default is worse than the best peer's.

diffusers drives VP-type SDEs only (VP, cosine); k-diffusion any linear SDE (its EDM variables).  The peers
are run through ``benchmarks/peers.py`` (``pip install diffusers k-diffusion``; absent peers are skipped).

``--search`` prints, per sampler and SDE family, the candidate defaults (grid spacing, final step, lower-order
final step, 2S midpoint) with the cells where each is worse than the best peer default and its worst and
geometric-mean path-error ratio, and marks the one the rule picks (``WORST_RATIO_CAP``): the measurement behind
``fokker.diffusion.sampler_defaults`` (``--sdes cosine`` etc. for one SDE family's table).

Part 2 (``overhead``): wall time of each sampler with a real network (``ResidualTimeMLP(2, 128, 3)``,
batch 1024) over the time of the same number of bare ``net(x, t)`` calls, median of repetitions.
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import torch

import peers
from fokker.analytic import DiffusedGaussianMixture
from fokker.diffusion import DiffusionModel, ResidualTimeMLP
from fokker.diffusion.samplers import FINAL_STEPS, SAMPLERS, check_final_step, sampler_defaults
from fokker.metrics import energy_distance
from fokker.sde import SPACINGS, VESDE, VPSDE, SubVPSDE, time_grid
from fokker.targets import GaussianMixture

print = functools.partial(print, flush=True)  # noqa: A001  (tables appear as they are computed)

F64 = torch.float64
#: score evaluations per grid step
PER_STEP = {"heun": 2, "dpm_solver_2s": 2, "predictor_corrector": 2, "annealed_langevin": 5}
DETERMINISTIC = ("heun", "ddim", "dpm_solver", "dpm_solver_3m", "dpm_solver_2s", "unipc", "deis")


# ------------------------------------------------------------------------------------------ problems
def _pentagon(scale: float) -> GaussianMixture:
    ang = torch.arange(5, dtype=F64) * 2 * math.pi / 5
    loc = 2.0 * torch.stack([ang.cos(), ang.sin()], -1)
    w = torch.tensor([0.3, 0.25, 0.2, 0.15, 0.1], dtype=F64)
    return GaussianMixture(loc, scale * torch.eye(2, dtype=F64).expand(5, 2, 2), w)


def tight3() -> GaussianMixture:
    """Three tight components with unequal weights (the acceptance mixture of ``DiffusionModel.sample``)."""
    loc = torch.tensor([[-1.5, 0.0], [1.5, 0.5], [0.0, 1.8]], dtype=F64)
    return GaussianMixture(loc, 0.05 * torch.eye(2, dtype=F64).expand(3, 2, 2), torch.tensor([0.5, 0.3, 0.2], dtype=F64))


def _anisotropic() -> GaussianMixture:
    loc = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=F64)
    tril = []
    for a in (0.3, 1.2, 2.4):
        rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=F64)
        cov = rot @ torch.diag(torch.tensor([0.8**2, 0.05**2], dtype=F64)) @ rot.T
        tril.append(torch.linalg.cholesky(cov))
    return GaussianMixture(loc, torch.stack(tril), torch.tensor([0.4, 0.35, 0.25], dtype=F64))


def _d64() -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    loc = 0.5 * torch.randn(4, 64, generator=g, dtype=F64)
    return GaussianMixture(loc, 0.2 * torch.eye(64, dtype=F64).expand(4, 64, 64), torch.full((4,), 0.25, dtype=F64))


MIXTURES = {"wide5": lambda: _pentagon(0.3), "tight5": lambda: _pentagon(0.06), "tight3": tight3,
            "aniso": _anisotropic, "d64": _d64}
SDES = {"vp": VPSDE, "cosine": VPSDE.cosine, "subvp": SubVPSDE, "ve": lambda: VESDE(sigma_min=0.01, sigma_max=50.0)}
VP_TYPE = ("vp", "cosine")


class Problem:
    """One (mixture, SDE): the oracle, the shared prior draw, exact data samples and the PF-ODE reference."""

    def __init__(self, mix: str, sde_name: str, n: int) -> None:
        self.name = f"{mix}/{sde_name}"
        self.sde = SDES[sde_name]()
        self.vp_type = sde_name in VP_TYPE
        gm = MIXTURES[mix]()
        self.mixture = gm
        self.oracle = DiffusedGaussianMixture(gm, self.sde)
        self.t_min = self.sde.score_domain()[0]
        g = torch.Generator().manual_seed(0)
        self.x_T = self.oracle.sample((n,), self.sde.T, generator=g)
        #: the data density (the mixture at t = 0), for the data samples and the spread error's assignment
        self.data_density = DiffusedGaussianMixture(gm, VPSDE())
        self.data = self.data_density.sample((n,), 0.0, generator=g)
        grid = time_grid(1, self.sde.T, self.t_min, sde=self.sde)
        ref, _ = SAMPLERS["ode_adaptive"](self.oracle.score_fn, self.sde, self.x_T.clone(), grid, rtol=1e-9, atol=1e-9)
        #: the converged PF-ODE map to t_min, and that map followed by the denoiser
        self.reference_t_min = ref
        self.reference = self.denoise(ref, self.t_min)
        null = [float(energy_distance(self.data_density.sample((n,), 0.0, generator=g), self.data))
                for _ in range(4)]
        #: the energy distance estimator's noise: sd of exact-vs-exact values
        self.ed_noise = float(torch.tensor(null).std())

    def denoise(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return self.oracle.denoise(x, torch.full((x.shape[0],), float(t), dtype=F64))

    def scores(self, out: torch.Tensor, at_t_min: bool = False) -> tuple[float, float]:
        """(path error, energy distance) of samples from the shared draw; ``at_t_min``: the samples are the
        sampler's state at t_min, not denoised (path error against the map to t_min)."""
        if not bool(torch.isfinite(out).all()):
            return math.nan, math.nan
        path = float((out - (self.reference_t_min if at_t_min else self.reference)).pow(2).mean().sqrt())
        return path, float(energy_distance(out, self.data))

    def spread_error(self, out: torch.Tensor, at_t_min: bool = False) -> float:
        """Worst relative error of the within-component spread: samples assigned to their most responsible data
        component, whitened by its scale, RMS over coordinates minus 1 (components with >= 20 samples).  Path error
        and energy distance barely see a sampler that gets every component's width wrong (the last denoising jump from too
        high a noise level does), this does."""
        if not bool(torch.isfinite(out).all()):
            return math.nan
        x = self.denoise(out, self.t_min) if at_t_min else out
        k = self.data_density.responsibilities(x, 0.0).argmax(-1)
        worst = 0.0
        for j in range(self.mixture.num_components):
            xs = x[k == j]
            if len(xs) >= 20:
                z = torch.linalg.solve_triangular(self.mixture.scale_tril[j], (xs - self.mixture.loc[j]).T, upper=False)
                worst = max(worst, abs(float(z.pow(2).mean().sqrt()) - 1.0))
        return worst

    def split_path_error(self, out: torch.Tensor, at_t_min: bool = False) -> tuple[float, float]:
        """``(flip fraction, path error over the rest)``: the share of samples that end in another mixture
        component (most responsible component at t_min) than the converged PF-ODE map of the same draw, and the
        RMS path error over the samples that do not.  A draw near a basin boundary flips under any small error;
        on tight mixtures a handful of flips carries almost the whole RMS, so the two are compared separately."""
        if not bool(torch.isfinite(out).all()):
            return math.nan, math.nan
        ref = self.reference_t_min if at_t_min else self.reference
        t = torch.full((out.shape[0],), self.t_min, dtype=F64)
        same = self.oracle.responsibilities(out, t).argmax(-1) == self.oracle.responsibilities(ref, t).argmax(-1)
        flips = 1.0 - float(same.double().mean())
        rest = float((out - ref)[same].pow(2).mean().sqrt()) if bool(same.any()) else math.nan
        return flips, rest


# ------------------------------------------------------------------------------------------ runners
def fokker_run(p: Problem, name: str, budget: int, spacing: str | None = None, final_step: str | None = None,
               **opts) -> tuple[torch.Tensor, int]:
    """fokker's sampler within ``budget`` score evaluations, its final denoising step included, as
    ``DiffusionModel.sample`` runs it.  ``final_step`` (default: the library's, ``sampler_defaults``):
    ``"sampler"``: the grid ends at ``t_min``, then the denoiser; ``"denoise"``: the grid is spaced for one
    more interval and the denoiser replaces its last one (as diffusers' final step to 0)."""
    per = PER_STEP.get(name, 1)
    num_steps = max(1, (budget - 1) // per)
    default = sampler_defaults(name, p.sde)
    if spacing is None:  # the library's default: its options too, unless given
        opts = {**default.options, **opts}
    jump = check_final_step(final_step, default.final_step) == "denoise"
    grid = time_grid(num_steps + jump, p.sde.T, p.t_min, spacing or default.spacing, sde=p.sde)
    if jump:
        grid = grid[:-1]
    end_t = float(grid[-1])
    out, nfe = SAMPLERS[name](p.oracle.score_fn, p.sde, p.x_T.clone(), grid,
                              generator=torch.Generator().manual_seed(1), **opts)
    return p.denoise(out, end_t), nfe + 1


#: the peers' default for each fokker sampler: (label, library, scheduler or function, options)
PEERS = {
    "heun": [("diffusers Heun", "diffusers", "HeunDiscreteScheduler", {}),
             ("k-diffusion heun", "k-diffusion", "sample_heun", {})],
    # the peers' "Euler" integrates the PF-ODE in sigma/alpha with the denoiser: that is DDIM (eta = 0), not
    # fokker's ode_euler (Euler in t, which has no peer)
    "ddim": [("diffusers DDIM", "diffusers", "DDIMScheduler", {}),
             ("diffusers Euler", "diffusers", "EulerDiscreteScheduler", {}),
             ("k-diffusion euler", "k-diffusion", "sample_euler", {})],
    "dpm_solver": [("diffusers DPM++2M", "diffusers", "DPMSolverMultistepScheduler", {}),
                   ("k-diffusion dpmpp_2m", "k-diffusion", "sample_dpmpp_2m", {})],
    "dpm_solver_3m": [("diffusers DPM++3M", "diffusers", "DPMSolverMultistepScheduler", {"solver_order": 3})],
    "dpm_solver_2s": [("diffusers DPM++2S", "diffusers", "DPMSolverSinglestepScheduler", {}),
                      ("k-diffusion dpmpp_2s", "k-diffusion", "sample_dpmpp_2s_ancestral", {"eta": 0.0})],
    "unipc": [("diffusers UniPC", "diffusers", "UniPCMultistepScheduler", {})],
    "deis": [("diffusers DEIS", "diffusers", "DEISMultistepScheduler", {})],
    "dpm_solver_sde": [("diffusers SDE-DPM++2M", "diffusers", "DPMSolverMultistepScheduler",
                        {"algorithm_type": "sde-dpmsolver++"}),
                       ("k-diffusion dpmpp_2m_sde", "k-diffusion", "sample_dpmpp_2m_sde", {})],
    "euler_ancestral": [("diffusers EulerAncestral", "diffusers", "EulerAncestralDiscreteScheduler", {}),
                        ("k-diffusion euler_ancestral", "k-diffusion", "sample_euler_ancestral", {})],
}


def peer_run(p: Problem, lib: str, fn: str, opts: dict, budget: int, kd) -> tuple[torch.Tensor, int, bool] | None:
    """The peer's default within ``budget`` score evaluations: ``(samples, nfe, at_t_min)``, ``at_t_min`` when
    its grid ends at t_min without a step to sigma = 0 (``Problem.scores``); ``None`` when it does not apply."""
    two = fn in ("HeunDiscreteScheduler", "sample_heun", "sample_dpmpp_2s_ancestral", "DPMSolverSinglestepScheduler")
    if lib == "diffusers":
        if not p.vp_type or not _has_diffusers():
            return None
        sched = peers.diffusers_scheduler(fn, p.sde, **opts)
        steps = budget if not two or fn == "DPMSolverSinglestepScheduler" else (budget + 1) // 2
        out, nfe = peers.diffusers_run(sched, p.oracle, p.sde, p.x_T, steps, generator=torch.Generator().manual_seed(1))
        return out, nfe, float(getattr(sched, "sigmas", torch.zeros(1))[-1]) > 0
    if kd is None:
        return None
    levels = (budget + 1) // 2 if two else budget
    sigmas = peers.k_diffusion_sigmas(kd, p.sde, levels, p.t_min)
    out, nfe = peers.k_diffusion_run(kd, fn, p.oracle, p.sde, p.x_T, sigmas,
                                     generator=torch.Generator().manual_seed(1), **opts)
    return out, nfe, False


@functools.cache
def _has_diffusers() -> bool:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False
    return True


#: path-error ratios within this of 1 count as equal (the same method on the same grid: diffusers' discrete chain
#: and float rounding move the ratio by < 1e-3)
EQUAL = 1e-3
#: a within-component spread error above the best peer's by more than this counts as worse (about two standard
#: errors of a component's RMS radius from ~500 samples)
SPREAD_NOISE = 0.03


def _cell(path: float, ed: float, spread: float, nfe: int, budget: int, deterministic: bool) -> str:
    s = (f"{path:.4f} / " if deterministic else "") + f"{ed:.4f} / {spread:.3f}"
    return s + ("" if nfe == budget else f" ({nfe})")


# ------------------------------------------------------------------------------------------ tables
def quality(problems: list[Problem], nfes: list[int], kd) -> dict:
    """Print fokker's default vs each peer default per cell, then per sampler the cells where fokker's default is
    worse than the best peer default in path error, energy distance or within-component spread, each with its
    split (mode flips against the error of the rest); return ``{sampler: [worse cells]}``."""
    worse: dict[str, list[str]] = {}
    summary = []
    for name, plist in PEERS.items():
        det = name in DETERMINISTIC
        metric = ("path error / " if det else "") + "energy distance / spread error"
        print(f"\n### {name} ({metric}; parenthesized: the NFE used when below the budget)\n")
        print("| problem | method | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
        print("|---|---|" + "---|" * len(nfes))
        ratios, cells, counts = [], 0, [0, 0, 0]
        for p in problems:
            rows = {"fokker (default)": [fokker_run(p, name, b) + (False,) for b in nfes]}
            for label, lib, fn, opts in plist:
                runs = [peer_run(p, lib, fn, opts, b, kd) for b in nfes]
                if runs[0] is not None:
                    rows[label] = runs
            scored = {k: [p.scores(out, at) + (p.spread_error(out, at), nfe) for out, nfe, at in v]
                      for k, v in rows.items()}
            for label, cs in scored.items():
                print(f"| {p.name} | {label} | " + " | ".join(_cell(*c, b, det) for c, b in zip(cs, nfes)) + " |")
            if len(rows) == 1:
                continue
            split = {k: [p.split_path_error(out, at) for out, _, at in v] for k, v in rows.items()} if det else {}
            n = p.x_T.shape[0]
            for j, b in enumerate(nfes):
                cells += 1
                path, ed, spread, _ = scored["fokker (default)"][j]
                peers_j = {k: v[j] for k, v in scored.items() if k != "fokker (default)"}
                reasons = []
                if det:
                    best_label = min(peers_j, key=lambda k: peers_j[k][0])
                    ratio = path / peers_j[best_label][0]
                    ratios.append(ratio)
                    if ratio > 1 + EQUAL:
                        (fo, ro), (fp, rp) = split["fokker (default)"][j], split[best_label][j]
                        se = math.sqrt(max(fo * (1 - fo) + fp * (1 - fp), 1e-300) / n)
                        reasons.append(f"path {ratio:.2f}x {best_label} (flips {fo:.4f} vs {fp:.4f}, z {(fo - fp) / se:+.1f}; "
                                       f"rest {ro / rp:.2f}x)")
                        counts[0] += 1
                ed_excess = (ed - min(v[1] for v in peers_j.values())) / p.ed_noise
                if ed_excess > 2:
                    reasons.append(f"energy distance +{ed_excess:.1f} noise sd")
                    counts[1] += 1
                best_spread = min(v[2] for v in peers_j.values())
                if spread > best_spread + SPREAD_NOISE:
                    reasons.append(f"spread error {spread:.3f} vs {best_spread:.3f}")
                    counts[2] += 1
                if reasons:
                    worse.setdefault(name, []).append(f"{p.name} NFE {b}: " + "; ".join(reasons))
        gm = math.exp(sum(math.log(v) for v in ratios) / len(ratios)) if ratios and all(v > 0 for v in ratios) else math.nan
        summary.append(f"| {name} | {cells} | " + (f"{counts[0]} | {max(ratios):.2f} | {gm:.3f} | " if det else "- | - | - | ")
                       + f"{counts[1]} | {counts[2]} | {len(worse.get(name, []))} |")
    print("\n### fokker default against the best peer default, per cell\n")
    print(f"worse: path error above the best peer's by more than {EQUAL:.1%}; energy distance above by more than two "
          f"of its noise sds; within-component spread error above by more than {SPREAD_NOISE}\n")
    print("| sampler | cells with a peer | path worse | worst path ratio | geometric-mean path ratio | energy distance "
          "worse | spread worse | cells worse in any |")
    print("|---|---|---|---|---|---|---|---|")
    for line in summary:
        print(line)
    print("\n### the cells where fokker's default is worse, with the split of the path error\n")
    print("flips: fraction of samples that end in another component than the converged PF-ODE map (z: binomial "
          "z-score of the difference); rest: RMS error over the samples that do not flip, ratio to the peer\n")
    for name, lines in worse.items():
        for line in lines:
            print(f"- {name}: {line}")
    return worse


#: the search's rule: among candidates whose worst path-error ratio to the best peer is at most this, the one
#: worse than the best peer in the fewest cells (any of the three metrics), ties broken by the geometric mean
WORST_RATIO_CAP = 2.5


def search(problems: list[Problem], nfes: list[int], kd) -> None:
    """Candidate defaults per sampler and SDE family, scored against the best peer default in every cell
    (mixture x NFE) by the rule of ``quality`` (path error, energy distance, within-component spread); prints
    each candidate and marks the one ``fokker.diffusion.sampler_defaults`` should hold (``WORST_RATIO_CAP``)."""
    lof = ("dpm_solver", "dpm_solver_3m", "unipc", "deis", "dpm_solver_sde")
    for name, plist in PEERS.items():
        det = name in DETERMINISTIC
        candidates = [(sp, {"final_step": e}) for sp in SPACINGS for e in FINAL_STEPS]
        if name in lof:
            candidates = [(sp, {**o, "lower_order_final": f}) for sp, o in candidates for f in (True, False)]
        if name == "dpm_solver_2s":
            candidates = [(sp, {**o, "midpoint": m}) for sp, o in candidates for m in ("log_snr", "time")]
        for family in dict.fromkeys(type(p.sde).__name__ for p in problems):
            stats = {i: {"worse": 0, "ratios": [], "cells": 0} for i in range(len(candidates))}
            for p in (q for q in problems if type(q.sde).__name__ == family):
                for b in nfes:
                    peer = [r for _, lib, fn, opts in plist if (r := peer_run(p, lib, fn, opts, b, kd)) is not None]
                    if not peer:
                        continue
                    peer_scores = [p.scores(o, at) for o, _, at in peer]
                    best_path = min(v[0] for v in peer_scores)
                    best_ed = min(v[1] for v in peer_scores)
                    best_spread = min(p.spread_error(o, at) for o, _, at in peer)
                    for i, (sp, opts) in enumerate(candidates):
                        out = fokker_run(p, name, b, spacing=sp, **opts)[0]
                        path, ed = p.scores(out)
                        spread = p.spread_error(out)
                        st = stats[i]
                        st["cells"] += 1
                        ratio = path / best_path if math.isfinite(path) else math.inf
                        if det:
                            st["ratios"].append(ratio)
                        st["worse"] += ((det and ratio > 1 + EQUAL) or not math.isfinite(ed)
                                        or (ed - best_ed) / p.ed_noise > 2 or spread > best_spread + SPREAD_NOISE)
            if not stats[0]["cells"]:
                continue
            rows = []
            for i, (sp, opts) in enumerate(candidates):
                r = stats[i]["ratios"]
                worst = max(r) if r else 0.0
                gm = math.exp(sum(math.log(max(v, 1e-300)) for v in r) / len(r)) if r and all(map(math.isfinite, r)) else (math.inf if r else 0.0)
                rows.append((stats[i]["worse"], gm, worst, sp, opts, stats[i]["cells"]))
            capped = [r for r in rows if r[2] <= WORST_RATIO_CAP] or rows
            chosen = min(capped, key=lambda r: (r[0], r[1]))
            print(f"\n### {name} on {family}: candidates (cells worse than the best peer; path-error ratio)\n")
            print("| spacing | options | cells worse | worst ratio | geometric mean | chosen |")
            print("|---|---|---|---|---|---|")
            for r in sorted(rows, key=lambda r: (r[0], r[1])):
                print(f"| {r[3]} | {r[4]} | {r[0]}/{r[5]} | {r[2]:.3f} | {r[1]:.3f} | {'**yes**' if r is chosen else ''} |")


def acceptance(n: int) -> None:
    """``DiffusionModel.sample`` with its default sampler at 10 steps on ``tight3`` under VP: mixture weights and
    within-component standard deviations (components assigned by responsibility under the data mixture)."""
    gm = tight3()
    sde = VPSDE()
    oracle = DiffusedGaussianMixture(gm, sde)

    class Exact(torch.nn.Module):
        dim = 2

        def forward(self, x, t):
            return oracle.score_fn(x, t)

    model = DiffusionModel(sde, Exact(), "score")
    x, nfe = model.sample((n,), num_steps=10, generator=torch.Generator().manual_seed(0), return_nfe=True,
                          dtype=torch.float64)
    data = DiffusedGaussianMixture(gm, VPSDE())
    k = data.responsibilities(x, 0.0).argmax(-1)
    w = torch.bincount(k, minlength=3).double() / n
    sd = torch.stack([(x[k == j] - gm.loc[j]).pow(2).mean().sqrt() for j in range(3)])
    print(f"\n### DiffusionModel.sample default sampler, num_steps=10 (NFE {nfe}), tight3 under VP, n={n}\n")
    print(f"weights {w.tolist()} (true {gm.weights.tolist()}): max error {float((w - gm.weights).abs().max()):.4f}")
    print(f"within-component sd / true: {(sd / 0.05).tolist()}: max error {float((sd / 0.05 - 1).abs().max()):.3%}")


# ------------------------------------------------------------------------------------------ overhead
def overhead(device: str, batch: int = 1024, steps: int = 20, reps: int = 5) -> None:
    torch.manual_seed(0)
    sde = VPSDE()
    net = ResidualTimeMLP(2, hidden=128, depth=3).to(device).eval()
    model = DiffusionModel(sde, net, "eps")
    x = torch.randn(batch, 2, device=device)
    t = torch.full((batch,), 0.5, device=device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return time.perf_counter() - t0, out

    with torch.no_grad():
        for _ in range(5):
            net(x, t)
        print(f"\n## Overhead ratio (ResidualTimeMLP(2, 128, 3), batch {batch}, {steps} steps, {device})\n")
        print("| sampler | NFE | sampler wall (ms) | NFE x bare net (ms) | ratio (median of reps) |")
        print("|---|---|---|---|---|")
        for name in SAMPLERS:
            default = sampler_defaults(name, sde)
            grid = time_grid(steps, sde.T, model.t_min, default.spacing, sde=sde)
            ratios, walls, bares = [], [], []
            for _ in range(reps):
                wall, (_, nfe) = timed(lambda: SAMPLERS[name](model.score_fn(), sde, x.clone(), grid, **default.options))
                bare, _ = timed(lambda: [net(x, t) for _ in range(nfe)])
                ratios.append(wall / bare)
                walls.append(wall)
                bares.append(bare)
            med = sorted(ratios)[len(ratios) // 2]
            print(f"| {name} | {nfe} | {min(walls) * 1e3:.1f} | {min(bares) * 1e3:.1f} | {med:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--mixtures", nargs="+", default=list(MIXTURES))
    p.add_argument("--sdes", nargs="+", default=list(SDES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--search", action="store_true", help="score candidate defaults instead of printing the tables")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    a = p.parse_args()
    kd = peers.load_k_diffusion_sampling()
    if not a.skip_quality:
        problems = [Problem(m, s, a.n) for m in a.mixtures for s in a.sdes]
        search(problems, a.nfe, kd) if a.search else quality(problems, a.nfe, kd)
        if not a.search:
            acceptance(20_000)
    if not a.skip_overhead:
        overhead(a.device)


if __name__ == "__main__":
    main()
