"""The base class every fokker bijection derives from.

A :class:`Bijection` is a :class:`pyro.distributions.torch_transform.TransformModule`
(a torch ``Transform`` that is also an ``nn.Module``) mapping **noise to data**, as
in ``torch.distributions.TransformedDistribution``.  Subclasses implement two pure
functions of tensors (zuko's ``call_and_ladj`` idea, seed 000 "change of variables")

.. math::

    y = T(x),\\quad \\ell(x) = \\log|\\det \\partial T / \\partial x|,
    \\qquad
    x = T^{-1}(y),\\quad \\log|\\det \\partial T^{-1} / \\partial y| = -\\ell(x)

with ``call_and_ladj(x, context)`` and ``inverse_and_ladj(y, context)``.  The log-dets
have the batch shape of the input (event dims summed).  Everything else (torch's
``_call`` / ``_inverse`` / ``log_abs_det_jacobian``, conditioning on a context vector,
the transform cache) is provided here.

The cache (why it never breaks a training loop)
-----------------------------------------------
torch's ``cache_size=1`` returns a stored ``x`` whenever the *same tensor object*
``y`` is inverted again: with full-batch training (one data tensor reused every step)
that hands back a stale ``x`` from a freed graph ("backward through the graph a
second time") computed with old parameters.  fokker layers always run with
``cache_size=0`` and keep their own two small caches instead:

* inverse direction: ``_inverse(y)`` remembers its log-det for the immediately
  following ``log_abs_det_jacobian(x, y)`` call of ``TransformedDistribution.log_prob``
  (keyed on the identity of the *new* ``x``; consumed once), so ``log_prob`` costs
  one network pass per layer;
* forward direction: ``_call(x)`` remembers ``(x, y)`` so that ``log_prob`` of a value
  just produced by ``rsample`` (SVI guides) needs no inversion.  The entry is keyed on
  the identity of ``y`` *and* on the version counters of the parameters, so an
  optimizer step invalidates it.  Log-dets are always recomputed (never taken from a
  graph that may have been freed).

``Flow.log_prob`` / ``Flow.sample_and_log_prob`` bypass both caches.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from ..errors import ShapeError

__all__ = ["Bijection", "ConditionedBijection", "MLP", "real_constraint", "broadcast_context"]


def real_constraint(event_dim: int) -> constraints.Constraint:
    """``constraints.real`` reinterpreted with ``event_dim`` event dimensions."""
    return constraints.real if event_dim == 0 else constraints.independent(constraints.real, event_dim)


def broadcast_context(context: Tensor, batch_shape: torch.Size | Sequence[int]) -> Tensor:
    """Broadcast a context ``(..., c)`` against a batch shape; returns ``(*batch, c)``."""
    shape = torch.broadcast_shapes(tuple(context.shape[:-1]), tuple(batch_shape))
    return context.expand(*shape, context.shape[-1])


class _Cache:
    """Single-slot caches of a layer (see the module docstring); empty after copy/pickle."""

    __slots__ = ("inv_x", "inv_ladj", "fwd_x", "fwd_y", "fwd_version", "fwd_context")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.inv_x: weakref.ref | None = None
        self.inv_ladj: Tensor | None = None
        self.fwd_x: Tensor | None = None
        self.fwd_y: weakref.ref | None = None
        self.fwd_version: int = -1
        self.fwd_context: Any = None

    def __deepcopy__(self, memo: dict) -> "_Cache":
        return _Cache()

    def __reduce__(self) -> tuple:
        return (_Cache, ())


def _version(module: nn.Module) -> int:
    return sum(p._version for p in module.parameters())


class _CachedCalls:
    """torch ``Transform`` plumbing shared by a layer and its conditioned views."""

    def _layer(self) -> "Bijection":
        raise NotImplementedError

    def _ctx(self) -> Tensor | None:
        raise NotImplementedError

    def _call(self, x: Tensor) -> Tensor:
        layer, ctx = self._layer(), self._ctx()
        y = layer.call(x, ctx)
        c = layer._fokker_cache
        c.fwd_x, c.fwd_y, c.fwd_version, c.fwd_context = x, weakref.ref(y), _version(layer), ctx
        return y

    def _inverse(self, y: Tensor) -> Tensor:
        layer, ctx = self._layer(), self._ctx()
        c = layer._fokker_cache
        if (
            c.fwd_y is not None
            and c.fwd_y() is y
            and c.fwd_context is ctx
            and c.fwd_version == _version(layer)
        ):
            return c.fwd_x  # type: ignore[return-value]
        x, ladj_inv = layer.inverse_and_ladj(y, ctx)
        c.inv_x, c.inv_ladj = weakref.ref(x), ladj_inv
        return x

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        layer, ctx = self._layer(), self._ctx()
        c = layer._fokker_cache
        if c.inv_x is not None and c.inv_x() is x and c.inv_ladj is not None:
            ladj = -c.inv_ladj
            c.inv_x, c.inv_ladj = None, None
            return ladj
        return layer.ladj(x, y, ctx)


class Bijection(_CachedCalls, TransformModule):
    """Base class of fokker layers: an invertible ``TransformModule`` (noise -> data).

    Subclasses set ``event_dim`` (via ``__init__``) and implement
    :meth:`call_and_ladj` and :meth:`inverse_and_ladj`; they may override
    :meth:`ladj` when the log-det is cheaper to get from ``y`` (MAF).

    Args:
        event_dim: number of trailing event dimensions (1 for vectors, 3 for images).
        context_dim: size of the context vector of a conditional layer (0: unconditional).
    """

    bijective = True

    def __init__(self, event_dim: int = 1, context_dim: int = 0) -> None:
        super().__init__(cache_size=0)
        self._event_dim = int(event_dim)
        self.context_dim = int(context_dim)
        self._fokker_cache = _Cache()

    # -- torch Transform metadata -------------------------------------------------
    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return real_constraint(self._event_dim)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return real_constraint(self._event_dim)

    @property
    def event_dim(self) -> int:
        return self._event_dim

    def with_cache(self, cache_size: int = 1) -> "Bijection":
        """fokker layers keep their own safe cache; torch's identity cache is not used."""
        return self

    # -- the math (override) --------------------------------------------------------
    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``y = T(x)`` and ``log|det dT/dx|`` (batch shape)."""
        raise NotImplementedError

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x = T^{-1}(y)`` and ``log|det dT^{-1}/dy|`` (batch shape)."""
        raise NotImplementedError

    def ladj(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``log|det dT/dx|`` at ``x`` (with ``y = T(x)``); default recomputes the forward pass."""
        return self.call_and_ladj(x, context)[1]

    def call(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``y = T(x)`` alone (sampling); layers may skip the log-det."""
        return self.call_and_ladj(x, context)[0]

    # -- conditioning -------------------------------------------------------------
    def _layer(self) -> "Bijection":
        return self

    def _ctx(self) -> Tensor | None:
        if self.context_dim:
            raise ShapeError(
                f"{type(self).__name__} is conditional: a context of shape (..., {self.context_dim}) "
                "is required; use layer.condition(context) or flow.distribution(context)"
            )
        return None

    def condition(self, context: Tensor | None) -> Transform:
        """The transform ``x -> T(x; context)`` (``self`` for an unconditional layer)."""
        if not self.context_dim:
            if context is not None:
                raise ShapeError(f"{type(self).__name__} is unconditional; context must be None")
            return self
        if context is None or context.dim() == 0 or context.shape[-1] != self.context_dim:
            got = None if context is None else tuple(context.shape)
            raise ShapeError(f"context must have shape (..., {self.context_dim}); got {got}")
        return ConditionedBijection(self, context)

    def _check_context(self, context: Tensor | None) -> None:
        if self.context_dim:
            if context is None or context.dim() == 0 or context.shape[-1] != self.context_dim:
                got = None if context is None else tuple(context.shape)
                raise ShapeError(f"context must have shape (..., {self.context_dim}); got {got}")
        elif context is not None:
            raise ShapeError(f"{type(self).__name__} is unconditional; context must be None")

    def _check_input(self, x: Tensor, name: str, size: int | Sequence[int]) -> None:
        shape = (size,) if isinstance(size, int) else tuple(size)
        k = len(shape)
        if x.dim() < k or tuple(x.shape[x.dim() - k :]) != shape:
            raise ShapeError(
                f"{name} must have shape (..., {', '.join(map(str, shape))}); got shape {tuple(x.shape)}"
            )

    def __repr__(self) -> str:  # nn.Module's repr (torch's Transform repr hides the children)
        return nn.Module.__repr__(self)


class ConditionedBijection(_CachedCalls, Transform):
    """``T(.; context)``: a conditional :class:`Bijection` bound to one context tensor."""

    bijective = True

    def __init__(self, layer: Bijection, context: Tensor) -> None:
        super().__init__(cache_size=0)
        self.layer = layer
        self.context = context

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.layer.domain

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.layer.codomain

    def _layer(self) -> Bijection:
        return self.layer

    def _ctx(self) -> Tensor:
        return self.context

    def with_cache(self, cache_size: int = 1) -> "ConditionedBijection":
        return self

    def __repr__(self) -> str:
        return f"ConditionedBijection({type(self.layer).__name__}, context={tuple(self.context.shape)})"


def _act(activation: type[nn.Module]) -> nn.Module:
    """Instantiate an activation; ReLU in place (safe after a linear layer, saves a pass)."""
    return nn.ReLU(inplace=True) if activation is nn.ReLU else activation()


class MLP(nn.Sequential):
    """A plain multilayer perceptron ``in_features -> hidden... -> out_features``.

    Args:
        in_features, out_features: sizes of input and output.
        hidden: hidden layer sizes.
        activation: activation module class (default ``nn.ReLU``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), _act(activation)]
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)
