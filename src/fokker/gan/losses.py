"""GAN objectives and the Lipschitz constraints of Wasserstein critics.

With ``d(x)`` the discriminator's logit (``D = sigmoid(d)``) or the critic's value, ``x_r`` data
and ``x_g = G(z)`` generated samples (seed 002 eqs. 40-44):

=====================  ============================================  ====================================
``loss``               discriminator / critic minimises              generator minimises
=====================  ============================================  ====================================
``"minimax"``          ``-E log D(x_r) - E log(1 - D(x_g))``         ``E log(1 - D(x_g))`` (saturating)
``"non_saturating"``   the same                                      ``-E log D(x_g)``
``"wasserstein"``      ``E f(x_g) - E f(x_r)``                       ``-E f(x_g)``
=====================  ============================================  ====================================

Goodfellow et al. (2014), eq. 1 and sec. 3 (the non-saturating generator loss); Arjovsky, Chintala
& Bottou (2017), WGAN, eq. 3.  ``log D = -softplus(-d)`` and ``log(1 - D) = -softplus(d)`` are
computed stably.  At the optimal discriminator ``d* = log p_data / p_g`` the minimax value is
``2 JSD(p_data || p_g) - log 4`` (Goodfellow et al., theorem 1).

A Wasserstein critic must be (about) 1-Lipschitz: weight clipping (Arjovsky et al. 2017,
algorithm 1), the gradient penalty (Gulrajani et al. 2017, eq. 3; :func:`gradient_penalty`) or
spectral normalisation (Miyato et al. 2018; :class:`fokker.nets.SpectralNormLinear`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _random
from .._args import check_positive
from ..errors import ParameterError, ShapeError

__all__ = ["LOSSES", "discriminator_loss", "generator_loss", "gradient_penalty", "clip_weights"]

#: the GAN objectives (``loss=``)
LOSSES = ("minimax", "non_saturating", "wasserstein")


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ParameterError(f"loss must be one of {LOSSES}; got {loss!r}")
    return loss


def discriminator_loss(loss: str, d_real: Tensor, d_fake: Tensor) -> Tensor:
    """The discriminator's (critic's) loss from its outputs on data and on generated samples (table above)."""
    _check_loss(loss)
    if loss == "wasserstein":
        return d_fake.mean() - d_real.mean()
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def generator_loss(loss: str, d_fake: Tensor) -> Tensor:
    """The generator's loss from the discriminator's outputs on generated samples (table above)."""
    _check_loss(loss)
    if loss == "wasserstein":
        return -d_fake.mean()
    if loss == "minimax":
        return -F.softplus(d_fake).mean()
    return F.softplus(-d_fake).mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    weight: float = 10.0,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP's penalty ``lambda E[(||grad_x f(x_hat)||_2 - 1)^2]`` (Gulrajani et al. 2017, eq. 3).

    ``x_hat = eps x_r + (1 - eps) x_g`` with one ``eps ~ U[0, 1]`` per pair, drawn from
    ``generator``; the gradient is taken with ``create_graph=True`` so the penalty trains the critic.
    ``real`` and ``fake``: ``(B, *event_shape)``; ``critic`` maps them to ``(B,)`` values.

    Raises :class:`~fokker.errors.ParameterError` when the critic's output has no gradient path
    to its input (a detached or non-differentiable critic cannot be penalised).
    """
    check_positive(weight, "weight")
    if real.shape != fake.shape:
        raise ShapeError(f"real and fake must have the same shape; got {tuple(real.shape)} and {tuple(fake.shape)}")
    eps = _random.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, dtype=real.dtype,
                       device=real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        out = critic(x_hat)
        if not out.requires_grad:
            raise ParameterError("the discriminator's output has no gradient path from its input (no detach, no integer "
                                 "ops between x and d(x)): the gradient penalty cannot be computed")
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True, allow_unused=True)
    if grad is None:
        raise ParameterError("the discriminator's output has no gradient path from its input (it does not depend on x "
                             "differentiably): the gradient penalty cannot be computed")
    norm = grad.flatten(1).norm(dim=1)
    return weight * ((norm - 1) ** 2).mean()


@torch.no_grad()
def clip_weights(module: nn.Module, clip: float) -> None:
    """Clamp every parameter of ``module`` to ``[-clip, clip]`` in place (Arjovsky et al. 2017, algorithm 1)."""
    check_positive(clip, "clip")
    for p in module.parameters():
        p.clamp_(-clip, clip)
