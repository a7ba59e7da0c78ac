"""The base class every fokker bijection derives from.

A :class:`Bijection` is a :class:`pyro.distributions.torch_transform.TransformModule`
(a torch ``Transform`` that is also an ``nn.Module``) mapping **noise to data**, as in
``torch.distributions.TransformedDistribution``.  Subclasses implement two pure
functions of tensors (zuko's ``call_and_ladj`` idea; the change of variables of
Rezende & Mohamed 2015, sec. 3.1, and Papamakarios et al. 2021, eq. 2; seed 000)

.. math::

    y = T(x),\\quad \\ell(x) = \\log|\\det \\partial T / \\partial x|,
    \\qquad
    x = T^{-1}(y),\\quad \\log|\\det \\partial T^{-1} / \\partial y| = -\\ell(x)

with ``call_and_ladj(x, context)`` and ``inverse_and_ladj(y, context)``.  The log-dets
have the batch shape of the input (event dims summed).  Everything else (torch's
``_call`` / ``_inverse`` / ``log_abs_det_jacobian``, conditioning on a context vector,
Pyro's ``ConditionalTransform`` protocol, ``with_cache``) is provided here.

Caching follows torch's contract
--------------------------------
A layer is constructed with ``cache_size=0``: every call computes, nothing is stored, so
``t.inv(t(x))`` really runs the inverse.  ``layer.with_cache(1)`` returns a view of the
same layer (same parameters) with torch's single-slot cache (``view.inv(view(x))`` returns
``x`` itself), for the SVI-guide use: the log-density of values just drawn by ``rsample``
without inverting (IAF guides).  ``Flow.distribution(context, cache_size=1)`` builds its
``TransformedDistribution`` from such views.  A cache hit hands back a tensor computed with
the parameters of the time it was stored; use it only inside one step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from ..errors import ParameterError, ShapeError
from ..nets import MLP

__all__ = ["Bijection", "ConditionedBijection", "MLP", "real_constraint", "broadcast_context"]


def real_constraint(event_dim: int) -> constraints.Constraint:
    """``constraints.real`` reinterpreted with ``event_dim`` event dimensions."""
    return constraints.real if event_dim == 0 else constraints.independent(constraints.real, event_dim)


def broadcast_context(context: Tensor, batch_shape: torch.Size | Sequence[int]) -> Tensor:
    """Broadcast a context ``(..., c)`` against a batch shape; returns ``(*batch, c)``."""
    shape = torch.broadcast_shapes(tuple(context.shape[:-1]), tuple(batch_shape))
    return context.expand(*shape, context.shape[-1])


def _check_cache_size(cache_size: int) -> int:
    if cache_size not in (0, 1):
        raise ParameterError(f"cache_size must be 0 or 1 (torch's Transform caches at most one value); got {cache_size!r}")
    return cache_size


class Bijection(TransformModule, ConditionalTransform):
    """Base class of fokker layers: an invertible ``TransformModule`` (noise -> data).

    A bijection ``T`` with its log-det ``log|det dT/dx|`` for the change of variables of
    Papamakarios et al. (2021), eq. 2 (Rezende & Mohamed 2015, sec. 3.1).

    Subclasses call ``super().__init__(event_dim, context_dim)`` and implement
    :meth:`call_and_ladj` and :meth:`inverse_and_ladj`; they may override :meth:`ladj`
    (when the log-det is cheaper from ``y``, MAF) and :meth:`call` (value only, sampling).

    Every path agrees: ``layer(x)`` (torch protocol) is ``call(x)`` is
    ``call_and_ladj(x)[0]``; ``layer.inv(y)`` is ``inverse_and_ladj(y)[0]``;
    ``layer.log_abs_det_jacobian(x, y)`` is ``ladj(x, y)`` is ``call_and_ladj(x)[1]``;
    ``layer.inv.log_abs_det_jacobian(y, x)`` is ``-ladj(x, y)``.  (``fokker.checks.check_log_det``
    verifies all of them against autograd.)

    A conditional layer (``context_dim > 0``) is also a Pyro ``ConditionalTransform``:
    ``layer.condition(context)`` returns a torch ``Transform`` bound to that context, so it
    works inside ``pyro.distributions.ConditionalTransformedDistribution``.  An unconditional
    layer's ``condition(context)`` returns the layer itself (it does not depend on a context).

    Args:
        event_dim: number of trailing event dimensions (1 for vectors, 3 for images).
        context_dim: size of the context vector of a conditional layer (0: unconditional).
    """

    bijective = True
    #: ``True`` for layers whose log-det is a stochastic estimate; their ``call_and_ladj`` and
    #: ``inverse_and_ladj`` take ``generator=`` (``Flow`` passes its ``generator`` on to them).
    stochastic_log_det = False

    def __init__(self, event_dim: int = 1, context_dim: int = 0) -> None:
        super().__init__(cache_size=0)
        self._event_dim = int(event_dim)
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ParameterError(f"context_dim must be a non-negative integer; got {context_dim!r}")
        self.context_dim = context_dim

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

    def with_cache(self, cache_size: int = 1) -> Transform:
        """``self`` for ``cache_size=0``; else a view of this layer with torch's one-slot cache.

        Only for an unconditional layer: bind a conditional one first,
        ``layer.condition(context).with_cache(1)``.
        """
        if _check_cache_size(cache_size) == 0:
            return self
        self._require_unconditional("with_cache")
        return ConditionedBijection(self, None, cache_size=cache_size)

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

    # -- torch protocol (unconditional use; a conditional layer is bound by condition()) --
    def _call(self, x: Tensor) -> Tensor:
        self._require_unconditional("calling the layer")
        return self.call(x)

    def _inverse(self, y: Tensor) -> Tensor:
        self._require_unconditional("layer.inv")
        return self.inverse_and_ladj(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        self._require_unconditional("log_abs_det_jacobian")
        return self.ladj(x, y)

    def _require_unconditional(self, what: str) -> None:
        if self.context_dim:
            raise ShapeError(
                f"{type(self).__name__} is conditional: {what} needs a context of shape (..., {self.context_dim}); "
                "use layer.condition(context) or flow.distribution(context)"
            )

    # -- conditioning -------------------------------------------------------------
    def condition(self, context: Tensor | None) -> Transform:
        """The transform ``x -> T(x; context)`` (``self`` for an unconditional layer)."""
        if not self.context_dim:
            return self
        self._check_context(context)
        return ConditionedBijection(self, context)

    def _check_context(self, context: Tensor | None) -> None:
        if self.context_dim:
            if not isinstance(context, Tensor) or context.dim() == 0 or context.shape[-1] != self.context_dim:
                got = tuple(context.shape) if isinstance(context, Tensor) else context
                raise ShapeError(f"context must be a tensor of shape (..., {self.context_dim}); got {got}")
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


class ConditionedBijection(Transform):
    """A :class:`Bijection` bound to one context tensor (or none) and a torch cache size.

    ``x -> T(x; c)``: a conditional flow's layer at a context (Winkler et al. 2019, conditional
    normalizing flows; Papamakarios et al. 2021, sec. 5.3).

    What ``layer.condition(context)`` and ``layer.with_cache(1)`` return: a plain torch
    ``Transform`` (it holds a reference to the layer, whose parameters it uses) computing
    ``T(x; context)``.  Its batch shape broadcasts the input's with the context's, so
    ``forward_shape``/``inverse_shape`` include the context's batch dimensions.

    Args:
        layer: the layer.
        context: ``(..., context_dim)`` for a conditional layer, ``None`` otherwise.
        cache_size: 0 (compute every call) or 1 (torch's single-slot cache).
    """

    bijective = True

    def __init__(self, layer: Bijection, context: Tensor | None, cache_size: int = 0) -> None:
        super().__init__(cache_size=_check_cache_size(cache_size))
        layer._check_context(context)
        self.layer = layer
        self.context = context

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.layer.domain

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.layer.codomain

    @property
    def stochastic_log_det(self) -> bool:
        return self.layer.stochastic_log_det

    def _call(self, x: Tensor) -> Tensor:
        return self.layer.call(x, self.context)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.layer.inverse_and_ladj(y, self.context)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.layer.ladj(x, y, self.context)

    def _with_context_batch(self, shape: torch.Size | Sequence[int], out: Sequence[int]) -> torch.Size:
        if self.context is None:
            return torch.Size(out)
        k = self.layer.event_dim
        batch = torch.broadcast_shapes(tuple(shape[: len(shape) - k]), tuple(self.context.shape[:-1]))
        return torch.Size(batch + tuple(out[len(out) - k :]))

    def forward_shape(self, shape: torch.Size | Sequence[int]) -> torch.Size:
        return self._with_context_batch(shape, self.layer.forward_shape(shape))

    def inverse_shape(self, shape: torch.Size | Sequence[int]) -> torch.Size:
        return self._with_context_batch(shape, self.layer.inverse_shape(shape))

    def with_cache(self, cache_size: int = 1) -> "ConditionedBijection":
        if cache_size == self._cache_size:
            return self
        return ConditionedBijection(self.layer, self.context, cache_size)

    def __repr__(self) -> str:
        ctx = None if self.context is None else tuple(self.context.shape)
        return f"ConditionedBijection({type(self.layer).__name__}, context={ctx}, cache_size={self._cache_size})"
