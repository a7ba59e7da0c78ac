"""Short-run Langevin chains that draw the negative samples of EBM training.

Unadjusted Langevin (seed 002 eq. 25, with ``s = grad log p = -grad E``):

.. math::  x_{m} = x_{m-1} + \\epsilon\\, \\nabla_x \\log p(x_{m-1}) + \\sqrt{2\\epsilon}\\, z_m,
           \\qquad z_m \\sim N(0, I).

With the exact noise ``sqrt(2 eps)`` the steps are those of
:class:`fokker.mcmc.ULA` / :class:`fokker.mcmc.MALA` (``metropolis=True`` adds
the MALA accept/reject step, which leaves ``p`` exactly invariant), and this
function simply runs those kernels with a fixed step size.

``noise_scale`` decouples the noise from the step (Du & Mordatch 2019 use
``x <- x - (lambda/2) grad E + omega``, ``omega ~ N(0, sigma^2)``, with a small
``sigma``) and ``grad_clip`` clamps the gradient: both are heuristics for
neural energies (the chain no longer targets ``p``) and run in a short loop here.

No input checks and no host-device syncs inside the loop.  The returned
samples are detached (contrastive divergence ignores the dependence of the
negatives on the parameters), and parameters' ``.grad`` are not touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._args import check_int, check_positive
from ..errors import ParameterError
from ..targets.base import Target, as_target

LogProbFn = Callable[[torch.Tensor], torch.Tensor]


def _grad(log_prob: LogProbFn, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(log_prob(xg).sum(), xg)
    return g


def langevin_chain(
    log_prob: LogProbFn | Target,
    x: torch.Tensor,
    steps: int,
    step_size: float,
    noise_scale: float | None = None,
    metropolis: bool = False,
    grad_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``steps`` Langevin (or MALA) steps from ``x`` in parallel over the batch.

    Args:
        log_prob: a :class:`~fokker.targets.Target` or an unnormalized log density ``(..., d) -> (...)``.
        x: starting points ``(..., d)``.
        steps: number of steps ``k >= 0``.
        step_size: ``epsilon > 0``.
        noise_scale: noise standard deviation; ``None`` means the exact
            Langevin value ``sqrt(2 epsilon)``.
        metropolis: MALA (accept/reject with the Langevin proposal density);
            needs ``noise_scale=None`` and ``grad_clip=None``.
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
        if metropolis:
            raise ParameterError("metropolis=True needs grad_clip=None (the exact MALA proposal)")
    x = x.detach()
    acc_sum = torch.zeros((), dtype=x.dtype, device=x.device)
    if steps == 0:
        return x, acc_sum + 1
    if noise_scale is None and grad_clip is None:
        return _mcmc_chain(log_prob, x, steps, step_size, metropolis)
    if isinstance(log_prob, Target):
        log_prob = log_prob.log_prob_unchecked
    sd = math.sqrt(2.0 * step_size) if noise_scale is None else float(noise_scale)
    for _ in range(steps):  # the heuristic Du & Mordatch chain (no accept/reject)
        g = _grad(log_prob, x)
        if grad_clip is not None:
            g = g.clamp(-grad_clip, grad_clip)
        x = x + step_size * g + sd * torch.randn_like(x)
    return x, acc_sum + 1


def _mcmc_chain(
    log_prob: LogProbFn | Target, x: torch.Tensor, steps: int, step_size: float, metropolis: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` transitions of :class:`fokker.mcmc.MALA` / :class:`fokker.mcmc.ULA` at a fixed step size."""
    from ..mcmc import MALA, ULA

    target = as_target(log_prob, dim=x.shape[-1])
    kernel = (MALA if metropolis else ULA)(target, step_size=step_size)
    shape = x.shape
    state = kernel.init(x.reshape(-1, shape[-1]))
    acc_sum = torch.zeros((), dtype=x.dtype, device=x.device)
    for _ in range(steps):
        state, info = kernel.step(state)
        acc_sum = acc_sum + info.accept_prob.mean()
    return state.x.reshape(shape), acc_sum / steps


__all__ = ["langevin_chain"]
