"""Generative adversarial networks: vanilla / non-saturating GAN, WGAN, WGAN-GP, spectral norm, DDLS.

* :class:`GAN` -- generator + discriminator with the minimax, non-saturating or Wasserstein loss
  (Goodfellow et al. 2014; Arjovsky et al. 2017), weight clipping, gradient penalty (Gulrajani et
  al. 2017), any number of critic steps per generator step; trained by :func:`fokker.train.fit`,
  which takes the game as alternating one-player steps (see :mod:`fokker.gan.model`), with
  :class:`AlternatingAdam` as its optimizer.
* the discriminator as an energy: :meth:`GAN.energy`, :meth:`GAN.latent_log_prob` and
  discriminator-driven latent sampling :meth:`GAN.ddls` with :mod:`fokker.mcmc` (Che et al. 2020).
* networks :class:`Generator`, :class:`Discriminator` (``spectral_norm=True``: Miyato et al. 2018,
  via :class:`fokker.nets.SpectralNormLinear`); losses and :func:`gradient_penalty` as functions.
* :func:`frechet_distance` of feature clouds (Heusel et al. 2017).

See ``docs/gan.md``.
"""

from __future__ import annotations

from .losses import LOSSES, clip_weights, discriminator_loss, generator_loss, gradient_penalty
from .metrics import frechet_distance
from .model import GAN, AlternatingAdam
from .nets import Discriminator, Generator

__all__ = [
    "GAN",
    "AlternatingAdam",
    "Generator",
    "Discriminator",
    "LOSSES",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "clip_weights",
    "frechet_distance",
]
