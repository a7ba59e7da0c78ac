"""Short-run Langevin chains that draw the negative samples of EBM training.

Unadjusted Langevin (Roberts & Tweedie 1996; seed 002 eq. 25, with ``s = grad log p = -grad E``):

.. math::  x_{m} = x_{m-1} + \\epsilon\\, \\nabla_x \\log p(x_{m-1}) + \\sqrt{2\\epsilon}\\, z_m,
           \\qquad z_m \\sim N(0, I).

The steps are those of :class:`fokker.mcmc.ULA` / :class:`fokker.mcmc.MALA`
(``metropolis=True`` adds the MALA accept/reject step, which leaves ``p``
exactly invariant): this function runs those kernels at a fixed step size.

``noise_scale`` decouples the noise from the step (Du & Mordatch 2019 use
``x <- x - (lambda/2) grad E + omega``, ``omega ~ N(0, sigma^2)``, with a small
``sigma``) and ``grad_clip`` clamps the gradient: both are heuristics for
neural energies (the chain no longer targets ``p``), options of :class:`fokker.mcmc.ULA`.

No input checks and no host-device syncs inside the loop.  The returned
samples are detached (contrastive divergence ignores the dependence of the
negatives on the parameters), and parameters' ``.grad`` are not touched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._args import check_int, check_positive
from ..errors import ParameterError
from ..mcmc import MALA, ULA
from ..targets.base import Target, as_target

LogProbFn = Callable[[torch.Tensor], torch.Tensor]


def langevin_chain(
    log_prob: LogProbFn | Target,
    x: torch.Tensor,
    num_steps: int,
    step_size: float,
    noise_scale: float | None = None,
    metropolis: bool = False,
    grad_clip: float | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``num_steps`` Langevin (or MALA) steps from ``x`` in parallel over the batch.

    Args:
        log_prob: a :class:`~fokker.targets.Target` or an unnormalized log density ``(..., d) -> (...)``.
        x: starting points ``(..., d)``.
        num_steps: number of steps ``k >= 0``.
        step_size: ``epsilon > 0``.
        noise_scale: noise standard deviation; ``None`` means the exact
            Langevin value ``sqrt(2 epsilon)``.
        metropolis: MALA (accept/reject with the Langevin proposal density);
            needs ``noise_scale=None`` and ``grad_clip=None``.
        grad_clip: clamp each gradient coordinate to ``[-grad_clip, grad_clip]``
            (a stabilizer used for neural energies; breaks exactness).
        generator: the ``torch.Generator`` of the noise (and MALA's uniforms).

    Returns:
        ``(x_k, accept_rate)``: detached samples of the shape of ``x`` and the
        mean acceptance probability (a 0-d tensor; 1 without ``metropolis``).
    """
    check_int(num_steps, "num_steps", minimum=0)
    check_positive(step_size, "step_size")
    if metropolis and noise_scale is not None:
        raise ParameterError("metropolis=True needs noise_scale=None (the exact sqrt(2*step_size) noise)")
    if metropolis and grad_clip is not None:
        raise ParameterError("metropolis=True needs grad_clip=None (the exact MALA proposal)")
    target = as_target(log_prob, dim=x.shape[-1])
    if metropolis:
        kernel: ULA | MALA = MALA(target, step_size=step_size, generator=generator)
    else:
        kernel = ULA(target, step_size=step_size, noise_scale=noise_scale, grad_clip=grad_clip, generator=generator)
    x = x.detach()
    acc_sum = torch.zeros((), dtype=x.dtype, device=x.device)
    if num_steps == 0:
        return x, acc_sum + 1
    shape = x.shape
    state = kernel.init(x.reshape(-1, shape[-1]))
    for _ in range(num_steps):
        state, info = kernel.step(state)
        acc_sum = acc_sum + info.accept_prob.mean()
    return state.x.reshape(shape), acc_sum / num_steps


__all__ = ["langevin_chain"]
