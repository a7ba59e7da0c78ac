"""Sample quality of generative models from features: the Fréchet distance.

:func:`frechet_distance` is the squared 2-Wasserstein distance between the Gaussians fitted to
two feature clouds (Dowson & Landau 1982, eq. 7; Heusel et al. 2017, eq. 6, "FID" when the
features are Inception-v3's):

.. math::  d^2 = \\|\\mu_x - \\mu_y\\|^2 + \\operatorname{tr}\\big(\\Sigma_x + \\Sigma_y
           - 2 (\\Sigma_x^{1/2} \\Sigma_y \\Sigma_x^{1/2})^{1/2}\\big).

It depends on the feature map: fokker's validation uses the penultimate layer of a small
classifier trained on the 8x8 digits (no network is downloaded), so its values are comparable
within that setting only.  A plug-in estimate: biased upwards for finite samples (compare
against the distance between two real samples of the same size).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._args import check_tensor
from ..errors import ShapeError

__all__ = ["frechet_distance"]


def _psd_sqrt(a: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.mT


def frechet_distance(x: Tensor, y: Tensor) -> Tensor:
    """Fréchet distance between Gaussian fits of features ``x`` ``(n, k)`` and ``y`` ``(m, k)`` (module docstring).

    Computed in float64 (symmetric square roots by eigendecomposition); returns a 0-d float64 tensor.
    """
    check_tensor(x, "x")
    check_tensor(y, "y")
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1] or min(x.shape[0], y.shape[0]) < 2:
        raise ShapeError(f"x and y must be (n, k) and (m, k) with n, m >= 2; got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.detach().double(), y.detach().double()
    mx, my = x.mean(0), y.mean(0)
    sx, sy = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)
    root = _psd_sqrt(sx)
    cross = _psd_sqrt(root @ sy @ root)
    return ((mx - my) ** 2).sum() + torch.trace(sx + sy - 2 * cross)
