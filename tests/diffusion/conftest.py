"""Fixtures for the diffusion tests: the VP SDE and a closed-form 2-D Gaussian mixture."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _diffusion_oracle import IsoGMM, VP  # noqa: E402


@pytest.fixture(scope="module")
def vpsde():
    from fokker.sde.vp import VPSDE

    return VPSDE(beta_min=0.1, beta_max=20.0)


@pytest.fixture(scope="module")
def gmm8():
    """8 narrow modes on a circle of radius 3 (scale 0.1) under VP(0.1, 20) -- a stiff oracle."""
    ang = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    mu = 3 * torch.stack([ang.cos(), ang.sin()], -1)
    return IsoGMM(mu, torch.full((8,), 0.1, dtype=torch.float64), torch.ones(8, dtype=torch.float64), VP())


@pytest.fixture(scope="module")
def gmm3():
    """3 unequal modes in 2-D under VP(0.1, 20)."""
    mu = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=torch.float64)
    return IsoGMM(
        mu, torch.tensor([0.3, 0.5, 0.4], dtype=torch.float64), torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64), VP()
    )
