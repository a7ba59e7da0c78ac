"""Time grids ``0 = t_0 < t_1 < ... < t_K = T`` for the discretized samplers (float64).

* :func:`uniform_grid` -- equal steps ``T / K``.
* :func:`cosine_grid` -- the "cos_sq" scheme of the DDS code (Vargas, Grathwohl &
  Doucet 2023, after Nichol & Dhariwal 2021): step ``k`` proportional to
  ``cos^4(pi/2 (u_k + s) / (1 + s))`` with ``u_k = k / K``, normalized so the steps
  sum to ``T``.  Steps shrink towards ``t_K = T`` (the target end of the generative
  process), where the control changes fastest.  The DDS code uses
  ``u_k = k / (K - 1)``, which makes the last step exactly zero (a no-op); we use
  ``k / K`` so all ``K`` steps are proper.
"""

from __future__ import annotations

import math

import torch

from .._args import check_int, check_positive
from ..errors import ParameterError

__all__ = ["uniform_grid", "cosine_grid", "make_grid"]


def uniform_grid(T: float, num_steps: int) -> torch.Tensor:
    """``t_k = k T / K``, ``k = 0..K``; float64 tensor of shape ``(K + 1,)``."""
    check_positive(T, "T")
    check_int(num_steps, "num_steps")
    return torch.linspace(0.0, float(T), num_steps + 1, dtype=torch.float64)


def cosine_grid(T: float, num_steps: int, s: float = 0.008) -> torch.Tensor:
    """DDS "cos_sq" grid (see module docstring); float64 tensor of shape ``(K + 1,)``."""
    check_positive(T, "T")
    check_int(num_steps, "num_steps")
    check_positive(s, "s")
    u = torch.arange(num_steps, dtype=torch.float64) / num_steps
    dt = torch.cos((u + s) / (1.0 + s) * math.pi / 2) ** 4
    dt = dt / dt.sum() * float(T)
    t = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(dt, 0)])
    t[-1] = float(T)
    return t


def make_grid(kind: str, T: float, num_steps: int) -> torch.Tensor:
    """Grid by name: ``"uniform"`` or ``"cosine"``."""
    if kind == "uniform":
        return uniform_grid(T, num_steps)
    if kind == "cosine":
        return cosine_grid(T, num_steps)
    raise ParameterError(f"grid must be 'uniform' or 'cosine'; got {kind!r}")
