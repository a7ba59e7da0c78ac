r"""Divergence of a vector field by automatic differentiation, exact or by Hutchinson's estimator.

Used by the instantaneous change of variables (Chen et al. 2018; seed 002 eq. 17)
in :mod:`fokker.flows.continuous` and :mod:`fokker.diffusion.likelihood`:

.. math::

    \nabla\cdot v(x) = \sum_i \frac{\partial v_i}{\partial x_i}
    = \mathbb{E}_\epsilon\big[\epsilon^\top \tfrac{\partial v}{\partial x}\,\epsilon\big]
    \quad (\mathbb{E}[\epsilon\epsilon^\top] = I).

Shapes: ``x`` is ``(*batch, *event)`` with ``len(event) = event_dim``, ``out = v(x)`` has
``x``'s shape; the divergence has shape ``batch``.  ``out`` must be computed from ``x``
with gradients enabled.
"""

from __future__ import annotations

import torch

from ._random import randint

__all__ = ["divergence_exact", "divergence_hutchinson", "rademacher"]


def divergence_exact(out: torch.Tensor, x: torch.Tensor, event_dim: int = 1, create_graph: bool = False) -> torch.Tensor:
    r""":math:`\sum_i \partial out_i/\partial x_i` over the event, one vector-Jacobian product per event coordinate."""
    batch = x.shape[: x.dim() - event_dim]
    flat = out.reshape(*batch, -1)
    div = torch.zeros(batch, dtype=out.dtype, device=out.device)
    for i in range(flat.shape[-1]):
        (g,) = torch.autograd.grad(flat[..., i].sum(), x, create_graph=create_graph, retain_graph=True)
        div = div + g.reshape(*batch, -1)[..., i]
    return div


def divergence_hutchinson(
    out: torch.Tensor, x: torch.Tensor, probe: torch.Tensor, event_dim: int = 1, create_graph: bool = False
) -> torch.Tensor:
    r"""Hutchinson's estimate :math:`\epsilon^\top J \epsilon` with the probe ``probe`` (``x``'s shape): one VJP."""
    (g,) = torch.autograd.grad(out, x, probe, create_graph=create_graph, retain_graph=True)
    return (g * probe).reshape(*x.shape[: x.dim() - event_dim], -1).sum(-1)


def rademacher(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent random signs of ``x``'s shape, dtype and device."""
    r = randint(2, x.shape, generator=generator, device=x.device)  # a CPU generator may drive CUDA draws
    return (2 * r - 1).to(x.dtype)
