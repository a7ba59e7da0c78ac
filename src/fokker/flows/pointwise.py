"""Layers acting on every coordinate separately: learned (conditional too) and fixed.

* :class:`Elementwise` — ``y_i = h(x_i; theta_i)`` with any
  :class:`~fokker.flows.elementwise.ElementwiseMap` ``h``; ``theta`` is a learned table
  ``(features, num_params)`` or, with a context, the output of an MLP of the context.
  :class:`ElementwiseSpline` is its rational-quadratic specialization (Pyro's ``Spline`` /
  ``ConditionalSpline``); ``Elementwise(Affine(), d, context_dim=c)`` is a conditional
  diagonal affine layer.  Diagonal Jacobian: ``log|det J| = sum_i log h'(x_i)`` (exact).
* Fixed bijections without parameters, as layers: :class:`LeakyReLU` (of the real line),
  :class:`Softplus` (onto ``(0, inf)``), :class:`Tanh` (onto ``(-1, 1)``), :class:`SoftClip`
  (onto ``(-B, B)``).  Their ``codomain`` says where the data lives (a flow ending in one of
  them is a distribution on that set); ``inverse_and_ladj`` of a point outside it raises
  :class:`~fokker.errors.DomainError` while argument checks are on (a NaN otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import constraints

from .._args import argument_checks_enabled, check_int, check_positive
from ..errors import DomainError, ParameterError, ShapeError
from ..nets import MLP, check_hidden
from .base import Bijection
from .elementwise import ElementwiseMap, RationalQuadratic

__all__ = ["Elementwise", "ElementwiseSpline", "LeakyReLU", "Softplus", "Tanh", "SoftClip"]


class Elementwise(Bijection):
    """Learned elementwise layer ``y_i = h(x_i; theta_i)`` (noise -> data), conditional or not.

    The transformer of Papamakarios et al. (2021, sec. 3.1) applied to each coordinate with its
    own parameters: an unconditional layer learns a table ``theta`` of shape ``(features,
    num_params)`` (zeros at construction: the identity for the maps of
    :mod:`fokker.flows.elementwise`); a conditional one computes ``theta = MLP(c)`` (Winkler et al.
    2019, conditional flows), its last layer zero-initialised, so it starts at the same map for
    every context.  ``log|det J| = sum_i log h'(x_i; theta_i)`` (diagonal Jacobian; exact when
    ``h``'s derivative is).

    Args:
        transform: the elementwise monotone map ``h``.
        features: ``d``; inputs ``(..., d)``.
        context_dim: size of the context (0: unconditional).
        hidden: hidden sizes of the context network (conditional layers only).
        activation: activation of the context network.
    """

    def __init__(
        self,
        transform: ElementwiseMap,
        features: int,
        context_dim: int = 0,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        if not isinstance(transform, ElementwiseMap):
            raise ParameterError(f"transform must be an ElementwiseMap (Affine, RationalQuadratic, ...); got {transform!r}")
        hidden = check_hidden(hidden)
        super().__init__(event_dim=1, context_dim=context_dim)
        self.transform = transform
        self.features = check_int(features, "features")
        P = transform.num_params
        if context_dim:
            self.net = MLP(context_dim, self.features * P, hidden, activation, zero_output=True)
        else:
            self.params = nn.Parameter(torch.zeros(self.features, P))

    def _theta(self, context: Tensor | None) -> Tensor:
        if self.context_dim:
            assert context is not None
            return self.net(context).unflatten(-1, (self.features, self.transform.num_params))
        return self.params

    def _apply_map(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        self._check_input(v, "y" if inverse else "x", self.features)
        self._check_context(context)
        theta = self._theta(context)
        shape = torch.broadcast_shapes(v.shape, theta.shape[:-1])
        v, theta = v.expand(shape), theta.expand(*shape, theta.shape[-1])
        out, l = (self.transform.inverse if inverse else self.transform.forward)(v, theta)
        return out, l.sum(-1)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._apply_map(x, context, inverse=False)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._apply_map(y, context, inverse=True)

    def extra_repr(self) -> str:
        return f"transform={self.transform!r}, features={self.features}, context_dim={self.context_dim}"


class ElementwiseSpline(Elementwise):
    """Elementwise rational-quadratic spline layer (Durkan et al. 2019; Pyro's ``Spline`` /
    ``ConditionalSpline``, Dolatabadi et al. 2020), conditional with ``context_dim > 0``.

    ``y_i = h(x_i; theta_i)`` with ``h`` a monotone rational-quadratic spline on ``[-bound, bound]``
    and identity tails (:class:`~fokker.flows.elementwise.RationalQuadratic`); exact log-det.

    Args:
        features, context_dim, hidden, activation: see :class:`Elementwise`.
        bins, bound: see :class:`~fokker.flows.elementwise.RationalQuadratic`.
    """

    def __init__(
        self,
        features: int,
        bins: int = 8,
        bound: float = 5.0,
        context_dim: int = 0,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(RationalQuadratic(bins, bound), features, context_dim, hidden, activation)


class _Fixed(Bijection):
    """A parameter-free elementwise bijection; subclasses give the elementwise math."""

    def __init__(self, event_dim: int = 1) -> None:
        check_int(event_dim, "event_dim", minimum=0)
        super().__init__(event_dim=event_dim)

    def _elementwise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _elementwise_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _outside(self, y: Tensor) -> Tensor | None:
        """Mask of values outside the codomain (``None``: the codomain is the real line)."""
        return None

    def _sum(self, l: Tensor) -> Tensor:
        k = self._event_dim
        return l.sum(tuple(range(-k, 0))) if k else l

    def _check(self, v: Tensor, name: str, context: Tensor | None) -> None:
        self._check_context(context)
        if v.dim() < self._event_dim:
            raise ShapeError(f"{name} must have at least event_dim={self._event_dim} dimensions; got shape {tuple(v.shape)}")

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, "x", context)
        y, l = self._elementwise(x)
        return y, self._sum(l)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y, "y", context)
        if argument_checks_enabled() and y.numel():
            bad = self._outside(y)
            if bad is not None and bool(bad.any()):
                raise DomainError(
                    f"y must lie in the image of {type(self).__name__} ({self._image()}); "
                    f"{int(bad.sum())} value(s) outside, e.g. {float(y[bad].flatten()[0]):.6g}"
                )
        x, l = self._elementwise_inverse(y)
        return x, self._sum(l)

    def _image(self) -> str:
        return "the real line"

    def extra_repr(self) -> str:
        return f"event_dim={self._event_dim}"


def _image_constraint(base: constraints.Constraint, event_dim: int) -> constraints.Constraint:
    return base if event_dim == 0 else constraints.independent(base, event_dim)


class LeakyReLU(_Fixed):
    """``y = x`` for ``x >= 0``, ``a x`` otherwise (``a > 0``): a piecewise-linear bijection of the real line.

    The leaky rectifier of Maas et al. (2013) used as an invertible layer;
    ``log|det J| = (number of negative coordinates) log a`` (exact).

    Args:
        negative_slope: ``a``.
        event_dim: number of trailing dimensions summed in the log-det.
    """

    def __init__(self, negative_slope: float = 0.01, event_dim: int = 1) -> None:
        check_positive(negative_slope, "negative_slope")
        super().__init__(event_dim)
        self.negative_slope = float(negative_slope)
        self._log_slope = math.log(self.negative_slope)

    def _elementwise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        neg = x < 0
        return torch.where(neg, x * self.negative_slope, x), torch.where(neg, x.new_tensor(self._log_slope), 0.0)

    def _elementwise_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        neg = y < 0
        return torch.where(neg, y / self.negative_slope, y), torch.where(neg, y.new_tensor(-self._log_slope), 0.0)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}, event_dim={self._event_dim}"


class Softplus(_Fixed):
    """``y = log(1 + e^x)``: the real line onto ``(0, inf)`` (Dugas et al. 2001), e.g. a flow of positive data.

    ``log|dy/dx| = log sigmoid(x)``; inverse ``x = y + log(-expm1(-y))`` (both exact and free of
    cancellation).
    """

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return _image_constraint(constraints.positive, self._event_dim)

    def _elementwise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.softplus(x), F.logsigmoid(x)

    def _elementwise_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y + torch.log(-torch.expm1(-y))
        return x, -F.logsigmoid(x)

    def _outside(self, y: Tensor) -> Tensor:
        return ~(y > 0)

    def _image(self) -> str:
        return "(0, inf)"


class Tanh(_Fixed):
    """``y = tanh(x)``: the real line onto ``(-1, 1)`` (Pyro's / torch's ``TanhTransform`` as a layer;
    the squashing of Haarnoja et al. 2018, appendix C).

    ``log|dy/dx| = 2 (log 2 - x - softplus(-2x))`` (stable form of ``log(1 - tanh^2 x)``);
    inverse ``atanh(y)``, ``log|dx/dy| = -log1p(-y^2)``.  In float32 ``tanh`` rounds to ``+-1``
    beyond ``|x| ~ 9``; such values cannot be inverted.
    """

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return _image_constraint(constraints.interval(-1.0, 1.0), self._event_dim)

    def _elementwise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.tanh(x), 2 * (math.log(2) - x - F.softplus(-2 * x))

    def _elementwise_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return torch.atanh(y), -torch.log1p(-y * y)

    def _outside(self, y: Tensor) -> Tensor:
        return ~(y.abs() < 1)

    def _image(self) -> str:
        return "(-1, 1)"


class SoftClip(_Fixed):
    """``y = x / (1 + |x| / B)``: the real line onto ``(-B, B)`` (zuko's soft clip between NAF layers;
    the algebraic sigmoid of Elliott 1993).

    ``log|dy/dx| = -2 log1p(|x| / B)``; inverse ``x = y / (1 - |y| / B)``,
    ``log|dx/dy| = -2 log1p(-|y| / B)`` (exact).  Algebraic tails: values far out stay
    invertible in float32 much longer than with :class:`Tanh`.

    Args:
        bound: ``B``.
        event_dim: number of trailing dimensions summed in the log-det.
    """

    def __init__(self, bound: float = 1.0, event_dim: int = 1) -> None:
        check_positive(bound, "bound")
        super().__init__(event_dim)
        self.bound = float(bound)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return _image_constraint(constraints.interval(-self.bound, self.bound), self._event_dim)

    def _elementwise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r = x.abs() / self.bound
        return x / (1 + r), -2 * torch.log1p(r)

    def _elementwise_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r = y.abs() / self.bound
        return y / (1 - r), -2 * torch.log1p(-r)

    def _outside(self, y: Tensor) -> Tensor:
        return ~(y.abs() < self.bound)

    def _image(self) -> str:
        return f"(-{self.bound:g}, {self.bound:g})"

    def extra_repr(self) -> str:
        return f"bound={self.bound}, event_dim={self._event_dim}"
