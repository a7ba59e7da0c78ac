"""The public schedule protocol of linear SDEs: what diffusion models and samplers may rely on.

A linear SDE ``dX = f(t) X dt + g(t) dW`` has Gaussian marginals
``X_t | X_0 = x_0 ~ N(alpha(t) x_0, sigma(t)^2 I)`` (Särkkä & Solin 2019, *Applied
Stochastic Differential Equations*, eqs. 6.2-6.3; Song et al. 2021, eq. 29) with

.. math::

    f(t) = \\frac{d}{dt}\\log\\alpha(t), \\qquad
    g^2(t) = \\frac{d\\sigma^2}{dt} - 2 f(t)\\,\\sigma^2(t) = -\\sigma^2(t)\\,\\lambda'(t), \\qquad
    \\lambda(t) = \\log\\frac{\\alpha^2(t)}{\\sigma^2(t)} \\;(\\text{log-SNR}),

(Kingma et al. 2021, *Variational Diffusion Models*, eq. 2 and appendix A.)  Any object with
these members satisfies :class:`Schedule`; every :class:`~fokker.sde.LinearSDE` does.  Other
packages (diffusion, samplers, checks, analytic) use only this protocol, never an SDE's
private hooks.  Values are float64 tensors of the shape of ``t``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch

__all__ = ["Coefficients", "Schedule"]


class Coefficients(NamedTuple):
    """Schedule values at times ``t`` (float64 tensors of ``t``'s shape), from ``sde.coefficients(t)``."""

    t: torch.Tensor
    alpha: torch.Tensor  #: mean coefficient alpha(t)
    sigma: torch.Tensor  #: marginal standard deviation sigma(t)
    f: torch.Tensor  #: drift coefficient f(t) = d log alpha / dt
    g2: torch.Tensor  #: squared diffusion g(t)^2

    @property
    def log_snr(self) -> torch.Tensor:
        """``lambda(t) = log(alpha^2 / sigma^2)`` (``+inf`` where ``sigma = 0``)."""
        return 2.0 * (torch.log(self.alpha) - torch.log(self.sigma))

    def to(self, dtype: torch.dtype, device: torch.device | str | None = None) -> "Coefficients":
        """All values cast to ``dtype`` (and moved to ``device``)."""
        return Coefficients(*(v.to(device=device, dtype=dtype) for v in self))


@runtime_checkable
class Schedule(Protocol):
    """What a linear forward SDE exposes to the rest of the library.

    ``T`` and ``t_min`` bound the time domain; the methods take a float or a tensor ``t``
    and return tensors of its shape.  ``coefficients(t)`` returns all of them at once in
    float64 (one call per sampling run: samplers precompute their grids with it).
    """

    T: float
    t_min: float

    def alpha(self, t: float | torch.Tensor) -> torch.Tensor: ...

    def sigma(self, t: float | torch.Tensor) -> torch.Tensor: ...

    def f(self, t: float | torch.Tensor) -> torch.Tensor: ...

    def g2(self, t: float | torch.Tensor) -> torch.Tensor: ...

    def log_snr(self, t: float | torch.Tensor) -> torch.Tensor: ...

    def coefficients(self, t: float | torch.Tensor) -> Coefficients: ...
