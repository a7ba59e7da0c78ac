"""fokker's samplers against recorded outputs of their peer implementations (k-diffusion, diffusers).

``benchmarks/record_peer_samplers.py`` ran each peer with the exact score of a 3-component mixture on a grid
lined up with fokker's and stored its output; the peers are not test dependencies.  diffusers' DPM-Solver
schedulers compute in float32, so those cases agree to float32 rounding only (loose tolerance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fokker.analytic import DiffusedGaussianMixture
from fokker.diffusion.samplers import SAMPLERS
from fokker.sde import VESDE, VPSDE
from fokker.targets import GaussianMixture
from fokker.tolerances import assert_close

DATA = json.loads((Path(__file__).parent / "data" / "peer_samplers.json").read_text())
CASES = DATA["cases"]


def _oracle(sde_name: str):
    sde = VPSDE() if sde_name == "vp" else VESDE(sigma_min=0.01, sigma_max=20.0)
    loc = torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.0]], dtype=torch.float64)
    gm = GaussianMixture(loc, 0.3 * torch.eye(2, dtype=torch.float64).expand(3, 2, 2),
                         torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    return sde, DiffusedGaussianMixture(gm, sde)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['sde']}-{c['sampler']}-{c['options']}" for c in CASES])
def test_sampler_matches_its_peer(case):
    sde, oracle = _oracle(case["sde"])
    grid = torch.tensor(case["grid"], dtype=torch.float64)
    x_T = torch.tensor(case["x_T"], dtype=torch.float64)
    out, nfe = SAMPLERS[case["sampler"]](oracle.score_fn, sde, x_T, grid, generator=torch.Generator().manual_seed(5),
                                         **case["options"])
    if case["final_denoise"]:
        out = oracle.denoise(out, torch.full((x_T.shape[0],), float(grid[-1]), dtype=torch.float64))
        nfe += 1
    expected = torch.tensor(case["peer_output"], dtype=torch.float64)
    assert nfe == case["peer_nfe"]
    float32_peer = "DPMSolver" in case["peer"]
    assert_close(out, expected, loose=float32_peer, scale=float(expected.abs().max()))
    # the comparison has power: the same sampler with its other lower-order rule or one step fewer differs
    other, _ = SAMPLERS[case["sampler"]](oracle.score_fn, sde, x_T, grid[:-1].clone().index_fill_(0, torch.tensor([len(grid) - 2]), float(grid[-1])),
                                         generator=torch.Generator().manual_seed(5), **case["options"])
    assert float((other - out).abs().max()) > 1e-3
