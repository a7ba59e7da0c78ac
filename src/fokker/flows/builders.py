"""Builders returning a ready-to-train :class:`~fokker.flows.flow.Flow`.

Each builder stacks ``transforms`` layers of one kind, alternating masks / orders so
every coordinate is transformed and conditioned on every other one:

* :func:`nice` — additive couplings + a final ActNorm scaling (Dinh et al. 2014);
* :func:`realnvp` — affine couplings (Dinh et al. 2017);
* :func:`maf` / :func:`iaf` — masked autoregressive affine layers, orders alternating
  ascending / descending (Papamakarios et al. 2017; Kingma et al. 2016);
* :func:`nsf` — rational-quadratic spline flows, coupling or autoregressive
  (Durkan et al. 2019);
* :func:`glow` — the multiscale image architecture: per level squeeze, ``steps`` x
  (ActNorm, invertible 1x1 conv, affine coupling), split (Kingma & Dhariwal 2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._args import check_int
from ..errors import ParameterError
from .autoregressive import MaskedAutoregressive
from .base import Bijection
from .coupling import Coupling, channel_mask, checkerboard_mask, half_mask, alternating_mask
from .elementwise import Additive, Affine, ElementwiseMap, RationalQuadratic
from .flow import Flow
from .glow import Multiscale
from .linear import ActNorm, InvertibleConv1x1

__all__ = ["nice", "realnvp", "maf", "iaf", "nsf", "glow"]


def _vector_mask(dim: int, kind: str, flip: bool) -> torch.Tensor:
    if kind == "half":
        return half_mask(dim, flip)
    if kind == "alternating":
        return alternating_mask(dim, flip)
    raise ParameterError(f"mask must be 'half' or 'alternating'; got {kind!r}")


def _couplings(
    dim: int, transforms: int, make_map: type | object, hidden: Sequence[int], context_dim: int,
    mask: str, activation: type[nn.Module],
) -> list[Bijection]:
    check_int(dim, "dim", minimum=2)
    check_int(transforms, "transforms")
    layers: list[Bijection] = []
    for i in range(transforms):
        h: ElementwiseMap = make_map() if callable(make_map) else make_map  # type: ignore[assignment]
        # alternate so that the layer applied first to data (the last one here) uses the
        # unflipped mask, as zuko's flows (which are written data -> noise) do
        flip = (transforms - 1 - i) % 2 == 1
        layers.append(Coupling(h, _vector_mask(dim, mask, flip=flip), hidden, context_dim, activation=activation))
    return layers


def _autoregressive(
    dim: int, transforms: int, make_map, hidden: Sequence[int], context_dim: int, one_pass: str,
    activation: type[nn.Module],
) -> list[Bijection]:
    check_int(dim, "dim")
    check_int(transforms, "transforms")
    up = torch.arange(1, dim + 1)
    # orders alternate ascending / descending, ascending for the layer that meets the data
    # first (the last one in this noise -> data list), matching zuko's MAF / NSF
    return [
        MaskedAutoregressive(
            make_map(), dim, hidden, context_dim, up if (transforms - 1 - i) % 2 == 0 else up.flip(0), one_pass,
            activation,
        )
        for i in range(transforms)
    ]


def nice(
    dim: int, transforms: int = 4, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    mask: str = "alternating", activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """NICE: additive couplings (volume preserving) followed by a learned diagonal scaling."""
    layers = _couplings(dim, transforms, Additive, hidden, context_dim, mask, activation)
    return Flow([*layers, ActNorm(dim)], dim, context_dim=context_dim)


def realnvp(
    dim: int, transforms: int = 4, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    mask: str = "alternating", scale_bound: float = 7.0, activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """RealNVP: affine couplings with soft-clamped log-scales (Dinh et al. 2017)."""
    layers = _couplings(dim, transforms, lambda: Affine(scale_bound), hidden, context_dim, mask, activation)
    return Flow(layers, dim, context_dim=context_dim)


def maf(
    dim: int, transforms: int = 5, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    scale_bound: float = 7.0, activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """Masked autoregressive flow: density (``log_prob``) in one pass per layer."""
    layers = _autoregressive(dim, transforms, lambda: Affine(scale_bound), hidden, context_dim, "inverse", activation)
    return Flow(layers, dim, context_dim=context_dim)


def iaf(
    dim: int, transforms: int = 5, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    scale_bound: float = 7.0, activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """Inverse autoregressive flow: sampling and ``sample_and_log_prob`` in one pass per layer."""
    layers = _autoregressive(dim, transforms, lambda: Affine(scale_bound), hidden, context_dim, "forward", activation)
    return Flow(layers, dim, context_dim=context_dim)


def nsf(
    dim: int, transforms: int = 5, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    kind: str = "coupling", bins: int = 8, bound: float = 5.0, mask: str = "half",
    activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """Neural spline flow (rational-quadratic splines, linear tails outside ``[-bound, bound]``).

    Args:
        kind: ``"coupling"`` (one pass both ways) or ``"autoregressive"`` (density in one
            pass, sampling sequential).
    """
    make = lambda: RationalQuadratic(bins, bound)  # noqa: E731
    if kind == "coupling":
        layers = _couplings(dim, transforms, make, hidden, context_dim, mask, activation)
    elif kind == "autoregressive":
        layers = _autoregressive(dim, transforms, make, hidden, context_dim, "inverse", activation)
    else:
        raise ParameterError(f"kind must be 'coupling' or 'autoregressive'; got {kind!r}")
    return Flow(layers, dim, context_dim=context_dim)


def glow(
    shape: Sequence[int], levels: int = 2, steps: int = 4, hidden: int = 64, mask: str = "channel",
    scale_bound: float = 7.0,
) -> Flow:
    """Glow-style multiscale flow on ``(C, H, W)`` images (``H``, ``W`` divisible by ``2**levels``).

    Args:
        levels: number of squeeze levels; all but the last factor out half the channels.
        steps: flow steps per level, each (noise -> data) affine coupling, invertible 1x1
            convolution, ActNorm (so ActNorm meets the data first and is data-initialized).
        hidden: channel width of the coupling conditioners.
        mask: ``"channel"`` (Glow) or ``"checkerboard"`` (RealNVP) coupling masks (a level
            whose squeezed image is 1x1 uses channel masks).
    """
    C, H, W = (int(s) for s in shape)
    check_int(levels, "levels")
    check_int(steps, "steps")
    if H % 2**levels or W % 2**levels:
        raise ParameterError(f"height and width must be divisible by 2**levels={2**levels}; got shape {tuple(shape)}")
    if mask not in ("channel", "checkerboard"):
        raise ParameterError(f"mask must be 'channel' or 'checkerboard'; got {mask!r}")
    shapes = []
    c, h, w = C, H, W
    for _ in range(levels):
        shapes.append((c, h, w))
        c, h, w = 2 * c, h // 2, w // 2
    level: Multiscale | None = None
    for i, (c, h, w) in reversed(list(enumerate(shapes))):
        sq = (4 * c, h // 2, w // 2)
        layers: list[Bijection] = []
        for k in range(steps):
            # a 1x1 image has no checkerboard: the coarsest level falls back to channel masks
            board = mask == "checkerboard" and sq[1] * sq[2] > 1
            m = checkerboard_mask(sq, flip=k % 2 == 1) if board else channel_mask(sq, flip=k % 2 == 1)
            layers += [Coupling(Affine(scale_bound), m, (hidden,)), InvertibleConv1x1(sq[0]), ActNorm(sq[0], event_dim=3)]
        level = Multiscale((c, h, w), layers, next=level if i < levels - 1 else None)
    assert level is not None
    return Flow([level], (C, H, W))
