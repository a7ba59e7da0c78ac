"""A CPU generator drives draws on any device (``fokker._random``): the numbers are the ones the
generator gives on the CPU, moved to the tensors' device, so a seeded run gives the same result on
CPU and GPU.  The device run of the validation found a Hutchinson probe and the SDE solver's
Brownian increments calling torch with a CPU generator and CUDA tensors (torch refuses)."""

from __future__ import annotations

import torch

from fokker import _random, sde
from fokker.divergence import rademacher
from fokker.checks import check_marginal


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_draws_follow_the_cpu_generator_on_any_device(device: torch.device) -> None:
    x = torch.zeros(64, 3, device=device, dtype=torch.float64)
    expected = torch.randn(64, 3, generator=_gen(), dtype=torch.float64)
    assert torch.equal(_random.randn_like(x, _gen()).cpu(), expected)
    signs = rademacher(x, _gen())
    assert signs.device == x.device
    assert torch.equal(signs.cpu(), (2 * torch.randint(0, 2, (64, 3), generator=_gen()) - 1).to(torch.float64))


def test_euler_solve_with_a_cpu_generator_is_device_independent(device: torch.device) -> None:
    vp = sde.VPSDE()
    grid = sde.time_grid(20, sde=vp, start=1e-3, end=1.0)
    x0 = torch.randn(32, 2, generator=_gen(1), dtype=torch.float64)
    ref = sde.solve(vp, x0, grid, method="euler", generator=_gen(2))
    out = sde.solve(vp, x0.to(device), grid.to(device), method="euler", generator=_gen(2))
    # the same increments on every device; only the arithmetic's rounding may differ
    torch.testing.assert_close(out.cpu(), ref)


def test_check_marginal_with_a_cpu_generator(device: torch.device) -> None:
    res = check_marginal(sde.VPSDE(), torch.zeros(2, dtype=torch.float64, device=device), 0.5,
                         num_samples=4000, num_steps=50, generator=_gen(3))
    assert res.passed, res
