"""Sample quality vs NFE for every diffusion sampler, with the exact score of mog40 under a VP SDE,
and the sampler overhead ratio (wall time / bare network time).

Usage:  python benchmarks/samplers_quality_vs_nfe.py [--n 2000] [--nfe 10 20 50 100 1000] [--device cpu]

Part 1: data = the 40-mode 2-D mixture of Midgley et al. (``fokker.targets.mog40``) pushed through
``VPSDE(0.1, 20)``; score = the closed form (``fokker.analytic.DiffusedGaussianMixture``).  Every
sampler starts from the *same* exact draws of p_T (no prior mismatch) and ends at t_min = 1e-3; the
table gives the energy distance (``fokker.metrics``, U-statistic) to exact samples of p_{t_min} at
each NFE budget, and the spread of exact-vs-exact values (the estimator's noise level: with 40
far-apart modes, multinomial mode counts make it ~0.025 at n = 2000).

Part 2: the overhead ratio of each sampler with a real network (``ResidualTimeMLP(2, 128, 3)``, batch 1024):
(wall time of the sampler) / (wall time of NFE bare ``net(x, t)`` calls), measured back to back and
reported as the median over repetitions (the machine may be shared).  Target <= 1.10.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from fokker.analytic import DiffusedGaussianMixture
from fokker.diffusion import DiffusionModel, ResidualTimeMLP
from fokker.sde import time_grid
from fokker.diffusion.samplers import DEFAULT_SPACING, SAMPLERS
from fokker.metrics import energy_distance
from fokker.sde import VPSDE
from fokker.targets import mog40

print = functools.partial(print, flush=True)  # noqa: A001  (tables appear as they are computed)

PER_STEP = {"euler_maruyama": 1, "predictor_corrector": 2, "ode_euler": 1, "heun": 2, "ddim": 1,
            "dpm_solver": 1, "annealed_langevin": 5}
ADAPTIVE_TOL = {10: 1e-1, 20: 3e-2, 50: 1e-3, 100: 1e-4, 1000: 1e-7}


def quality(n: int, nfes: list[int], device: str) -> None:
    torch.manual_seed(0)
    sde = VPSDE()
    oracle = DiffusedGaussianMixture(mog40(dtype=torch.float64, device=device), sde)
    t_min = 1e-3
    ref = oracle.sample((n,), t_min)
    # the estimator's noise level: energy distance of 8 further exact samples to the same reference
    null = torch.tensor([float(energy_distance(oracle.sample((n,), t_min), ref)) for _ in range(8)])
    x_T = oracle.sample((n,), sde.T)
    header = "| sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |"
    print(f"\n## Energy distance to exact samples (mog40, VP SDE, n={n}; exact vs exact over 8 draws: "
          f"mean {null.mean():.4f}, sd {null.std():.4f}, max {null.max():.4f})\n")
    print(header)
    print("|" + "---|" * (len(nfes) + 1))
    for name in list(PER_STEP) + ["ode_adaptive"]:
        cells = []
        for nfe in nfes:
            if name == "ode_adaptive":
                tol = ADAPTIVE_TOL.get(nfe, 1e-4)
                out, used = SAMPLERS[name](oracle.score_fn, sde, x_T.clone(), time_grid(1, sde.T, t_min, sde=sde), rtol=tol, atol=tol)
            else:
                steps = max(1, nfe // PER_STEP[name])
                grid = time_grid(steps, sde.T, t_min, DEFAULT_SPACING[name], sde=sde)
                out, used = SAMPLERS[name](oracle.score_fn, sde, x_T.clone(), grid,
                                           generator=torch.Generator(device).manual_seed(1))
            ed = float(energy_distance(out, ref)) if bool(torch.isfinite(out).all()) else float("nan")
            cells.append(f"{ed:.4f}" + ("" if used == nfe else f" ({used})"))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n(parenthesized: the NFE actually used when it differs from the budget; ode_adaptive's NFE is set by its tolerance)")


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
        for name in list(PER_STEP) + ["ode_adaptive"]:
            grid = time_grid(steps, sde.T, model.t_min, DEFAULT_SPACING[name], sde=sde)
            ratios, walls, bares = [], [], []
            for _ in range(reps):
                # back-to-back: the sampler, then the same number of bare network calls, so that the
                # load of other processes on a shared machine affects both alike
                wall, (_, nfe) = timed(lambda: SAMPLERS[name](model.score_fn(), sde, x.clone(), grid))
                bare, _ = timed(lambda: [net(x, t) for _ in range(nfe)])
                ratios.append(wall / bare)
                walls.append(wall)
                bares.append(bare)
            med = sorted(ratios)[len(ratios) // 2]
            print(f"| {name} | {nfe} | {min(walls) * 1e3:.1f} | {min(bares) * 1e3:.1f} | {med:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100, 1000])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-quality", action="store_true")
    a = p.parse_args()
    if not a.skip_quality:
        quality(a.n, a.nfe, a.device)
    overhead(a.device)


if __name__ == "__main__":
    main()
