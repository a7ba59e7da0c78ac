"""The isotropic Gaussian log-density used by the diffusion models (prior term) and the learned
samplers (kernel densities in every step of the importance weight).

.. math:: \\log \\mathcal N(x;\\, m,\\, s^2 I) = -\\frac{\\|x - m\\|^2}{2 s^2} - d \\log s - \\frac d2 \\log 2\\pi,

summed over the last ``event_dim`` dimensions of ``x`` (``d`` = their number of elements).
Written out rather than through ``torch.distributions.Normal(m, s).log_prob(x).sum(-1)``,
which gives the same values but costs about twice the time in the samplers' inner loop
(measured on a CPU: batch 300 x 10, 190 vs 350 us), where it runs twice per step.
"""

from __future__ import annotations

import math

import torch

__all__ = ["isotropic_normal_log_prob"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def isotropic_normal_log_prob(
    x: torch.Tensor,
    mean: torch.Tensor | None = None,
    std: float | torch.Tensor = 1.0,
    event_dim: int = 1,
) -> torch.Tensor:
    """``log N(x; mean, std^2 I)`` summed over the last ``event_dim`` dims; shape ``x.shape[:-event_dim]``.

    Args:
        x: points ``(..., *event)``.
        mean: broadcastable to ``x``; ``None`` is the zero mean.
        std: a positive float or 0-d tensor (one standard deviation for every coordinate).
        event_dim: number of trailing dims that form one event (``x.dim() - 1`` for batch-first data).
    """
    r = x if mean is None else x - mean
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    dims = tuple(range(x.dim() - event_dim, x.dim()))
    d = math.prod(x.shape[x.dim() - event_dim :])
    r = r / std
    return -0.5 * (r * r).sum(dims) - d * (torch.log(std) + _HALF_LOG_2PI)
