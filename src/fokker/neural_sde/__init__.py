"""Learned SDEs fitted to trajectories: the Euler-likelihood neural SDE and the latent SDE.

* :class:`NeuralSDE` -- ``dX = f(X, t) dt + g(X, t) dW`` with drift / diffusion modules, fitted by
  maximum likelihood through the Euler transition density (``loss`` for :func:`fokker.train.fit`),
  ``sample``, ``log_prob`` and Wald ``confidence_intervals`` from the observed Fisher information.
* :class:`LatentSDE` -- the latent SDE of Li, Wong, Chen & Duvenaud (2020): GRU encoder, posterior
  and prior SDEs sharing a diffusion, Gaussian decoder, ELBO with the Girsanov path KL
  (:func:`fokker.sde.girsanov_integrand` as an extra state coordinate), trained with torchsde's
  stochastic adjoint ``sdeint_adjoint``.
* Modules ``net(x, t)``: :class:`DriftNet`, :class:`DiffusionNet` (positive: softplus + floor),
  :class:`LinearDrift` (Ornstein-Uhlenbeck), :class:`PolynomialDrift` (double well),
  :class:`ConstantDiffusion`.
* :func:`path_data` -- the ``(times, paths)`` tuple :func:`fokker.train.fit` minibatches.
"""

from .latent import LatentELBO, LatentSDE
from .model import ConfidenceIntervals, NeuralSDE
from .nets import ConstantDiffusion, DiffusionNet, DriftNet, LinearDrift, PolynomialDrift
from .paths import check_paths, path_data

__all__ = [
    "NeuralSDE",
    "ConfidenceIntervals",
    "LatentSDE",
    "LatentELBO",
    "DriftNet",
    "DiffusionNet",
    "LinearDrift",
    "PolynomialDrift",
    "ConstantDiffusion",
    "path_data",
    "check_paths",
]
