"""A diagonal Gaussian target with a known log Z, exact samples and an analytic score."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.targets.base import Target


class DiagGaussian(Target):
    """``gamma(x) = Z N(x; mean, diag(var))``."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, log_Z: float = 0.0) -> None:
        super().__init__(mean.shape[0], log_Z, "diag_gaussian")
        self.register_buffer("mean", mean)
        self.register_buffer("var", var)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return (
            -0.5 * ((x - self.mean) ** 2 / self.var).sum(-1)
            - 0.5 * torch.log(2 * math.pi * self.var).sum()
            + self.log_Z
        )

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return -(x - self.mean) / self.var

    def _sample(self, sample_shape: torch.Size) -> torch.Tensor:
        eps = torch.randn(*sample_shape, self.dim, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.var.sqrt() * eps


LOG_Z = 1.3


def make_gaussian(device="cpu", dtype=torch.float64) -> DiagGaussian:
    mean = torch.tensor([1.0, -0.5], dtype=dtype, device=device)
    var = torch.tensor([0.5, 2.0], dtype=dtype, device=device)
    return DiagGaussian(mean, var, LOG_Z)


@pytest.fixture
def gaussian(device) -> DiagGaussian:
    return make_gaussian(device)
