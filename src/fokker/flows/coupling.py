"""Coupling layers: one generic mechanism, any elementwise monotone map, any mask.

With a binary mask splitting the coordinates into a conditioning part ``A`` (mask
True, copied) and a transformed part ``B`` (Dinh et al. 2015, NICE, sec. 3.2; Dinh et al.
2017, RealNVP, sec. 3.3; seed 002 "coupling flows", seed 003 NICE / RealNVP):

.. math::

    y_A = x_A,\\qquad y_B = h(x_B;\\ \\theta(x_A, c)),\\qquad
    \\log|\\det J| = \\sum_{i \\in B} \\log h'(x_i;\\ \\theta_i)

The Jacobian is block-triangular (``dy_A/dx_B = 0``, ``dy_B/dx_B`` diagonal), the
inverse is exact and costs one conditioner call: ``x_B = h^{-1}(y_B; theta(y_A, c))``.

Vectors (``event_dim=1``) use index selection: the conditioner sees only ``x_A`` (and
the context ``c``) and outputs parameters for ``B`` only.  Images (``event_dim=3``,
``(C, H, W)``) use a convolutional conditioner on ``x * mask`` and ``torch.where``.

Specializations: :class:`AdditiveCoupling` (NICE), :class:`AffineCoupling` (RealNVP),
:class:`SplineCoupling` (neural spline flow, coupling form).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._args import check_int
from ..errors import ParameterError, ShapeError
from ..nets import MLP, check_hidden
from .base import Bijection, broadcast_context
from .elementwise import Additive, Affine, ElementwiseMap, RationalQuadratic

__all__ = [
    "Coupling",
    "AdditiveCoupling",
    "AffineCoupling",
    "SplineCoupling",
    "ConvNet",
    "half_mask",
    "alternating_mask",
    "checkerboard_mask",
    "channel_mask",
]


# -- masks (True = conditioning / copied coordinates) ------------------------------------
def half_mask(features: int, flip: bool = False) -> Tensor:
    """First ``features // 2`` coordinates True (``flip``: the complement)."""
    check_int(features, "features", minimum=2)
    m = torch.arange(features) < features // 2
    return ~m if flip else m


def alternating_mask(features: int, flip: bool = False) -> Tensor:
    """Even coordinates True (``flip``: odd ones)."""
    check_int(features, "features", minimum=2)
    m = torch.arange(features) % 2 == 0
    return ~m if flip else m


def checkerboard_mask(shape: Sequence[int], flip: bool = False) -> Tensor:
    """Spatial checkerboard over ``(C, H, W)`` (same for every channel), RealNVP's image mask."""
    C, H, W = shape
    m = (torch.arange(H)[:, None] + torch.arange(W)[None, :]) % 2 == 0
    m = m.expand(C, H, W).clone()
    return ~m if flip else m


