"""Bounds on ``log p(x)`` from importance weights, shared by every latent-variable model.

For a model ``p(x, z)`` and a proposal ``q(z | x)``, the log weights
``log w_k = log p(x, z_k) - log q(z_k | x)``, ``z_k ~ q(z | x)``, give

* the **ELBO** ``E[log w]`` (Kingma & Welling 2014, eq. 3; seed 001 eq. 3);
* the **IWAE bound** ``L_K = E[log (1/K) sum_k w_k]`` (Burda, Grosse & Salakhutdinov 2016, eq. 8),
  with ``L_1 = ELBO <= L_K <= L_{K+1} <= log p(x)`` and ``L_K -> log p(x)`` as ``K -> infinity``
  (their theorem 1);
* ``log p(x)`` itself, estimated by ``log (1/K) sum_k w_k`` with a large ``K`` (importance
  sampling, Rezende et al. 2014, appendix E): consistent, biased low by about
  ``Var(w) / (2 K p(x)^2)``.

:class:`LatentVariableModel` holds the parts every model shares (argument checks, the IWAE
bound, ``log_prob`` in chunks of particles); a model implements :meth:`log_weights`.
"""

from __future__ import annotations

import math
import torch
from torch import Tensor, nn

from .._args import check_finite, check_int, check_like, check_tensor, reference_tensor
from .._progress import progress_bar
from ..errors import ShapeError
from ..importance import log_mean_exp

__all__ = ["LatentVariableModel"]


class LatentVariableModel(nn.Module):
    """Base class of :class:`~fokker.vae.VAE` and :class:`~fokker.vae.HierarchicalVAE`: bounds from log weights.

    Burda, Grosse & Salakhutdinov (2016), "Importance weighted autoencoders", ICLR (the bounds of
    the module docstring).  Subclasses set ``event_shape`` and implement :meth:`log_weights`.
    """

    event_shape: tuple[int, ...]

    def log_weights(self, x: Tensor, num_particles: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x, z_k) - log q(z_k | x)`` for ``K = num_particles`` draws ``z_k ~ q``: shape ``(K, *batch)``."""
        raise NotImplementedError

    # -- checks ----------------------------------------------------------------------------
    def _reference(self) -> Tensor | None:
        return reference_tensor(self)

    def _check_x(self, x: Tensor, name: str = "x") -> Tensor:
        check_tensor(x, name)
        check_like(x, self._reference(), name, owner=f"the {type(self).__name__}")
        k = len(self.event_shape)
        if x.dim() < k + 1 or tuple(x.shape[x.dim() - k :]) != self.event_shape:
            raise ShapeError(
                f"{name} must have shape (batch, {', '.join(map(str, self.event_shape))}); got shape {tuple(x.shape)}"
            )
        check_finite(x, name)
        return x

    # -- bounds ----------------------------------------------------------------------------
    def iwae_bound(self, x: Tensor, num_particles: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """The importance-weighted bound ``log (1/K) sum_k w_k`` per data point (Burda et al. 2016, eq. 8).

        One draw of the estimator, shape ``x``'s batch shape; its expectation ``L_K`` is a lower
        bound on ``log p(x)`` that increases with ``K = num_particles`` (``K = 1``: the ELBO).
        Differentiable (reparameterised).
        """
        check_int(num_particles, "num_particles")
        return log_mean_exp(self.log_weights(x, num_particles, generator=generator), 0)

    @torch.no_grad()
    def log_prob(
        self,
        x: Tensor,
        num_particles: int = 1000,
        *,
        chunk_size: int = 250,
        generator: torch.Generator | None = None,
        progress: bool | None = None,
    ) -> Tensor:
        """Importance-sampling estimate of ``log p(x)`` with ``num_particles`` draws of the encoder.

        ``log (1/K) sum_k w_k`` (the IWAE bound at ``K = num_particles``), accumulated over chunks
        of ``chunk_size`` particles, without gradient.  An estimate: consistent as ``K`` grows,
        biased low (its expectation is the lower bound ``L_K``).  Shape: ``x``'s batch shape.
        """
        check_int(num_particles, "num_particles")
        check_int(chunk_size, "chunk_size")
        self._check_x(x)
        total = None
        sizes = [min(chunk_size, num_particles - i) for i in range(0, num_particles, chunk_size)]
        for k in progress_bar(sizes, progress=progress, desc=f"{type(self).__name__} log_prob"):
            lse = torch.logsumexp(self.log_weights(x, k, generator=generator), 0)
            total = lse if total is None else torch.logaddexp(total, lse)
        assert total is not None
        return total - math.log(num_particles)

