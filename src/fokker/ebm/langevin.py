"""Short-run Langevin chains that draw the negative samples of EBM training.

Unadjusted Langevin (seed 002 eq. 25, with ``s = grad log p = -grad E``):

.. math::  x_{m} = x_{m-1} + \\epsilon\\, \\nabla_x \\log p(x_{m-1}) + \\sqrt{2\\epsilon}\\, z_m,
           \\qquad z_m \\sim N(0, I).

``noise_scale`` decouples the noise from the step (Du & Mordatch 2019 use
``x <- x - (lambda/2) grad E + omega``, ``omega ~ N(0, sigma^2)``, with a small
``sigma``): the chain then targets a tempered density and is a heuristic, not
an MCMC kernel.  ``metropolis=True`` adds the MALA accept/reject step, which
makes every step leave ``p`` exactly invariant.

These are plain functions of a ``log_prob`` callable; they run without input
checks and without host-device syncs.  The gradient of the returned samples is
cut (contrastive divergence ignores the dependence of the negatives on the
parameters), and parameters' ``.grad`` are not touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._validation import check_int, check_positive
from ..errors import ParameterError

LogProbFn = Callable[[torch.Tensor], torch.Tensor]


def _log_prob_and_grad(log_prob: LogProbFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lp = log_prob(xg)
        (g,) = torch.autograd.grad(lp.sum(), xg)
    return lp.detach(), g


def langevin_chain(
    log_prob: LogProbFn,
    x: torch.Tensor,
    steps: int,
    step_size: float,
    noise_scale: float | None = None,
    metropolis: bool = False,
    grad_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``steps`` Langevin (or MALA) steps from ``x`` in parallel over the batch.

    Args:
        log_prob: unnormalized log density ``(..., d) -> (...)``.
        x: starting points ``(..., d)``.
        steps: number of steps ``k >= 0``.
        step_size: ``epsilon > 0``.
        noise_scale: noise standard deviation; ``None`` means the exact
            Langevin value ``sqrt(2 epsilon)``.
        metropolis: MALA (accept/reject with the Langevin proposal density);
            needs ``noise_scale=None``.
        grad_clip: clamp each gradient coordinate to ``[-grad_clip, grad_clip]``
            (a stabilizer used for neural energies; breaks exactness).

    Returns:
        ``(x_k, accept_rate)``: detached samples of the shape of ``x`` and the
        mean acceptance probability (a 0-d tensor; 1 without ``metropolis``).
    """
    check_int(steps, "steps", minimum=0)
    check_positive(step_size, "step_size")
    if noise_scale is not None:
        check_positive(noise_scale, "noise_scale")
        if metropolis:
            raise ParameterError("metropolis=True needs noise_scale=None (the exact sqrt(2*step_size) noise)")
    if grad_clip is not None:
        check_positive(grad_clip, "grad_clip")
    sd = math.sqrt(2.0 * step_size) if noise_scale is None else float(noise_scale)
    x = x.detach()
    acc_sum = torch.zeros((), dtype=x.dtype, device=x.device)
    if steps == 0:
        return x, acc_sum + 1
    lp, g = _log_prob_and_grad(log_prob, x)
    for _ in range(steps):
        if grad_clip is not None:
            g = g.clamp(-grad_clip, grad_clip)
        mean_fwd = x + step_size * g
        y = mean_fwd + sd * torch.randn_like(x)
        lp_y, g_y = _log_prob_and_grad(log_prob, y)
        if not metropolis:
            x, lp, g = y, lp_y, g_y
            acc_sum = acc_sum + 1
            continue
        if grad_clip is not None:
            g_y = g_y.clamp(-grad_clip, grad_clip)
        mean_bwd = y + step_size * g_y
        log_q_fwd = -(y - mean_fwd).pow(2).sum(-1) / (4 * step_size)
        log_q_bwd = -(x - mean_bwd).pow(2).sum(-1) / (4 * step_size)
        log_alpha = lp_y - lp + log_q_bwd - log_q_fwd
        log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf)  # a NaN proposal is rejected
        accept = torch.log(torch.rand_like(log_alpha)) < log_alpha
        acc_sum = acc_sum + log_alpha.clamp(max=0).exp().mean()
        x = torch.where(accept.unsqueeze(-1), y, x)
        lp = torch.where(accept, lp_y, lp)
        g = torch.where(accept.unsqueeze(-1), g_y, g)
    return x, acc_sum / steps


__all__ = ["langevin_chain"]