def channel_mask(shape: Sequence[int], flip: bool = False) -> Tensor:
    """First ``C // 2`` channels True over ``(C, H, W)``, RealNVP's channel-wise mask."""
    C, H, W = shape
    if C < 2:
        raise ParameterError(f"channel_mask needs at least 2 channels; got shape {tuple(shape)}")
    m = (torch.arange(C) < C // 2)[:, None, None].expand(C, H, W).clone()
    return ~m if flip else m


class ConvNet(nn.Sequential):
    """Conditioner of image couplings: 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv (Kingma & Dhariwal 2018, sec. 3.3).

    Shapes ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64) -> None:
        check_int(in_channels, "in_channels")
        check_int(out_channels, "out_channels")
        check_int(hidden, "hidden")
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        )


class Coupling(Bijection):
    """Generic coupling layer ``y_A = x_A``, ``y_B = h(x_B; theta(x_A, context))``.

    Dinh et al. (2015), NICE, sec. 3.2 (general coupling); Dinh et al. (2017), RealNVP,
    sec. 3.3-3.5; Durkan et al. (2019), NSF, sec. 3 (spline couplings).  ``log|det J| = sum_{i in B}
    log h'(x_i; theta_i)`` (block-triangular Jacobian; exact).

    Args:
        transform: the elementwise monotone map ``h`` (:mod:`fokker.flows.elementwise`).
        mask: boolean tensor of the event shape, True on the conditioning part ``A``;
            shape ``(d,)`` for vectors or ``(C, H, W)`` for images.  Both parts must be
            non-empty.
        hidden: hidden sizes of the default MLP conditioner (vectors) or the channel
            width of the default :class:`ConvNet` (images, first entry).
        context_dim: size of the context vector (vectors only; 0 = unconditional).
        conditioner: optional custom network; vectors: ``(..., |A| + context_dim) ->
            (..., |B| * num_params)``; images: ``(N, C, H, W) -> (N, C * num_params, H, W)``.
        activation: activation class of the default MLP.

    Shapes: ``x`` ``(*batch, *event)``, context ``(*batch, context_dim)`` (broadcast).
    """

    def __init__(
        self,
        transform: ElementwiseMap,
        mask: Tensor,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        conditioner: nn.Module | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        if not isinstance(transform, ElementwiseMap):
            raise ParameterError(f"transform must be an ElementwiseMap (Affine, RationalQuadratic, ...); got {transform!r}")
        hidden = check_hidden(hidden)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.dim() not in (1, 3):
            raise ShapeError(f"mask must have shape (d,) or (C, H, W); got shape {tuple(mask.shape)}")
        if bool(mask.all()) or not bool(mask.any()):
            raise ParameterError("mask must have both True (conditioning) and False (transformed) entries")
        super().__init__(event_dim=mask.dim(), context_dim=context_dim)
        self.transform = transform
        self.features = int(mask.shape[0])
        self.event_shape = tuple(mask.shape)
        P = transform.num_params
        self.register_buffer("mask", mask, persistent=False)
        if mask.dim() == 1:
            idx_a = torch.nonzero(mask).squeeze(-1)
            idx_b = torch.nonzero(~mask).squeeze(-1)
            self.register_buffer("idx_a", idx_a, persistent=False)
            self.register_buffer("idx_b", idx_b, persistent=False)
            self.register_buffer("perm_inv", torch.argsort(torch.cat([idx_a, idx_b])), persistent=False)
            self.conditioner = conditioner or MLP(
                len(idx_a) + self.context_dim, len(idx_b) * P, hidden, activation
            )
        else:
            if context_dim:
                raise ParameterError("context_dim > 0 is supported for vector couplings only")
            C = mask.shape[0]
            width = hidden[0] if len(hidden) else 64
            self.conditioner = conditioner or ConvNet(C, C * P, int(width))

    # -- conditioner ---------------------------------------------------------------------
    def _params_vec(self, xa: Tensor, context: Tensor | None) -> Tensor:
        if self.context_dim:
            assert context is not None
            context = broadcast_context(context, xa.shape[:-1])
            xa = torch.cat([xa.expand(*context.shape[:-1], xa.shape[-1]), context], -1)
        out = self.conditioner(xa)
        return out.unflatten(-1, (len(self.idx_b), self.transform.num_params))

    def _params_img(self, xa: Tensor) -> Tensor:
        batch = xa.shape[:-3]
        out = self.conditioner(xa.reshape(-1, *self.event_shape))
        C = self.event_shape[0]
        out = out.unflatten(1, (C, self.transform.num_params)).movedim(2, -1)
        return out.reshape(*batch, *out.shape[1:])

    def _couple(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        self._check_input(v, "y" if inverse else "x", self.event_shape)
        self._check_context(context)
        h = self.transform.inverse if inverse else self.transform.forward
        if self._event_dim == 1:
            va, vb = v[..., self.idx_a], v[..., self.idx_b]
            params = self._params_vec(va, context)
            out_b, l = h(vb, params)
            va = va.expand(*out_b.shape[:-1], va.shape[-1])
            return torch.cat([va, out_b], -1)[..., self.perm_inv], l.sum(-1)
        m = self.mask
        params = self._params_img(v * m)
        out, l = h(v, params)
        out = torch.where(m, v, out)
        l = torch.where(m, torch.zeros_like(l), l)
        return out, l.sum((-3, -2, -1))

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=True)

    def extra_repr(self) -> str:
        return f"transform={self.transform!r}, event_shape={self.event_shape}, context_dim={self.context_dim}"


def _coupling_mask(features: int, mask: Tensor | None) -> Tensor:
    check_int(features, "features")
    if mask is None:
        return half_mask(features)
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.dim() not in (1, 3) or mask.shape[0] != features:
        raise ShapeError(
            f"mask must have shape ({features},) or ({features}, H, W) for features={features}; got shape {tuple(mask.shape)}"
        )
    return mask


class AdditiveCoupling(Coupling):
    """NICE additive coupling ``y_B = x_B + t(x_A, c)`` (Dinh et al. 2015, sec. 3.2; seed 003): volume preserving.

    Args:
        features: ``d`` (vectors) or the number of channels ``C`` (images, then ``mask`` is
            ``(C, H, W)``).
        hidden: conditioner hidden sizes (images: channel width ``hidden[0]``).
        context_dim: context size (vectors only).
        mask: True on the conditioning part; default :func:`half_mask` ``(features)``.
        conditioner, activation: see :class:`Coupling`.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        mask: Tensor | None = None,
        conditioner: nn.Module | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(Additive(), _coupling_mask(features, mask), hidden, context_dim, conditioner, activation)


class AffineCoupling(Coupling):
    """RealNVP affine coupling (Dinh et al. 2017, sec. 3.3-3.5; seed 003).

    Density direction (data -> noise) ``x_B = y_B exp(s(y_A, c)) + t(y_A, c)``, ``s``
    soft-clamped to ``(-B, B)``; ``log|det dx/dy| = sum_B s`` (exact).

    Args:
        features, hidden, context_dim, mask, conditioner, activation: see :class:`AdditiveCoupling`.
        scale_bound: the log-scale bound ``B`` of :class:`~fokker.flows.elementwise.Affine`.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        mask: Tensor | None = None,
        scale_bound: float = 7.0,
        conditioner: nn.Module | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(
            Affine(scale_bound), _coupling_mask(features, mask), hidden, context_dim, conditioner, activation
        )


class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling (Durkan et al. 2019, NSF, sec. 3.1-3.2).

    ``y_B = h(x_B; theta(x_A, c))`` with a monotone rational-quadratic spline on
    ``[-bound, bound]`` and identity tails; exact log-det.

    Args:
        features, hidden, context_dim, mask, conditioner, activation: see :class:`AdditiveCoupling`.
        bins, bound: see :class:`~fokker.flows.elementwise.RationalQuadratic`.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        mask: Tensor | None = None,
        bins: int = 8,
        bound: float = 5.0,
        conditioner: nn.Module | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(
            RationalQuadratic(bins, bound), _coupling_mask(features, mask), hidden, context_dim, conditioner, activation
        )
