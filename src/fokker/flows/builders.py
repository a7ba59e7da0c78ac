"""Builders returning a ready-to-train :class:`~fokker.flows.flow.Flow` made of the layer classes.

Each builder stacks ``transforms`` layers of one class, alternating masks / orders so
every coordinate is transformed and conditioned on every other one (as zuko's ``NSF``
specialises its ``MAF``, a builder is only a loop over a layer class):

* :func:`nice` — :class:`AdditiveCoupling` layers + a final :class:`ActNorm` scaling
  (Dinh et al. 2015, NICE, sec. 3.3 "allowing rescaling");
* :func:`realnvp` — :class:`AffineCoupling` layers (Dinh et al. 2017);
* :func:`maf` / :func:`iaf` — :class:`MAF` / :class:`IAF` layers, orders alternating
  ascending / descending (Papamakarios et al. 2017; Kingma et al. 2016);
* :func:`nsf` — :class:`SplineCoupling` or :class:`SplineAutoregressive` layers
  (Durkan et al. 2019);
* :func:`naf` / :func:`unaf` / :func:`sospf` — :class:`NeuralAutoregressive`,
  :class:`UnconstrainedNeuralAutoregressive`, :class:`SumOfSquaresAutoregressive` layers (Huang
  et al. 2018; Wehenkel & Louppe 2019; Jaini et al. 2019), orders alternating as in :func:`maf`;
* :func:`bnaf` — :class:`BlockAutoregressive` layers with order reversals between them (De Cao
  et al. 2019);
* :func:`glow` — the multiscale image architecture: per level squeeze, ``depth`` x
  (ActNorm, invertible 1x1 conv, affine coupling), split (Kingma & Dhariwal 2018);
* :func:`planar_flow` — planar (Rezende & Mohamed 2015), radial or Sylvester (van den Berg
  et al. 2018) layers;
* :func:`residual_flow` — i-ResNet / Residual Flow blocks (Behrmann et al. 2019; Chen et
  al. 2019), each followed by an ActNorm (as in Chen et al.);
* :func:`ffjord` — continuous normalizing flow layers (Grathwohl et al. 2019).

Every builder takes ``features`` (the event size), ``transforms`` (number of layers) and,
where it has networks, ``hidden`` (hidden sizes); the vector builders with a context take
``context_dim``.  Each records its arguments in ``flow.config`` (plain data) so that
:func:`fokker.flows.save` / :func:`fokker.flows.load` can rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._args import check_int, check_positive
from ..errors import ParameterError
from ..nets import check_hidden
from .autoregressive import (
    IAF,
    MAF,
    NeuralAutoregressive,
    SplineAutoregressive,
    SumOfSquaresAutoregressive,
    UnconstrainedNeuralAutoregressive,
)
from .base import Bijection
from .block import BlockAutoregressive
from .continuous import EXACT_TRACE_MAX_DIM, ContinuousFlow
from .coupling import AdditiveCoupling, AffineCoupling, SplineCoupling, alternating_mask, channel_mask, checkerboard_mask, half_mask
from .emerging import EmergingConv
from .flow import Flow
from .glow import Multiscale
from .linear import ActNorm, InvertibleConv1x1
from .permute import Reverse
from .planar import Planar
from .radial import Radial
from .residual import ResidualFlow
from .sylvester import Sylvester

__all__ = [
    "nice", "realnvp", "maf", "iaf", "nsf", "naf", "unaf", "sospf", "bnaf", "glow", "planar_flow", "residual_flow", "ffjord",
    "BUILDERS",
]

#: name -> builder, for :func:`fokker.flows.load`
BUILDERS: dict[str, Callable[..., Flow]] = {}


def _builder(fn: Callable[..., Flow]) -> Callable[..., Flow]:
    BUILDERS[fn.__name__] = fn
    return fn


def _finish(flow: Flow, name: str, kwargs: dict[str, Any]) -> Flow:
    """Record the builder and its arguments on the flow (``flow.config``)."""
    flow.config = {"builder": name, "kwargs": dict(kwargs)}
    return flow


def _check_vector(features: int, transforms: int, hidden: Sequence[int] | None = None, minimum: int = 1) -> None:
    check_int(features, "features", minimum=minimum)
    check_int(transforms, "transforms")
    if hidden is not None:
        check_hidden(hidden)


def _masks(features: int, transforms: int, kind: str) -> list[torch.Tensor]:
    """Masks of the layers in noise -> data order; the layer applied first to the data (the
    last one) gets the unflipped mask, as zuko's flows (written data -> noise) do."""
    make = {"half": half_mask, "alternating": alternating_mask}.get(kind)
    if make is None:
        raise ParameterError(f"mask must be 'half' or 'alternating'; got {kind!r}")
    return [make(features, flip=(transforms - 1 - i) % 2 == 1) for i in range(transforms)]


