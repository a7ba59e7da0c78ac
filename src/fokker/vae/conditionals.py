"""Encoders ``q(z | x)`` and decoders ``p(x | z)``: networks that return ``torch.distributions``.

Every conditional here is an ``nn.Module`` whose ``forward`` maps a batch of inputs to a
``torch.distributions.Distribution`` (a Pyro distribution, so that the same modules
serve in ``pyro.sample``) with the inputs' batch shape (Kingma & Welling 2014,
sec. 3 and appendix C; seed 002 table 2):

* :class:`GaussianEncoder` -- ``q(z|x) = N(mu(x), diag sigma(x)^2)``, reparameterised;
* :class:`FlowEncoder` -- the Gaussian pushed through a fokker flow conditioned on features of
  ``x`` (inverse autoregressive flow posterior, Kingma et al. 2016);
* :class:`GaussianDecoder`, :class:`BernoulliDecoder`, :class:`DiscretizedLogisticDecoder` --
  ``p(x|z)`` for real, binary and quantised (image) data.

Inputs carry the data's ``event_shape`` (a vector ``(d,)`` or an image ``(C, H, W)``) after any
batch dimensions; the networks are :class:`fokker.nets.MLP` s on the flattened event.  Scales:

* ``"amortized"`` -- a network output per coordinate (``softplus`` of it);
* ``"per_dim"`` -- one learned scale per coordinate, the same for every input;
* ``"shared"`` -- one learned scalar (an isotropic Gaussian: probabilistic PCA's decoder);
* a positive float -- fixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
import pyro.distributions as pdist
from torch.distributions import Distribution

from .._args import check_int, check_positive
from ..errors import ParameterError, ShapeError
from ..flows import Bijection, ConditionedBijection, Flow, FlowDistribution
from ..nets import MLP, as_event_shape, check_hidden
from .distributions import DiscretizedLogistic

__all__ = [
    "GaussianEncoder",
    "FlowEncoder",
    "GaussianDecoder",
    "BernoulliDecoder",
    "DiscretizedLogisticDecoder",
]

_SCALES = ("amortized", "per_dim", "shared")
_SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(_SOFTPLUS_ONE) = 1


class _Scale(nn.Module):
    """The scale of a Gaussian conditional: amortized, one per coordinate, one shared, or fixed."""

    def __init__(self, scale: str | float, size: int) -> None:
        super().__init__()
        if isinstance(scale, str):
            if scale not in _SCALES:
                raise ParameterError(f"scale must be one of {_SCALES} or a positive float; got {scale!r}")
            self.kind = scale
            if scale != "amortized":
                self.raw = nn.Parameter(torch.full((size if scale == "per_dim" else 1,), _SOFTPLUS_ONE))
        else:
            check_positive(scale, "scale")
            self.kind = "fixed"
            self.register_buffer("value", torch.tensor(float(scale)))

    @property
    def amortized(self) -> bool:
        return self.kind == "amortized"

    def forward(self, out: Tensor | None) -> Tensor:
        """The scale; ``out`` is the network's raw scale output (amortized only)."""
        if self.kind == "amortized":
            return F.softplus(out) + 1e-6
        if self.kind == "fixed":
            return self.value
        return F.softplus(self.raw) + 1e-6


def _flatten(x: Tensor, event_shape: tuple[int, ...], name: str) -> Tensor:
    k = len(event_shape)
    if x.dim() < k or tuple(x.shape[x.dim() - k :]) != event_shape:
        raise ShapeError(f"{name} must have shape (..., {', '.join(map(str, event_shape))}); got shape {tuple(x.shape)}")
    return x.reshape(*x.shape[: x.dim() - k], -1)


