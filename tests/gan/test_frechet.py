"""Fréchet distance of feature clouds against scipy's matrix square root and the closed form for diagonal covariances."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from fokker.errors import ShapeError
from fokker.gan import frechet_distance
from fokker.tolerances import assert_close


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 4, generator=g, dtype=torch.float64)
    y = torch.randn(200, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 4, generator=g, dtype=torch.float64) + 1.0
    sx, sy = np.cov(x.numpy().T), np.cov(y.numpy().T)
    covmean = scipy.linalg.sqrtm(sx @ sy).real  # the formula as usually implemented (Heusel et al. 2017)
    expected = float(((x.mean(0) - y.mean(0)) ** 2).sum()) + float(np.trace(sx + sy - 2 * covmean))
    assert_close(frechet_distance(x, y), torch.tensor(expected, dtype=torch.float64), loose=True)
    assert_close(frechet_distance(x, x), torch.tensor(0.0, dtype=torch.float64), loose=True, scale=float(np.trace(sx)))


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form_w2() -> None:
    """Commuting covariances: W2^2 = |m1 - m2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2, with the samples' own moments."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    y = torch.randn(5000, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64) + 3.0
    # whiten the sample cross-correlations so the sample covariances are exactly diagonal
    x = (x - x.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(x.T))).T * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    y = (y - y.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(y.T))).T * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64) + 3.0
    expected = 9.0 * 3 + (1.0 - 2.0) ** 2 + (2.0 - 1.0) ** 2
    assert_close(frechet_distance(x, y), torch.tensor(expected, dtype=torch.float64))


def test_bad_shapes() -> None:
    with pytest.raises(ShapeError):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ShapeError):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