def _ranks(features: int, transforms: int) -> list[torch.Tensor]:
    """Autoregressive orders alternating ascending / descending, ascending for the layer that
    meets the data first (the last one in this noise -> data list), matching zuko's MAF / NSF."""
    up = torch.arange(1, features + 1)
    return [up if (transforms - 1 - i) % 2 == 0 else up.flip(0) for i in range(transforms)]


@_builder
def nice(
    features: int, transforms: int = 4, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    mask: str = "alternating", activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """NICE: additive couplings (volume preserving) followed by a learned diagonal scaling (ActNorm).

    Dinh et al. (2015), sec. 3.3; the scaling is unconditional, the couplings take the context.
    """
    _check_vector(features, transforms, hidden, minimum=2)
    layers: list[Bijection] = [
        AdditiveCoupling(features, hidden, context_dim, mask=m, activation=activation)
        for m in _masks(features, transforms, mask)
    ]
    flow = Flow([*layers, ActNorm(features)], features, context_dim=context_dim)
    return _finish(flow, "nice", dict(features=features, transforms=transforms, hidden=tuple(hidden),
                                      context_dim=context_dim, mask=mask, activation=activation))


@_builder
def realnvp(
    features: int, transforms: int = 4, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    mask: str = "alternating", scale_bound: float = 7.0, activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """RealNVP: affine couplings with soft-clamped log-scales (Dinh et al. 2017, eqs. 6-9)."""
    _check_vector(features, transforms, hidden, minimum=2)
    layers = [
        AffineCoupling(features, hidden, context_dim, mask=m, scale_bound=scale_bound, activation=activation)
        for m in _masks(features, transforms, mask)
    ]
    flow = Flow(layers, features, context_dim=context_dim)
    return _finish(flow, "realnvp", dict(features=features, transforms=transforms, hidden=tuple(hidden),
                                         context_dim=context_dim, mask=mask, scale_bound=scale_bound,
                                         activation=activation))


def _affine_autoregressive(
    layer: type[MAF] | type[IAF], name: str, features: int, transforms: int, hidden: Sequence[int],
    context_dim: int, scale_bound: float, activation: type[nn.Module],
) -> Flow:
    _check_vector(features, transforms, hidden)
    layers = [layer(features, hidden, context_dim, r, scale_bound, activation) for r in _ranks(features, transforms)]
    flow = Flow(layers, features, context_dim=context_dim)
    return _finish(flow, name, dict(features=features, transforms=transforms, hidden=tuple(hidden),
                                    context_dim=context_dim, scale_bound=scale_bound, activation=activation))


@_builder
def maf(
    features: int, transforms: int = 5, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    scale_bound: float = 7.0, activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """Masked autoregressive flow (Papamakarios et al. 2017): density (``log_prob``) in one pass per layer."""
    return _affine_autoregressive(MAF, "maf", features, transforms, hidden, context_dim, scale_bound, activation)


@_builder
def iaf(
    features: int, transforms: int = 5, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    scale_bound: float = 7.0, activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """Inverse autoregressive flow (Kingma et al. 2016): sampling and ``sample_and_log_prob`` in one pass per layer."""
    return _affine_autoregressive(IAF, "iaf", features, transforms, hidden, context_dim, scale_bound, activation)


@_builder
def nsf(
    features: int, transforms: int = 5, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    kind: str = "coupling", bins: int = 8, bound: float = 5.0, mask: str = "half",
    activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """Neural spline flow (Durkan et al. 2019): rational-quadratic splines, identity outside ``[-bound, bound]``.

    Args:
        kind: ``"coupling"`` (:class:`SplineCoupling`, one pass both ways; ``features >= 2``) or
            ``"autoregressive"`` (:class:`SplineAutoregressive`, density in one pass, sampling
            sequential).
    """
    if kind == "coupling":
        _check_vector(features, transforms, hidden, minimum=2)
        layers: list[Bijection] = [
            SplineCoupling(features, hidden, context_dim, mask=m, bins=bins, bound=bound, activation=activation)
            for m in _masks(features, transforms, mask)
        ]
    elif kind == "autoregressive":
        _check_vector(features, transforms, hidden)
        layers = [
            SplineAutoregressive(features, hidden, context_dim, r, bins, bound, "inverse", activation)
            for r in _ranks(features, transforms)
        ]
    else:
        raise ParameterError(f"kind must be 'coupling' or 'autoregressive'; got {kind!r}")
    flow = Flow(layers, features, context_dim=context_dim)
    return _finish(flow, "nsf", dict(features=features, transforms=transforms, hidden=tuple(hidden),
                                     context_dim=context_dim, kind=kind, bins=bins, bound=bound, mask=mask,
                                     activation=activation))


def _monotone_autoregressive(
    name: str, make: Callable[[torch.Tensor], Bijection], features: int, transforms: int, hidden: Sequence[int],
    context_dim: int, kwargs: dict[str, Any],
) -> Flow:
    _check_vector(features, transforms, hidden)
    flow = Flow([make(r) for r in _ranks(features, transforms)], features, context_dim=context_dim)
    return _finish(flow, name, dict(features=features, transforms=transforms, hidden=tuple(hidden),
                                    context_dim=context_dim, **kwargs))


@_builder
def naf(
    features: int, transforms: int = 3, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    num_units: int = 8, activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """Neural autoregressive flow (Huang et al. 2018): deep sigmoidal maps, density in one pass per layer.

    ``transforms`` :class:`NeuralAutoregressive` layers with ``num_units`` sigmoid units per
    coordinate; sampling inverts each map by safeguarded Newton (sequential over coordinates).
    """
    return _monotone_autoregressive(
        "naf", lambda r: NeuralAutoregressive(features, hidden, context_dim, r, num_units, activation),
        features, transforms, hidden, context_dim, dict(num_units=num_units, activation=activation),
    )


@_builder
def unaf(
    features: int, transforms: int = 3, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    signal: int = 16, integrand_hidden: Sequence[int] = (64, 64), num_nodes: int = 32, bound: float = 10.0,
    activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """Unconstrained neural autoregressive flow (Wehenkel & Louppe 2019): integrals of positive networks.

    ``transforms`` :class:`UnconstrainedNeuralAutoregressive` layers; ``integrand_hidden`` sizes the
    integrand network of each layer, ``num_nodes`` its Gauss-Legendre rule.
    """
    integrand_hidden = check_hidden(integrand_hidden, "integrand_hidden")
    return _monotone_autoregressive(
        "unaf",
        lambda r: UnconstrainedNeuralAutoregressive(features, hidden, context_dim, r, signal, integrand_hidden,
                                                    num_nodes, bound, activation),
        features, transforms, hidden, context_dim,
        dict(signal=signal, integrand_hidden=integrand_hidden, num_nodes=num_nodes, bound=bound, activation=activation),
    )


@_builder
def sospf(
    features: int, transforms: int = 3, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
    degree: int = 4, num_polynomials: int = 3, bound: float = 10.0, slope: float = 1e-3,
    activation: type[nn.Module] = nn.ReLU,
) -> Flow:
    """Sum-of-squares polynomial flow (Jaini et al. 2019): ``transforms`` :class:`SumOfSquaresAutoregressive` layers."""
    return _monotone_autoregressive(
        "sospf",
        lambda r: SumOfSquaresAutoregressive(features, hidden, context_dim, r, degree, num_polynomials, bound, slope,
                                             activation),
        features, transforms, hidden, context_dim,
        dict(degree=degree, num_polynomials=num_polynomials, bound=bound, slope=slope, activation=activation),
    )


@_builder
def bnaf(
    features: int, transforms: int = 2, hidden: Sequence[int] = (16, 16), context_dim: int = 0,
    scale_bound: float = 7.0,
) -> Flow:
    """Block neural autoregressive flow (De Cao et al. 2019): ``transforms`` :class:`BlockAutoregressive`
    layers (``hidden``: units per feature of each hidden layer) with a :class:`Reverse` between two
    of them.  Density in one network pass per layer; sampling solves each layer coordinate by coordinate.
    """
    check_int(features, "features")
    check_int(transforms, "transforms")
    hidden = check_hidden(hidden, allow_empty=False)
    layers: list[Bijection] = []
    for i in range(transforms):
        if i:
            layers.append(Reverse(features))
        layers.append(BlockAutoregressive(features, hidden, context_dim, scale_bound))
    flow = Flow(layers, features, context_dim=context_dim)
    return _finish(flow, "bnaf", dict(features=features, transforms=transforms, hidden=tuple(hidden),
                                      context_dim=context_dim, scale_bound=scale_bound))


@_builder
def glow(
    shape: Sequence[int], levels: int = 2, depth: int = 4, hidden: int = 64, mask: str = "channel",
    scale_bound: float = 7.0, conv: str = "1x1",
) -> Flow:
    """Glow-style multiscale flow on ``(C, H, W)`` images (Kingma & Dhariwal 2018, figure 2).

    Args:
        shape: ``(C, H, W)``; ``H`` and ``W`` divisible by ``2**levels``.
        levels: number of squeeze levels; all but the last factor out half the channels.
        depth: flow steps per level, each (noise -> data) affine coupling, invertible 1x1
            convolution, ActNorm (so ActNorm meets the data first and is data-initialized).
        hidden: channel width of the coupling conditioners.
        mask: ``"channel"`` (Glow) or ``"checkerboard"`` (RealNVP) coupling masks (a level
            whose squeezed image is 1x1 uses channel masks).
        conv: ``"1x1"`` (Glow) or ``"emerging"``: an :class:`EmergingConv` (3x3, Hoogeboom et al.
            2019) next to every 1x1 convolution (data side: ActNorm, emerging, 1x1, coupling).
    """
    if len(tuple(shape)) != 3:
        raise ParameterError(f"shape must be (C, H, W); got {tuple(shape)!r}")
    C, H, W = (check_int(s, "shape") for s in shape)
    check_int(levels, "levels")
    check_int(depth, "depth")
    check_int(hidden, "hidden")
    check_positive(scale_bound, "scale_bound")
    if H % 2**levels or W % 2**levels:
        raise ParameterError(f"height and width must be divisible by 2**levels={2**levels}; got shape {tuple(shape)}")
    if mask not in ("channel", "checkerboard"):
        raise ParameterError(f"mask must be 'channel' or 'checkerboard'; got {mask!r}")
    if conv not in ("1x1", "emerging"):
        raise ParameterError(f"conv must be '1x1' or 'emerging'; got {conv!r}")
    shapes = []
    c, h, w = C, H, W
    for _ in range(levels):
        shapes.append((c, h, w))
        c, h, w = 2 * c, h // 2, w // 2
    level: Multiscale | None = None
    for i, (c, h, w) in reversed(list(enumerate(shapes))):
        sq = (4 * c, h // 2, w // 2)
        layers: list[Bijection] = []
        for k in range(depth):
            # a 1x1 image has no checkerboard: the coarsest level falls back to channel masks
            board = mask == "checkerboard" and sq[1] * sq[2] > 1
            m = checkerboard_mask(sq, flip=k % 2 == 1) if board else channel_mask(sq, flip=k % 2 == 1)
            layers += [AffineCoupling(sq[0], (hidden,), mask=m, scale_bound=scale_bound), InvertibleConv1x1(sq[0])]
            if conv == "emerging":
                layers.append(EmergingConv(sq[0]))
            layers.append(ActNorm(sq[0], event_dim=3))
        level = Multiscale((c, h, w), layers, next=level if i < levels - 1 else None)
    assert level is not None
    flow = Flow([level], (C, H, W))
    return _finish(flow, "glow", dict(shape=(C, H, W), levels=levels, depth=depth, hidden=hidden, mask=mask,
                                      scale_bound=scale_bound, conv=conv))


_KINDS = ("planar", "radial", "sylvester")


@_builder
def planar_flow(features: int, transforms: int = 8, kind: str = "planar", hidden: int | None = None) -> Flow:
    """``transforms`` layers of one kind: ``"planar"``, ``"radial"`` (Rezende & Mohamed 2015) or
    ``"sylvester"`` (van den Berg et al. 2018, ``hidden`` units, default ``features``).

    Example:
        >>> flow = planar_flow(2, 4)
        >>> flow.log_prob(flow.sample((3,))).shape
        torch.Size([3])
    """
    _check_vector(features, transforms)
    if kind not in _KINDS:
        raise ParameterError(f"kind must be one of {_KINDS}; got {kind!r}")
    if hidden is not None and kind != "sylvester":
        raise ParameterError(f"hidden is the number of Sylvester units; it needs kind='sylvester', got kind={kind!r}")
    layers: list[Bijection] = []
    for _ in range(transforms):
        if kind == "planar":
            layers.append(Planar(features))
        elif kind == "radial":
            layers.append(Radial(features))
        else:
            layers.append(Sylvester(features, hidden))
    return _finish(Flow(layers, features), "planar_flow",
                   dict(features=features, transforms=transforms, kind=kind, hidden=hidden))


@_builder
def residual_flow(
    features: int,
    transforms: int = 4,
    hidden: Sequence[int] = (64, 64),
    coeff: float = 0.9,
    log_det: str = "roulette",
    actnorm: bool = True,
    num_power_iterations: int = 1,
    num_terms: int = 10,
    num_exact_terms: int = 2,
    geom_p: float = 0.5,
    probe: str = "gaussian",
) -> Flow:
    """Residual flow: ``transforms`` x (:class:`ResidualFlow` block [+ :class:`ActNorm`]).

    ``log_prob`` is exact with ``log_det="exact"`` and an unbiased (``"roulette"``) or
    truncated (``"series"``) estimate otherwise (then ``Flow.log_prob(..., generator=)``
    drives it); the other arguments go to every :class:`ResidualFlow` block.
    """
    _check_vector(features, transforms, hidden)
    block = dict(hidden=tuple(hidden), coeff=coeff, log_det=log_det, num_power_iterations=num_power_iterations,
                 num_terms=num_terms, num_exact_terms=num_exact_terms, geom_p=geom_p, probe=probe)
    layers: list[Bijection] = []
    for _ in range(transforms):
        layers.append(ResidualFlow(features, **block))  # type: ignore[arg-type]
        if actnorm:
            layers.append(ActNorm(features))
    return _finish(Flow(layers, features), "residual_flow",
                   dict(features=features, transforms=transforms, actnorm=actnorm, **block))


@_builder
def ffjord(
    features: int,
    transforms: int = 1,
    hidden: Sequence[int] = (64, 64),
    T: float = 1.0,
    trace: str = "auto",
    exact_trace_max_dim: int = EXACT_TRACE_MAX_DIM,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    adjoint: bool = False,
    vector_field: nn.Module | None = None,
) -> Flow:
    """FFJORD (Grathwohl et al. 2019): ``transforms`` :class:`ContinuousFlow` layers on a standard normal base.

    The trace is exact for ``features <= exact_trace_max_dim`` (32) with ``trace="auto"``.
    ``vector_field`` (only with ``transforms=1``) replaces the default time-conditioned MLP;
    such a flow cannot be saved with :func:`fokker.flows.save` (save its ``state_dict``).
    """
    _check_vector(features, transforms, hidden)
    if vector_field is not None and transforms != 1:
        raise ParameterError(f"vector_field can only be given with transforms=1; got transforms={transforms}")
    layer_kwargs = dict(hidden=tuple(hidden), T=T, trace=trace, exact_trace_max_dim=exact_trace_max_dim,
                        rtol=rtol, atol=atol, method=method, adjoint=adjoint)
    layers: list[Bijection] = [
        ContinuousFlow(features, vector_field=vector_field, **layer_kwargs)  # type: ignore[arg-type]
        for _ in range(transforms)
    ]
    config = dict(features=features, transforms=transforms, **layer_kwargs)
    if vector_field is not None:
        config["vector_field"] = vector_field
    return _finish(Flow(layers, features), "ffjord", config)
