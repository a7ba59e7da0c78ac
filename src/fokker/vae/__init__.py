"""Latent-variable models: VAEs, importance-weighted bounds, flow posteriors and priors, hierarchical VAEs.

* :class:`VAE` -- encoder ``q(z|x)`` and decoder ``p(x|z)`` as ``torch.distributions``, prior a
  standard normal, any distribution or a fokker flow; ELBO with the closed-form KL where it exists,
  IWAE bound, DReG gradients, ``log_prob`` by importance sampling, ``sample`` / ``reconstruct`` /
  ``encode``; a Pyro model/guide pair (Kingma & Welling 2014; Burda et al. 2016; Tucker et al. 2019).
* encoders and decoders (:mod:`fokker.vae.conditionals`): Gaussian, flow posterior (IAF, Kingma et
  al. 2016), Gaussian / Bernoulli / discretised-logistic decoders.
* :class:`HierarchicalVAE` with top-down inference, :func:`ladder_vae` (Sønderby et al. 2016) and
  :func:`ddpm_as_hierarchical_vae`: the DDPM as a hierarchical VAE with a fixed encoder.
* :func:`linear_vae` and :class:`ProbabilisticPCA` (Tipping & Bishop 1999): the linear-Gaussian
  VAE, whose likelihood is exact.

All train with :func:`fokker.train.fit` (``model.loss(batch)``).  See ``docs/vae.md``.
"""

from __future__ import annotations

from .bounds import LatentVariableModel
from .conditionals import (
    BernoulliDecoder,
    DiscretizedLogisticDecoder,
    FlowEncoder,
    GaussianDecoder,
    GaussianEncoder,
)
from .distributions import DiscretizedLogistic
from .hierarchical import (
    HierarchicalELBOTerms,
    HierarchicalVAE,
    PrecisionWeightedPosterior,
    ddpm_as_hierarchical_vae,
    ladder_vae,
)
from .linear import ProbabilisticPCA, linear_vae
from .model import OBJECTIVES, VAE

__all__ = [
    "VAE",
    "OBJECTIVES",
    "LatentVariableModel",
    "GaussianEncoder",
    "FlowEncoder",
    "GaussianDecoder",
    "BernoulliDecoder",
    "DiscretizedLogisticDecoder",
    "DiscretizedLogistic",
    "HierarchicalVAE",
    "HierarchicalELBOTerms",
    "PrecisionWeightedPosterior",
    "ladder_vae",
    "ddpm_as_hierarchical_vae",
    "ProbabilisticPCA",
    "linear_vae",
]