class GaussianEncoder(nn.Module):
    """``q(z | x) = N(mu(x), diag sigma(x)^2)``, an ``Independent(Normal)`` over ``latent_dim``.

    Kingma & Welling (2014), "Auto-encoding variational Bayes", ICLR, appendix C.2; reparameterised
    (``z = mu + sigma * eps``).  ``hidden=()`` makes ``mu`` affine in ``x`` (a linear encoder).

    Args:
        event_shape: the data's event shape (``d`` or ``(C, H, W)``).
        latent_dim: size of ``z``.
        hidden: hidden widths of the MLP.
        scale: ``"amortized"`` (default), ``"per_dim"``, ``"shared"`` or a fixed float (module docstring).
        activation: activation class of the MLP.
    """

    def __init__(
        self, event_shape: int | Sequence[int], latent_dim: int, hidden: Sequence[int] = (256, 256),
        scale: str | float = "amortized", activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        self.latent_dim = check_int(latent_dim, "latent_dim")
        self.scale = _Scale(scale, latent_dim)
        out = latent_dim * (2 if self.scale.amortized else 1)
        self.net = MLP(math.prod(self.event_shape), out, check_hidden(hidden), activation)

    def forward(self, x: Tensor) -> Distribution:
        h = self.net(_flatten(x, self.event_shape, "x"))
        mu, raw = (h.chunk(2, -1) if self.scale.amortized else (h, None))
        return pdist.Independent(pdist.Normal(mu, self.scale(raw).expand_as(mu), validate_args=False), 1, validate_args=False)


class FlowEncoder(nn.Module):
    """A flow posterior: ``z = T(z_0; h(x))`` with ``z_0 ~ N(mu(x), diag sigma(x)^2)``.

    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), "Improved variational inference
    with inverse autoregressive flow", NeurIPS, sec. 4 (the Gaussian ``z_0`` and a context ``h``
    from the encoder network, then IAF steps conditioned on ``h``); Rezende & Mohamed (2015) for
    flows as posteriors in general.  ``log q(z|x) = log N(z_0) - sum_k log|det dT_k/dz_{k-1}|``,
    exact.

    Args:
        event_shape, latent_dim, hidden, activation: as :class:`GaussianEncoder`.
        flow: a conditional :class:`fokker.flows.Flow` on ``latent_dim`` whose layers are fokker
            bijections with ``context_dim == context_dim`` (its own base is not used: the Gaussian
            ``z_0`` is); default ``fokker.flows.iaf(latent_dim, transforms=2, hidden=(64, 64),
            context_dim=context_dim)``.
        context_dim: size of the context ``h(x)``.

    ``forward(x)`` returns a :class:`fokker.flows.FlowDistribution` whose layers cache their last
    call: ``log_prob`` of a value it has just drawn with ``rsample`` reuses the stored noise (one
    network pass per layer for IAF); other values are inverted.
    """

    def __init__(
        self, event_shape: int | Sequence[int], latent_dim: int, flow: Flow | None = None,
        hidden: Sequence[int] = (256, 256), context_dim: int = 32, activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        self.latent_dim = check_int(latent_dim, "latent_dim")
        self.context_dim = check_int(context_dim, "context_dim")
        if flow is None:
            from ..flows import iaf

            flow = iaf(latent_dim, transforms=2, hidden=(64, 64), context_dim=context_dim)
        if not isinstance(flow, Flow):
            raise ParameterError(f"flow must be a fokker.flows.Flow; got {type(flow).__name__}")
        if flow.event_shape != (latent_dim,):
            raise ShapeError(f"flow must have event_shape ({latent_dim},) (the latent); got {flow.event_shape}")
        for layer in flow.transforms:
            if not isinstance(layer, Bijection):
                raise ParameterError(f"flow layers must be fokker bijections; got {type(layer).__name__}")
            if layer.context_dim not in (0, context_dim):
                raise ShapeError(f"{type(layer).__name__} takes a context of size {layer.context_dim}; "
                                 f"the encoder gives context_dim={context_dim}")
        self.flow = flow
        self.net = MLP(math.prod(self.event_shape), 2 * latent_dim + context_dim, check_hidden(hidden), activation)

    def forward(self, x: Tensor) -> Distribution:
        out = self.net(_flatten(x, self.event_shape, "x"))
        mu, raw, h = out.split([self.latent_dim, self.latent_dim, self.context_dim], -1)
        base = pdist.Independent(pdist.Normal(mu, F.softplus(raw) + 1e-6, validate_args=False), 1, validate_args=False)
        parts = [ConditionedBijection(t, h if t.context_dim else None, cache_size=1) for t in self.flow.transforms]
        return FlowDistribution(base, parts, validate_args=False)


class _Decoder(nn.Module):
    """An MLP from ``z`` to the parameters of ``p(x | z)``, reshaped to ``(*batch, *event_shape)``."""

    def __init__(self, latent_dim: int, event_shape: int | Sequence[int], hidden: Sequence[int], num_outputs: int,
                 activation: type[nn.Module]) -> None:
        super().__init__()
        self.latent_dim = check_int(latent_dim, "latent_dim")
        self.event_shape = as_event_shape(event_shape)
        self.numel = math.prod(self.event_shape)
        self.net = MLP(latent_dim, num_outputs * self.numel, check_hidden(hidden), activation)

    def _params(self, z: Tensor) -> list[Tensor]:
        if z.dim() == 0 or z.shape[-1] != self.latent_dim:
            raise ShapeError(f"z must have shape (..., {self.latent_dim}); got shape {tuple(z.shape)}")
        out = self.net(z)
        return [p.reshape(*z.shape[:-1], *self.event_shape) for p in out.split(self.numel, -1)]


class GaussianDecoder(_Decoder):
    """``p(x | z) = N(mu(z), diag sigma^2)`` over the data's event shape.

    Kingma & Welling (2014), appendix C.2.  With ``hidden=()`` and ``scale="shared"`` this is the
    linear-Gaussian decoder ``x = W z + b + s eps`` of probabilistic PCA (Tipping & Bishop 1999).

    Args:
        latent_dim, event_shape: sizes of ``z`` and of one data point.
        hidden: hidden widths of the MLP.
        scale: ``"shared"`` (default), ``"per_dim"``, ``"amortized"`` or a fixed float.
    """

    def __init__(
        self, latent_dim: int, event_shape: int | Sequence[int], hidden: Sequence[int] = (256, 256),
        scale: str | float = "shared", activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        scale_mod = _Scale(scale, math.prod(as_event_shape(event_shape)))
        super().__init__(latent_dim, event_shape, hidden, 2 if scale_mod.amortized else 1, activation)
        self.scale = scale_mod

    def forward(self, z: Tensor) -> Distribution:
        params = self._params(z)
        mu = params[0]
        sigma = self.scale(params[1] if self.scale.amortized else None)
        if not self.scale.amortized and sigma.numel() > 1:
            sigma = sigma.reshape(self.event_shape)
        return pdist.Independent(pdist.Normal(mu, sigma.expand_as(mu), validate_args=False), len(self.event_shape),
                           validate_args=False)


class BernoulliDecoder(_Decoder):
    """``p(x | z) = prod_i Bernoulli(x_i; sigmoid(f_i(z)))`` for binary data.

    Kingma & Welling (2014), appendix C.1.
    """

    def __init__(self, latent_dim: int, event_shape: int | Sequence[int], hidden: Sequence[int] = (256, 256),
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(latent_dim, event_shape, hidden, 1, activation)

    def forward(self, z: Tensor) -> Distribution:
        (logits,) = self._params(z)
        return pdist.Independent(pdist.Bernoulli(logits=logits, validate_args=False), len(self.event_shape), validate_args=False)


class DiscretizedLogisticDecoder(_Decoder):
    """``p(x | z)``: per pixel a :class:`~fokker.vae.distributions.DiscretizedLogistic` with ``num_bins`` levels.

    Salimans et al. (2017), PixelCNN++, sec. 2.1; Kingma et al. (2016), IAF, sec. 5.2.  The network
    gives a location and a scale per pixel; ``log_prob`` is the exact discrete log-mass, so a VAE
    with this decoder bounds the log-probability of the quantised image.

    Args:
        latent_dim, event_shape, hidden, activation: as :class:`GaussianDecoder`.
        num_bins: number of intensity levels (17 for :func:`fokker.datasets.digits`).
        low, high: the interval the bins partition (``(0, 1)`` for unit-scale data).
    """

    def __init__(
        self, latent_dim: int, event_shape: int | Sequence[int], hidden: Sequence[int] = (256, 256),
        num_bins: int = 256, low: float = 0.0, high: float = 1.0, activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(latent_dim, event_shape, hidden, 2, activation)
        self.num_bins = check_int(num_bins, "num_bins", minimum=2)
        if not high > low:
            raise ParameterError(f"need low < high; got low={low!r}, high={high!r}")
        self.low, self.high = float(low), float(high)

    def forward(self, z: Tensor) -> Distribution:
        loc, raw = self._params(z)
        centre = 0.5 * (self.low + self.high)
        scale = (F.softplus(raw) + 1e-3) * (self.high - self.low) / self.num_bins
        dist = DiscretizedLogistic(centre + loc, scale, self.num_bins, self.low, self.high, validate_args=False)
        return pdist.Independent(dist, len(self.event_shape), validate_args=False)
