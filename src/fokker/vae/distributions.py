"""The discretised logistic distribution of image decoders (Salimans et al. 2017; Kingma et al. 2016).

A pixel with ``num_bins`` intensity levels on ``[low, high]`` (bins of width
``w = (high - low) / num_bins``, bin ``k`` is ``[low + k w, low + (k + 1) w)``) gets the mass a
logistic ``L(loc, scale)`` puts on its bin, the two edge bins taking the tails:

.. math::  P(k) = F(b_k) - F(a_k), \\qquad F(y) = \\sigma\\big((y - \\mu)/s\\big),
           \\quad a_0 = -\\infty,\\; b_{K-1} = +\\infty

(Salimans, Karpathy, Chen & Kingma 2017, PixelCNN++, sec. 2.1; the same construction as the
"discretized logistic" of Kingma et al. 2016, IAF, sec. 5.2).  ``log_prob`` takes any value
inside a bin (dequantised data ``(k + U) / K`` and bin centres alike) and returns the exact
log-mass of that bin, so a VAE with this decoder reports discrete log-likelihoods.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from pyro.distributions import TorchDistribution
from torch.distributions import Distribution, constraints

from .. import _random
from .._args import check_int
from ..errors import ParameterError

__all__ = ["DiscretizedLogistic"]


class DiscretizedLogistic(TorchDistribution):
    """Logistic mass on ``num_bins`` equal bins of ``[low, high]``, edge bins holding the tails.

    Salimans, Karpathy, Chen & Kingma (2017), "PixelCNN++", ICLR, sec. 2.1 (see the module
    docstring for the formula).  Batch shape: that of ``loc`` and ``scale`` (broadcast); no event
    dimensions (wrap in ``Independent`` for images).  ``log_prob`` is exact and computed stably
    (``log(sigma(b) - sigma(a)) = b + log(-expm1(a - b)) - softplus(a) - softplus(b)``);
    ``sample`` returns bin centres; ``mean`` is the exact mean over the bin centres.

    Args:
        loc, scale: logistic location and scale (``scale > 0``).
        num_bins: number of intensity levels (e.g. 17 for the 8x8 digits, 256 for 8-bit images).
        low, high: the interval the bins partition.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(
        self, loc: Tensor, scale: Tensor, num_bins: int, low: float = 0.0, high: float = 1.0,
        validate_args: bool | None = None,
    ) -> None:
        check_int(num_bins, "num_bins", minimum=2)
        if not high > low:
            raise ParameterError(f"need low < high; got low={low!r}, high={high!r}")
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.num_bins, self.low, self.high = num_bins, float(low), float(high)
        self.width = (self.high - self.low) / num_bins
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return constraints.interval(self.low, self.high)

    def expand(self, batch_shape: torch.Size, _instance: Distribution | None = None) -> "DiscretizedLogistic":
        shape = torch.Size(batch_shape)
        return DiscretizedLogistic(self.loc.expand(shape), self.scale.expand(shape), self.num_bins, self.low, self.high,
                                   validate_args=False)

    def bin_index(self, value: Tensor) -> Tensor:
        """The bin ``k`` of each value (a float tensor of integers in ``[0, num_bins - 1]``)."""
        return torch.floor((value - self.low) / self.width).clamp(0, self.num_bins - 1)

    def _log_mass(self, k: Tensor) -> Tensor:
        """``log P(k)`` for bin indices ``k`` (broadcast against the batch)."""
        a = (self.low + k * self.width - self.loc) / self.scale
        b = (self.low + (k + 1) * self.width - self.loc) / self.scale
        first, last = k <= 0, k >= self.num_bins - 1
        # placeholders keep the unused branches finite (no NaN gradients through torch.where)
        a_safe = torch.where(first, b - 1.0, a)
        b_safe = torch.where(last, a + 1.0, b)
        inner = b_safe + torch.log(-torch.expm1(a_safe - b_safe)) - F.softplus(a_safe) - F.softplus(b_safe)
        return torch.where(first, -F.softplus(-b), torch.where(last, -F.softplus(a), inner))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self._log_mass(self.bin_index(value))

    def _centres(self) -> Tensor:
        k = torch.arange(self.num_bins, dtype=self.loc.dtype, device=self.loc.device)
        return self.low + (k + 0.5) * self.width

    @property
    def mean(self) -> Tensor:
        k = torch.arange(self.num_bins, dtype=self.loc.dtype, device=self.loc.device)
        shape = (self.num_bins,) + (1,) * len(self.batch_shape)
        p = self._log_mass(k.reshape(shape)).exp()  # (num_bins, *batch)
        return (p * self._centres().reshape(shape)).sum(0)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size(), *,
               generator: torch.Generator | None = None) -> Tensor:
        """Bin centres of draws ``loc + scale * logit(u)``, ``u ~ U(0, 1)`` from ``generator``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            u = _random.rand(shape, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps)
            y = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            k = torch.floor((y - self.low) / self.width).clamp(0, self.num_bins - 1)
            return self.low + (k + 0.5) * self.width
