"""Batch-normalisation bijection (Dinh et al. 2017, RealNVP sec. 3.7; Papamakarios et al. 2017, MAF).

Seed 000 (table of flow layers, "batch-norm").  In the density direction
(data ``x`` -> noise ``z``, the layer's *inverse* since fokker layers map noise -> data):

.. math::

    z = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}}\\, e^{\\gamma} + \\beta,
    \\qquad
    \\log\\left|\\det \\frac{\\partial z}{\\partial x}\\right| = \\sum_i \\left(\\gamma_i - \\tfrac12 \\log(\\sigma_i^2 + \\epsilon)\\right)

* **train mode**: the inverse uses the statistics ``(mu, sigma^2)`` of the batch it is
  given (mean and biased variance over every batch dimension) and updates the running
  averages ``running = (1 - momentum) running + momentum batch``.  The log-det treats
  the batch statistics as constants, the convention of the two papers above (the exact
  Jacobian of the batch map couples the examples); gradients do flow through them.
* **eval mode**: the running averages are used; the layer is then an elementwise affine
  bijection and forward/inverse/log-det are exact.
* The forward (sampling) direction always uses the running averages (the statistics
  of a batch that has not been generated yet do not exist).
"""

from __future__ import annotations

import torch
from torch import nn

from .._args import check_int, check_last_dim, check_positive, check_tensor
from ..errors import ParameterError
from .base import Bijection

__all__ = ["BatchNormFlow"]


class BatchNormFlow(Bijection):
    """Batch-norm layer as a bijection on ``(..., D)`` vectors (noise -> data).

    Dinh et al. (2017), RealNVP, sec. 3.7; Papamakarios et al. (2017), MAF (batch
    normalization between layers).  Formula and log-det in the module docstring: exact in eval mode, the
    batch statistics held constant in train mode.

    Args:
        features: event size ``D``.
        momentum: running-average weight of the newest batch, in ``(0, 1]``.
        eps: variance floor ``epsilon > 0``.

    Example:
        >>> bn = BatchNormFlow(2).eval()
        >>> x = torch.randn(5, 2)
        >>> z, ladj = bn.inverse_and_ladj(x)
        >>> torch.allclose(bn(z), x, atol=1e-5)
        True
    """

    def __init__(self, features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(event_dim=1)
        self.features = dim = check_int(features, "features")
        check_positive(momentum, "momentum")
        if momentum > 1:
            raise ParameterError(f"momentum must lie in (0, 1]; got {momentum!r}")
        check_positive(eps, "eps")
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.log_gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def _check(self, x: torch.Tensor, name: str) -> None:
        check_tensor(x, name)
        check_last_dim(x, self.features, name)

    def _ladj(self, var: torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
        """Forward (noise -> data) log-det ``sum_i (-gamma_i + 0.5 log(var_i + eps))``, broadcast to the batch."""
        ladj = (0.5 * torch.log(var + self.eps) - self.log_gamma).sum(-1)
        return ladj.expand(batch_shape)

    def call_and_ladj(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x = (z - beta) e^{-gamma} sqrt(var + eps) + mean`` with the running statistics."""
        self._check_context(context)
        self._check(z, "z")
        mean, var = self.running_mean, self.running_var
        x = (z - self.beta) * torch.exp(-self.log_gamma) * torch.sqrt(var + self.eps) + mean
        return x, self._ladj(var, z.shape[:-1])

    def inverse_and_ladj(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` from ``x`` with batch statistics (train) or running statistics (eval); log-det of x -> z."""
        self._check_context(context)
        self._check(x, "x")
        if self.training and x.numel():  # an empty batch has no statistics: use the running ones
            flat = x.reshape(-1, self.features)
            mean = flat.mean(0)
            var = (flat - mean).pow(2).mean(0)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        z = (x - mean) / torch.sqrt(var + self.eps) * torch.exp(self.log_gamma) + self.beta
        return z, -self._ladj(var, x.shape[:-1])

    def extra_repr(self) -> str:
        return f"features={self.features}, momentum={self.momentum}, eps={self.eps}"
