"""The exact toy densities against the toy samplers: normalisation and binned counts (chi-square)."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.datasets import toy
from fokker.datasets.densities import TOY_DENSITIES, toy_log_prob
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import Z_SCORE


def _cell_masses(log_p, lim: float, cells: int, sub: int) -> torch.Tensor:
    """Mass of each of cells x cells squares of [-lim, lim]^2 by the midpoint rule on sub x sub points."""
    h = 2 * lim / (cells * sub)
    u = -lim + h * (torch.arange(cells * sub, dtype=torch.float64) + 0.5)
    X, Y = torch.meshgrid(u, u, indexing="ij")
    dens = log_p(torch.stack([X, Y], -1).reshape(-1, 2)).exp().reshape(cells * sub, cells * sub) * h * h
    return dens.reshape(cells, sub, cells, sub).sum((1, 3))


@pytest.mark.parametrize("name", sorted(TOY_DENSITIES))
def test_density_matches_the_sampler(name: str) -> None:
    lim, cells = 5.0, 10
    log_p = toy_log_prob(name)
    masses = _cell_masses(log_p, lim, cells, 8)
    assert abs(float(masses.sum()) - 1.0) < 1e-2  # (almost) all the mass lies in the box
    n = 40_000
    x = toy.TOY_DATASETS[name](n, seed=3, dtype=torch.float64)
    inside = (x.abs() < lim).all(-1)
    idx = ((x[inside] + lim) / (2 * lim / cells)).long().clamp(0, cells - 1)
    counts = torch.bincount(idx[:, 0] * cells + idx[:, 1], minlength=cells * cells).reshape(cells, cells).double()
    expected = masses * n
    keep = expected > 20
    chi2 = float((((counts - expected) ** 2) / expected)[keep].sum())
    dof = int(keep.sum()) - 1
    # chi-square with dof degrees of freedom: mean dof, sd sqrt(2 dof)
    assert chi2 < dof + Z_SCORE * math.sqrt(2 * dof), f"{name}: chi2 {chi2:.1f} with {dof} dof"
    assert bool(torch.isfinite(log_p(x[:2000])).all())  # samples lie in the support


def test_a_wrong_density_is_rejected() -> None:
    """The same chi-square test rejects the rings density for eight-Gaussian samples (a control)."""
    lim, cells, n = 5.0, 10, 40_000
    masses = _cell_masses(toy_log_prob("rings"), lim, cells, 8)
    x = toy.eight_gaussians(n, seed=3, dtype=torch.float64)
    idx = ((x + lim) / (2 * lim / cells)).long().clamp(0, cells - 1)
    counts = torch.bincount(idx[:, 0] * cells + idx[:, 1], minlength=cells * cells).reshape(cells, cells).double()
    keep = masses * n > 20
    chi2 = float((((counts - masses * n) ** 2) / (masses * n))[keep].sum())
    assert chi2 > 10 * int(keep.sum())


def test_bad_input() -> None:
    with pytest.raises(ParameterError, match="pinwheel"):
        toy_log_prob("pinwheel")
    with pytest.raises(ShapeError, match="x"):
        toy_log_prob("rings")(torch.zeros(3, 3))
