r"""Anomaly detection by partial diffusion (AnoDDPM).

Wyatt, Leach, Schmon & Willcocks (2022), *AnoDDPM: anomaly detection with denoising diffusion
probabilistic models using simplex noise* (CVPR workshops), sec. 3: an input is noised only up to
an intermediate level :math:`t^*` and denoised back with the model trained on normal data; what the
model cannot reproduce (a digit class it never saw, a lesion) comes back changed, and the
reconstruction error scores the anomaly.  Here the noise is Gaussian (the forward SDE's own
transition; the paper's simplex noise targets large image structures) and the denoising runs any
sampler of :mod:`fokker.diffusion.samplers` from :math:`t^*` down to the model's ``t_min``,
followed by the Tweedie denoiser.

* :func:`partial_diffusion` -- one reconstruction
  :math:`\hat x = D\big(\Phi_{t^*\to t_{min}}(\alpha(t^*) x + \sigma(t^*) z)\big)`, :math:`z\sim N(0, I)`.
* :func:`anomaly_score` -- the mean squared reconstruction error per input, averaged over
  ``num_repeats`` noise draws: a Monte-Carlo estimate of
  :math:`E_z \|x - \hat x\|^2 / d` (larger = more anomalous).

The model's PF-ODE log-likelihood (:meth:`DiffusionModel.log_prob`) is the other score the paper
compares with; :func:`fokker.metrics.auroc` turns scores into an AUROC.
"""

from __future__ import annotations

import torch

from .._args import check_finite, check_int, check_tensor
from .._random import randn_like
from ..errors import ParameterError
from ..sde import time_grid
from .samplers import get_sampler, sampler_defaults

__all__ = ["partial_diffusion", "anomaly_score"]


def _check(model: object, x: torch.Tensor, t_star: float, num_steps: int) -> None:
    from .model import DiffusionModel

    if not isinstance(model, DiffusionModel) or model.family.phase_space:
        raise ParameterError("model must be a DiffusionModel of a linear SDE (VP, VE, sub-VP, ...); "
                             f"got {type(model).__name__}")
    check_tensor(x, "x")
    check_finite(x, "x")
    check_int(num_steps, "num_steps")
    if isinstance(t_star, bool) or not isinstance(t_star, (int, float)) or not model.t_min < t_star <= model.T:
        raise ParameterError(f"t_star must be a number in ({model.t_min}, {model.T}]; got {t_star!r}")


@torch.no_grad()
def partial_diffusion(
    model: "object",
    x: torch.Tensor,
    t_star: float = 0.2,
    *,
    num_steps: int = 10,
    sampler: str = "dpm_solver",
    spacing: str | None = None,
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **options: object,
) -> torch.Tensor:
    r"""Noise ``x`` to level ``t_star`` and denoise it back with ``model`` (AnoDDPM's reconstruction).

    :math:`x_{t^*} = \alpha(t^*) x + \sigma(t^*) z`, then ``sampler`` over ``num_steps`` intervals of the
    grid from ``t_star`` to ``model.t_min`` (``spacing``: the sampler's default), then the Tweedie
    denoiser at ``t_min``.  NFE = the sampler's NFE + 1.

    Args:
        model: a trained :class:`~fokker.diffusion.DiffusionModel` of a linear SDE.
        x: inputs ``(batch, *event_shape)`` with the network's dtype and device.
        t_star: the diffusion time reached (``t_min < t_star <= T``); small keeps the input's
            coarse structure, ``T`` forgets it (an unconditional sample).
        y: labels of a conditional model.
        generator: the source of ``z`` and of a stochastic sampler's noise.
        options: sampler options (``eta`` ...).

    Returns:
        The reconstructions, shape of ``x``.
    """
    _check(model, x, t_star, num_steps)
    fn = get_sampler(sampler)
    sde = model.sde
    t = torch.full((x.shape[0],), float(t_star), dtype=x.dtype, device=x.device)
    c = sde.coefficients(torch.tensor([float(t_star)], dtype=torch.float64)).to(x.dtype, x.device)
    x_t = c.alpha * x + c.sigma * randn_like(x, generator)
    default = sampler_defaults(sampler, sde)
    grid = time_grid(num_steps, float(t_star), model.t_min, spacing or default.spacing, sde=sde)
    out, _ = fn(model.score_fn(y), sde, x_t, grid, generator=generator, **{**default.options, **options})
    t = torch.full_like(t, model.t_min)
    return model.denoise(out, t, y)


@torch.no_grad()
def anomaly_score(
    model: "object",
    x: torch.Tensor,
    t_star: float = 0.2,
    *,
    num_repeats: int = 4,
    num_steps: int = 10,
    sampler: str = "dpm_solver",
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **options: object,
) -> torch.Tensor:
    r"""AnoDDPM's anomaly score: the squared reconstruction error per input, mean over its entries and over
    ``num_repeats`` independent noise draws of :func:`partial_diffusion` (Wyatt et al. 2022, sec. 3).

    A Monte-Carlo estimate of :math:`E_z\,\|x - \hat x(x, z)\|^2/d`; shape ``(batch,)``, larger means
    further from what the model learned.  Cost: ``num_repeats`` reconstructions of the batch."""
    check_int(num_repeats, "num_repeats")
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(num_repeats):
        rec = partial_diffusion(model, x, t_star, num_steps=num_steps, sampler=sampler, y=y, generator=generator,
                                **options)
        total = total + (rec - x).pow(2).flatten(1).mean(-1)
    return total / num_repeats
