"""The discretised logistic: bin masses against the logistic CDF, normalisation, sampling frequencies, mean."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.errors import ParameterError
from fokker.tolerances import Z_SCORE, assert_close
from fokker.vae import DiscretizedLogistic


def _cdf_masses(loc: float, scale: float, num_bins: int, low: float, high: float) -> torch.Tensor:
    """P(bin k) = F(b_k) - F(a_k) with the logistic CDF in float64, the edge bins taking the tails."""
    edges = torch.linspace(low, high, num_bins + 1, dtype=torch.float64)
    F = torch.sigmoid((edges - loc) / scale)
    F[0], F[-1] = 0.0, 1.0
    return F[1:] - F[:-1]


@pytest.mark.parametrize("loc,scale", [(0.3, 0.05), (0.95, 0.2), (-0.5, 0.1), (0.5, 1e-4)])
def test_masses_are_cdf_differences_and_sum_to_one(loc: float, scale: float, dtype) -> None:
    d = DiscretizedLogistic(torch.tensor(loc, dtype=dtype), torch.tensor(scale, dtype=dtype), 17)
    centres = (torch.arange(17, dtype=dtype) + 0.5) / 17
    lp = d.log_prob(centres)
    expected = _cdf_masses(loc, scale, 17, 0.0, 1.0)
    assert_close(lp.exp(), expected.to(dtype), loose=True)
    assert_close(torch.logsumexp(lp.double(), 0), torch.tensor(0.0, dtype=torch.float64), loose=dtype == torch.float32)
    # dequantised values (k + u) / 17 fall in bin k and get the same mass
    u = torch.rand(17, dtype=dtype) * 0.999
    assert_close(d.log_prob((torch.arange(17, dtype=dtype) + u) / 17), lp)
    assert torch.isfinite(lp).all()  # far bins of a tiny scale stay finite (no log of 0 - 0)
    # exact mean over the bin centres
    assert_close(d.mean, (expected.to(dtype) * centres).sum(), loose=True)


def test_sample_frequencies_match_the_masses() -> None:
    d = DiscretizedLogistic(torch.tensor(0.4, dtype=torch.float64), torch.tensor(0.15, dtype=torch.float64), 8, -1.0, 1.0)
    n = 40_000
    s = d.sample((n,), generator=torch.Generator().manual_seed(0))
    k = torch.round((s + 1) / 0.25 - 0.5).long()
    assert_close(s, -1 + (k.double() + 0.5) * 0.25)  # bin centres
    freq = torch.bincount(k, minlength=8).double() / n
    p = _cdf_masses(0.4, 0.15, 8, -1.0, 1.0)
    assert torch.all((freq - p).abs() <= Z_SCORE * torch.sqrt(p * (1 - p) / n) + 1e-12)


def test_gradients_are_finite_at_the_edges_and_bad_arguments_raise() -> None:
    loc = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.01, 0.01, 0.3], dtype=torch.float64, requires_grad=True)
    d = DiscretizedLogistic(loc, scale, 256)
    d.log_prob(torch.tensor([0.0, 0.999, 0.5], dtype=torch.float64)).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()
    with pytest.raises(ParameterError, match="num_bins"):
        DiscretizedLogistic(torch.zeros(1), torch.ones(1), 1)
    with pytest.raises(ParameterError, match="low < high"):
        DiscretizedLogistic(torch.zeros(1), torch.ones(1), 4, 1.0, 0.0)
    assert math.isclose(float(DiscretizedLogistic(torch.zeros(()), torch.ones(()), 4, 0.0, 2.0).width), 0.5)
