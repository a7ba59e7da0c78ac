"""fokker._gaussian: the isotropic Gaussian log-density against torch.distributions.Normal."""

from __future__ import annotations

import torch
from torch.distributions import Normal

from fokker._gaussian import isotropic_normal_log_prob
from fokker.tolerances import assert_close


def test_matches_torch_normal_with_mean_and_tensor_std(device, dtype):
    y = torch.randn(5, 3, device=device, dtype=dtype)
    m = torch.randn(5, 3, device=device, dtype=dtype)
    std = torch.tensor(0.7, device=device, dtype=dtype)
    assert_close(isotropic_normal_log_prob(y, m, std), Normal(m, std).log_prob(y).sum(-1))


def test_zero_mean_float_std_over_several_event_dims(device, dtype):
    """Batch-first images (batch, C, H, W) with event_dim = 3, as the diffusion prior uses it."""
    x = 2.0 * torch.randn(4, 2, 3, 3, device=device, dtype=dtype)
    expected = Normal(torch.zeros((), device=device, dtype=dtype), 1.5).log_prob(x).sum((1, 2, 3))
    out = isotropic_normal_log_prob(x, None, 1.5, event_dim=3)
    assert out.shape == (4,) and out.dtype == dtype
    assert_close(out, expected)
