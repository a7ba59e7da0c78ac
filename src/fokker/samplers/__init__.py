"""Learned diffusion samplers for unnormalized targets, with log Z estimates.

* :class:`DDS` -- Denoising Diffusion Sampler (Vargas, Grathwohl & Doucet 2023).
* :class:`PIS` -- Path Integral Sampler (Zhang & Chen 2022).
* :class:`DIS` -- time-reversed Diffusion Sampler (Berner, Richter & Ullrich 2024).

All three share one discrete-time machinery (:class:`DiffusionSampler`): exact
importance weights of the discretized chain, reverse-KL or log-variance losses,
``fit`` through :func:`fokker.train.fit`, ``sample(sample_shape) -> (x, log_w)`` and
``log_Z(num_samples) ->`` :class:`fokker.importance.LogZEstimate` (``log_Z``, ``stderr``, ``ess``,
``elbo``, ``eubo``).

Example::

    from fokker import samplers
    dds = samplers.DDS(target)
    dds.fit(steps=2000)
    est = dds.log_Z(2000)
    est.log_Z, est.stderr, est.ess, est.elbo
"""

from .base import DiffusionSampler
from .cmcd import CMCD, MCD, AnnealedLangevinSampler
from .dds import DDS
from .dis import DIS
from .networks import PISGradNet
from .optimal import GaussianOptimalControl
from .pis import PIS

__all__ = [
    "DDS",
    "PIS",
    "DIS",
    "CMCD",
    "MCD",
    "AnnealedLangevinSampler",
    "DiffusionSampler",
    "PISGradNet",
    "GaussianOptimalControl",
]
