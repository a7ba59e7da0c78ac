"""Record the peers' outputs that ``tests/diffusion/test_peer_samplers.py`` compares fokker's samplers with.

Each case runs one peer sampler (k-diffusion or diffusers, driven by :mod:`peers`) with the exact score of a
3-component 2-D mixture (float64) from 4 fixed prior draws, on the grid of fokker's ``time_grid`` lined up
with the peer's levels; the outputs go to ``tests/diffusion/data/peer_samplers.json``.  The tests then need
neither peer.  Stochastic cases draw their noise from ``torch.Generator().manual_seed(5)`` (k-diffusion's
churn from the global RNG seeded with 5), in the order fokker's samplers draw it.

    python benchmarks/record_peer_samplers.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import peers
from fokker.analytic import DiffusedGaussianMixture
from fokker.sde import VESDE, VPSDE, time_grid
from fokker.targets import GaussianMixture

OUT = Path(__file__).resolve().parents[1] / "tests" / "diffusion" / "data" / "peer_samplers.json"
NUM_STEPS = 6

#: (fokker sampler, its options, peer, peer function or scheduler, peer options, stochastic, final denoise)
CASES = [
    ("heun", {}, "k-diffusion", "sample_heun", {}, False, True),
    ("heun", {"s_churn": 4.0, "s_tmin": 0.05, "s_tmax": 10.0}, "k-diffusion", "sample_heun",
     {"s_churn": 4.0, "s_tmin": 0.05, "s_tmax": 10.0}, True, True),
    ("dpm_solver", {"lower_order_final": False}, "k-diffusion", "sample_dpmpp_2m", {}, False, True),
    ("dpm_solver_2s", {}, "k-diffusion", "sample_dpmpp_2s_ancestral", {"eta": 0.0}, False, True),
    ("dpm_solver_2s", {"eta": 1.0}, "k-diffusion", "sample_dpmpp_2s_ancestral", {"eta": 1.0}, True, True),
    ("euler_ancestral", {}, "k-diffusion", "sample_euler_ancestral", {}, True, True),
    ("dpm_solver_sde", {"lower_order_final": False}, "k-diffusion", "sample_dpmpp_2m_sde", {}, True, True),
    ("dpm_solver_3m", {}, "diffusers", "DPMSolverMultistepScheduler",
     {"solver_order": 3, "final_sigmas_type": "sigma_min"}, False, False),
    ("unipc", {"lower_order_final": False}, "diffusers", "UniPCMultistepScheduler", {}, False, True),
    ("unipc", {"order": 3}, "diffusers", "UniPCMultistepScheduler",
     {"solver_order": 3, "final_sigmas_type": "sigma_min"}, False, False),
    ("deis", {}, "diffusers", "DEISMultistepScheduler", {}, False, False),
    ("deis", {"order": 3}, "diffusers", "DEISMultistepScheduler", {"solver_order": 3}, False, False),
]


def mixture() -> GaussianMixture:
    loc = torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.0]], dtype=torch.float64)
    return GaussianMixture(loc, 0.3 * torch.eye(2, dtype=torch.float64).expand(3, 2, 2),
                           torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


def main() -> None:
    kd = peers.load_k_diffusion_sampling()
    records = []
    for sde_name, sde in (("vp", VPSDE()), ("ve", VESDE(sigma_min=0.01, sigma_max=20.0))):
        oracle = DiffusedGaussianMixture(mixture(), sde)
        t_min = sde.score_domain()[0]
        x_T = oracle.sample((4,), sde.T, generator=torch.Generator().manual_seed(0))
        for name, opts, peer, fn, peer_opts, stochastic, denoise in CASES:
            if peer == "diffusers" and sde_name != "vp":
                continue  # diffusers' schedulers are VP-only
            if peer == "k-diffusion":
                sigmas = peers.k_diffusion_sigmas(kd, sde, NUM_STEPS + 1, t_min)
                grid = sde.time_at_log_snr(-2 * torch.log(sigmas[:-1]))
                torch.manual_seed(5)
                out, nfe = peers.k_diffusion_run(kd, fn, oracle, sde, x_T, sigmas,
                                                 generator=torch.Generator().manual_seed(5) if stochastic else None,
                                                 **peer_opts)
            else:
                grid = time_grid(NUM_STEPS, sde.T, t_min, "log_snr", sde=sde)
                c = sde.coefficients(grid)
                st = c.sigma / c.alpha
                sched = peers.diffusers_scheduler(fn, sde, **peer_opts)
                if denoise:
                    out, nfe = peers.diffusers_run(sched, oracle, sde, x_T, NUM_STEPS + 1, times=grid,
                                                   sigmas=torch.cat([st, torch.zeros(1, dtype=torch.float64)]))
                else:
                    out, nfe = peers.diffusers_run(sched, oracle, sde, x_T, NUM_STEPS, times=grid[:-1], sigmas=st)
            grid[0], grid[-1] = sde.T, t_min
            records.append({"sde": sde_name, "sampler": name, "options": opts, "peer": f"{peer} {fn} {peer_opts}",
                            "final_denoise": denoise, "grid": grid.tolist(), "x_T": x_T.tolist(),
                            "peer_output": out.tolist(), "peer_nfe": nfe})
            print(sde_name, name, opts, "->", peer, fn, "NFE", nfe)
    OUT.write_text(json.dumps({"num_steps": NUM_STEPS, "cases": records}, indent=1))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
