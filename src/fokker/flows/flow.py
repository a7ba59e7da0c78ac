"""``Flow``: a base distribution pushed through bijections, as a trainable module.

Change of variables (Rezende & Mohamed 2015, sec. 3.1; Papamakarios et al. 2021, eq. 2;
seed 000 "normalizing flows"): with ``y = T_K o ... o T_1(x)`` and ``x ~ p_base``,

.. math::

    \\log p(y) = \\log p_{base}(x) - \\sum_k \\log|\\det \\partial T_k / \\partial x_{k-1}|.

``log_prob`` is exact for every layer except those whose log-det is a stochastic estimate
(residual flows with a series estimator, FFJORD with Hutchinson's trace); they say so in
their docstrings and take ``generator=``.

Fast paths: ``log_prob`` runs each layer's ``inverse_and_ladj`` once (one network pass
per layer), ``sample_and_log_prob`` each ``call_and_ladj`` once; no cache is involved.
In a conditional flow only the conditional layers (``layer.context_dim > 0``) receive the
context.  ``distribution(context)`` returns the same model as a
``pyro.distributions.TransformedDistribution`` (:class:`FlowDistribution`, whose
``log_prob`` takes the same fast path) for ``pyro.sample`` / SVI guides.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as pdist
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Transform

from .. import _random
from .._args import check_finite, check_like, check_tensor
from ..errors import DeviceDtypeError, ParameterError, ShapeError
from .base import Bijection, ConditionedBijection

__all__ = ["Flow", "FlowDistribution"]

Shape = int | Sequence[int] | torch.Size


def _as_shape(shape: Shape) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def as_sample_shape(sample_shape: Shape, name: str = "sample_shape") -> tuple[int, ...]:
    """``sample_shape`` as a tuple of non-negative ints (an int ``n`` means ``(n,)``)."""
    dims = (sample_shape,) if isinstance(sample_shape, int) and not isinstance(sample_shape, bool) else sample_shape
    try:
        out = tuple(dims)  # type: ignore[arg-type]
    except TypeError:
        out = None
    if out is None or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in out):
        raise ParameterError(f"{name} must be a tuple of non-negative integers (or one integer); got {sample_shape!r}")
    return out


def _sum_rightmost(v: Tensor, n: int) -> Tensor:
    return v.sum(tuple(range(-n, 0))) if n > 0 else v


def _base_log_prob(base: Distribution, z: Tensor) -> Tensor:
    """``base.log_prob(z)``, also for an empty batch (torch's ``Independent`` cannot reshape 0 elements)."""
    if z.numel() == 0:
        k = len(base.event_shape)
        shape = torch.broadcast_shapes(z.shape[: z.dim() - k], tuple(base.batch_shape))
        return z.new_zeros(shape)
    return base.log_prob(z)


def _inverse_step(t: Transform, y: Tensor) -> tuple[Tensor, Tensor]:
    """``x = t^{-1}(y)`` and the forward ``log|det dt/dx|`` at ``x``, one network pass for fokker layers.

    With torch's cache on (``cache_size=1``) a ``y`` that the view itself produced returns the
    stored ``x`` and recomputes only the log-det (``ladj(x, y)``, one pass for IAF).
    """
    layer: Bijection | None = None
    if isinstance(t, Bijection):
        layer, ctx = t, None
    elif isinstance(t, ConditionedBijection):
        layer, ctx = t.layer, t.context
        if t._cache_size == 1:
            x_old, y_old = t._cached_x_y
            if y is y_old and x_old is not None:
                return x_old, t.log_abs_det_jacobian(x_old, y)
    if layer is None:
        x = t.inv(y)
        return x, t.log_abs_det_jacobian(x, y)
    x, ladj_inv = layer.inverse_and_ladj(y, ctx)
    return x, -ladj_inv


class FlowDistribution(pdist.TransformedDistribution):
    """The ``pyro.distributions.TransformedDistribution`` that :meth:`Flow.distribution` returns.

    ``log p(y) = log p_base(T^{-1}(y)) + log|det dT^{-1}/dy|`` (Papamakarios et al. 2021, eq. 2).

    Identical to Pyro's (sampling, ``expand``, ``pyro.sample``), except that ``log_prob``
    runs each fokker layer's ``inverse_and_ladj`` once instead of ``inv`` followed by a
    second pass for ``log_abs_det_jacobian`` (same value, half the work).
    """

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args and value.numel():  # torch's constraint check cannot reshape 0 elements
            self._validate_sample(value)
        event_dim = len(self.event_shape)
        log_prob: Tensor | float = 0.0
        y = value
        for t in reversed(self.transforms):
            x, ladj = _inverse_step(t, y)
            event_dim += t.domain.event_dim - t.codomain.event_dim
            log_prob = log_prob - _sum_rightmost(ladj, event_dim - t.domain.event_dim)
            y = x
        base_lp = _base_log_prob(self.base_dist, y)
        return log_prob + _sum_rightmost(base_lp, event_dim - len(self.base_dist.event_shape))


class Flow(nn.Module):
    """A normalizing flow: base distribution + bijections (noise -> data).

    Change of variables ``log p(y) = log p_base(x) - sum_k log|det dT_k/dx_{k-1}|``
    (Rezende & Mohamed 2015, sec. 3.1; Papamakarios et al. 2021, eq. 2; seed 000).

    Args:
        transforms: the layers, applied in order to base samples.  fokker
            :class:`~fokker.flows.base.Bijection` s take the fast paths; any other torch
            ``Transform`` (e.g. a Pyro layer or ``ExpTransform``) is called through the
            torch protocol.
        event_shape: the shape of one data sample (``d`` or ``(C, H, W)``).  The base's event
            shape is obtained from it through the layers' ``inverse_shape`` (they differ only
            when a layer changes shape, e.g. :class:`~fokker.flows.glow.Squeeze`).
        base: base distribution with that event shape; default a standard normal whose
            parameters are buffers (it follows ``.to(device, dtype)``).
        context_dim: size of the context vector of a conditional flow (0: none).  Only the
            layers with ``context_dim > 0`` receive the context.

    Shapes: ``log_prob(x, context)``: ``x`` ``(*batch, *event_shape)``, context
    ``(*cbatch, context_dim)`` -> ``broadcast(batch, cbatch)``;
    ``sample(sample_shape, context)`` -> ``(*sample_shape, *cbatch, *event_shape)``.
    Inputs must have the flow's dtype and device (:class:`~fokker.errors.DeviceDtypeError`
    otherwise); empty batches are fine.

    Attributes:
        config: ``{"builder": name, "kwargs": {...}}`` for flows made by a builder (used by
            :func:`fokker.flows.save`), ``None`` for a hand-built flow.

    Example:
        >>> import torch
        >>> from fokker import flows
        >>> flow = flows.realnvp(2, transforms=2, hidden=(16,))
        >>> flow.log_prob(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        transforms: Sequence[Transform],
        event_shape: Shape,
        base: Distribution | None = None,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        self.event_shape = _as_shape(event_shape)
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ParameterError(f"context_dim must be a non-negative integer; got {context_dim!r}")
        self.context_dim = context_dim
        shape = torch.Size(self.event_shape)
        for t in reversed(list(transforms)):
            if not isinstance(t, Transform):
                raise ParameterError(f"transforms must be torch Transforms; got {type(t).__name__}")
            if t.codomain.event_dim > len(shape):
                raise ParameterError(
                    f"{type(t).__name__} has event_dim {t.codomain.event_dim} > len(event_shape)={len(shape)}"
                )
            if isinstance(t, Bijection) and t.context_dim and not context_dim:
                raise ParameterError(
                    f"{type(t).__name__} is conditional (context_dim={t.context_dim}); pass context_dim to Flow"
                )
            shape = torch.Size(t.inverse_shape(shape))
        self.base_event_shape = tuple(shape)
        self._transforms = list(transforms)
        self.transforms = nn.ModuleList([t for t in transforms if isinstance(t, nn.Module)])
        self.config: dict | None = None
        if base is None:
            self.register_buffer("base_loc", torch.zeros(self.base_event_shape))
            self.register_buffer("base_scale", torch.ones(self.base_event_shape))
            self._base = None
        else:
            if tuple(base.event_shape) != self.base_event_shape:
                raise ShapeError(
                    f"base must have event_shape {self.base_event_shape}; got {tuple(base.event_shape)}"
                )
            self._base = base

    # -- pieces ------------------------------------------------------------------------
    def base(self) -> Distribution:
        """The base distribution (standard normal over ``base_event_shape`` by default)."""
        if self._base is not None:
            return self._base
        return pdist.Normal(self.base_loc, self.base_scale).to_event(len(self.base_event_shape))

    def _reference(self) -> Tensor | None:
        """A floating tensor of the model (dtype and device every input must share)."""
        if self._base is None:
            return self.base_loc
        for t in self.parameters():
            return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return None

    def _check_like_model(self, v: Tensor, name: str) -> None:
        ref = self._reference()
        if ref is not None and v.is_floating_point():
            check_like(v, ref, name, owner="the flow")
        elif not v.is_floating_point():
            raise DeviceDtypeError(f"{name} must be a floating-point tensor; got dtype {v.dtype}")

    def _check_context(self, context: Tensor | None) -> None:
        if self.context_dim:
            if not isinstance(context, Tensor):
                raise ShapeError(
                    f"this flow is conditional: context must be a tensor of shape (..., {self.context_dim}); got {context!r}"
                )
            if context.dim() == 0 or context.shape[-1] != self.context_dim:
                raise ShapeError(f"context must have shape (..., {self.context_dim}); got shape {tuple(context.shape)}")
            self._check_like_model(context, "context")
            check_finite(context, "context")
        elif context is not None:
            raise ShapeError("this flow is unconditional (context_dim=0); context must be None")

    def _check_x(self, x: Tensor, name: str = "x") -> None:
        check_tensor(x, name)
        self._check_like_model(x, name)
        k = len(self.event_shape)
        if x.dim() < k or tuple(x.shape[x.dim() - k :]) != self.event_shape:
            raise ShapeError(
                f"{name} must have shape (..., {', '.join(map(str, self.event_shape))}); got shape {tuple(x.shape)}"
            )
        check_finite(x, name)

    def _step(
        self, t: Transform, v: Tensor, context: Tensor | None, inverse: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        if isinstance(t, Bijection):
            ctx = context if t.context_dim else None
            kw = {"generator": generator} if t.stochastic_log_det else {}
            out, ladj = (t.inverse_and_ladj if inverse else t.call_and_ladj)(v, ctx, **kw)
        elif inverse:
            out = t.inv(v)
            ladj = -t.log_abs_det_jacobian(out, v)
        else:
            out = t(v)
            ladj = t.log_abs_det_jacobian(v, out)
        # an element-wise torch transform (event_dim 0) returns per-element log-dets: sum the rest
        return out, _sum_rightmost(ladj, len(self.event_shape) - t.codomain.event_dim)

    def forward_and_ladj(
        self, x: Tensor, context: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Push noise ``x`` through all layers: data ``y`` and ``sum log|det J|`` (batch shape)."""
        total = x.new_zeros(())
        for t in self._transforms:
            x, ladj = self._step(t, x, context, False, generator)
            total = total + ladj
        return x, total

    def inverse_and_ladj(
        self, y: Tensor, context: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Pull data ``y`` back to noise: ``x`` and ``sum log|det J^{-1}|`` (batch shape)."""
        total = y.new_zeros(())
        for t in reversed(self._transforms):
            y, ladj = self._step(t, y, context, True, generator)
            total = total + ladj
        return y, total

    # -- distribution API --------------------------------------------------------------
    def distribution(self, context: Tensor | None = None, cache_size: int = 0) -> FlowDistribution:
        """The flow as a ``pyro.distributions.TransformedDistribution`` (batch shape of the context).

        Args:
            context: ``(*cbatch, context_dim)`` for a conditional flow; only the conditional
                layers are bound to it.
            cache_size: 0 (default: every call computes) or 1 (torch's single-slot cache on
                every fokker layer: ``log_prob`` of a value this distribution just drew with
                ``rsample`` reuses the stored noise instead of inverting, as SVI guides with IAF
                want; build a fresh distribution every step).  Plain torch / Pyro transforms in
                the flow keep their own cache setting.
        """
        self._check_context(context)
        if cache_size not in (0, 1):
            raise ParameterError(f"cache_size must be 0 or 1 (torch's Transform caches at most one value); got {cache_size!r}")
        base = self.base()
        parts: list[Transform] = []
        for t in self._transforms:
            if isinstance(t, Bijection):
                part = t.condition(context) if t.context_dim else t
                if cache_size:
                    part = ConditionedBijection(t, context if t.context_dim else None, cache_size)
            else:  # a plain torch / Pyro transform keeps its own cache setting
                part = t
            parts.append(part)
        if context is not None and context.dim() > 1:
            base = base.expand(torch.broadcast_shapes(base.batch_shape, context.shape[:-1]))
        return FlowDistribution(base, parts)

    def log_prob(
        self, x: Tensor, context: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """``log p(x)`` by the change of variables; shape ``broadcast(x batch, context batch)``.

        Exact unless a layer has a stochastic log-det (``generator`` drives its estimator).
        """
        self._check_x(x)
        self._check_context(context)
        z, ladj = self.inverse_and_ladj(x, context, generator=generator)
        return _base_log_prob(self.base(), z) + ladj

    def _base_sample(self, sample_shape: Shape, context: Tensor | None, generator: torch.Generator | None) -> Tensor:
        shape = as_sample_shape(sample_shape)
        if context is not None:
            shape = shape + tuple(context.shape[:-1])
        if self._base is None:
            loc, scale = self.base_loc, self.base_scale
            eps = _random.randn(shape + tuple(loc.shape), generator=generator, dtype=loc.dtype, device=loc.device)
            return loc + scale * eps
        base = self._base
        devices = [t.device for t in (self._reference(),) if t is not None]
        with _random.rng_scope(generator, devices):
            return base.rsample(torch.Size(shape)) if base.has_rsample else base.sample(torch.Size(shape))

    def rsample(
        self, sample_shape: Shape = (), context: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Reparameterized samples (differentiable w.r.t. the parameters)."""
        self._check_context(context)
        x = self._base_sample(sample_shape, context, generator)
        for t in self._transforms:
            if isinstance(t, Bijection):
                x = t.call(x, context if t.context_dim else None)
            else:
                x = t(x)
        return x

    def sample(
        self, sample_shape: Shape = (), context: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Samples without gradient, shape ``(*sample_shape, *context_batch, *event_shape)``."""
        with torch.no_grad():
            return self.rsample(sample_shape, context, generator=generator)

    def sample_and_log_prob(
        self, sample_shape: Shape = (), context: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized samples and their log-density in one forward pass (exact unless a
        layer's log-det is stochastic)."""
        self._check_context(context)
        x = self._base_sample(sample_shape, context, generator)
        lp = _base_log_prob(self.base(), x)
        y, ladj = self.forward_and_ladj(x, context, generator=generator)
        return y, lp - ladj

    def loss(self, batch: Tensor | tuple[Tensor, Tensor] | list[Tensor]) -> Tensor:
        """Negative mean log-likelihood of ``batch`` (a tensor, or an ``(x, context)`` pair)."""
        if isinstance(batch, (tuple, list)):
            if len(batch) != 2:
                raise ShapeError(f"batch must be a tensor or an (x, context) pair; got {len(batch)} items")
            x, context = batch
            return -self.log_prob(x, context).mean()
        return -self.log_prob(batch).mean()

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob` (so the module can be wrapped, e.g. by DDP)."""
        return self.log_prob(x, context)

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, context_dim={self.context_dim}"
