"""``Flow``: a base distribution pushed through bijections, as a trainable module.

Change of variables (seed 000, "normalizing flows"; seed 003): with ``y = T_K o ... o T_1(x)``
and ``x ~ p_base``,

.. math::

    \\log p(y) = \\log p_{base}(x) - \\sum_k \\log|\\det \\partial T_k / \\partial x_{k-1}|.

``log_prob`` is exact (no estimate) for every layer in this module; layers whose
log-det is a stochastic estimate (residual flows, FFJORD with Hutchinson) say so in
their own docstrings.

Fast paths: ``log_prob`` runs each layer's ``inverse_and_ladj`` once (one network pass
per layer), ``sample_and_log_prob`` each ``call_and_ladj`` once.  Neither touches a
transform cache, so any training loop is safe (see :mod:`fokker.flows.base`).
``distribution(context)`` returns the same model as a
``pyro.distributions.TransformedDistribution`` for ``pyro.sample`` / SVI guides.
"""

from __future__ import annotations

from collections.abc import Sequence
import pyro.distributions as pdist
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Transform

from .._args import check_finite, check_tensor
from ..errors import ParameterError, ShapeError
from .base import Bijection

__all__ = ["Flow"]

Shape = int | Sequence[int] | torch.Size


def _as_shape(shape: Shape) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _sum_rightmost(v: Tensor, n: int) -> Tensor:
    return v.sum(tuple(range(-n, 0))) if n > 0 else v


class Flow(nn.Module):
    """A normalizing flow: base distribution + bijections (noise -> data).

    Args:
        transforms: the layers, applied in order to base samples.  fokker
            :class:`~fokker.flows.base.Bijection` s take the fast paths; any other torch
            ``Transform`` (e.g. a Pyro layer or ``ExpTransform``) is called through the
            torch protocol.
        event_shape: the shape of one sample (``d`` or ``(C, H, W)``).
        base: base distribution with that event shape; default a standard normal
            whose parameters are buffers (it follows ``.to(device, dtype)``).
        context_dim: size of the context vector for conditional flows (0: none).

    Shapes: ``log_prob(x)``: ``x`` ``(*batch, *event_shape)`` -> ``(*batch,)``;
    ``sample(shape, context)`` -> ``(*shape, *context_batch, *event_shape)``.

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
        self.context_dim = int(context_dim)
        for t in transforms:
            if not isinstance(t, Transform):
                raise ParameterError(f"transforms must be torch Transforms; got {type(t).__name__}")
            if t.codomain.event_dim > len(self.event_shape):
                raise ParameterError(
                    f"{type(t).__name__} has event_dim {t.codomain.event_dim} > len(event_shape)={len(self.event_shape)}"
                )
        self._transforms = list(transforms)
        self.transforms = nn.ModuleList([t for t in transforms if isinstance(t, nn.Module)])
        if base is None:
            self.register_buffer("base_loc", torch.zeros(self.event_shape))
            self.register_buffer("base_scale", torch.ones(self.event_shape))
            self._base = None
        else:
            if tuple(base.event_shape) != self.event_shape:
                raise ShapeError(
                    f"base must have event_shape {self.event_shape}; got {tuple(base.event_shape)}"
                )
            self._base = base

    # -- pieces ------------------------------------------------------------------------
    def base(self) -> Distribution:
        """The base distribution (standard normal over ``event_shape`` by default)."""
        if self._base is not None:
            return self._base
        return pdist.Normal(self.base_loc, self.base_scale).to_event(len(self.event_shape))

    def _check_context(self, context: Tensor | None) -> None:
        if self.context_dim:
            if context is None or not isinstance(context, Tensor) or context.dim() == 0 or context.shape[-1] != self.context_dim:
                got = None if not isinstance(context, Tensor) else tuple(context.shape)
                raise ShapeError(f"context must have shape (..., {self.context_dim}); got {got}")
        elif context is not None:
            raise ShapeError("this flow is unconditional; context must be None")

    def _check_x(self, x: Tensor, name: str = "x") -> None:
        check_tensor(x, name)
        k = len(self.event_shape)
        if x.dim() < k or tuple(x.shape[x.dim() - k :]) != self.event_shape:
            raise ShapeError(
                f"{name} must have shape (..., {', '.join(map(str, self.event_shape))}); got shape {tuple(x.shape)}"
            )
        check_finite(x, name)

    def _step(self, t: Transform, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        n = len(self.event_shape)
        if isinstance(t, Bijection):
            out, ladj = (t.inverse_and_ladj if inverse else t.call_and_ladj)(v, context)
            return out, _sum_rightmost(ladj, n - t.codomain.event_dim)
        if inverse:
            out = t.inv(v)
            ladj = -t.log_abs_det_jacobian(out, v)
        else:
            out = t(v)
            ladj = t.log_abs_det_jacobian(v, out)
        return out, _sum_rightmost(ladj, n - t.codomain.event_dim)

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Push noise ``x`` through all layers: data ``y`` and ``sum log|det J|``."""
        total = x.new_zeros(())
        for t in self._transforms:
            x, ladj = self._step(t, x, context, inverse=False)
            total = total + ladj
        return x, total

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Pull data ``y`` back to noise: ``x`` and ``sum log|det J^{-1}|``."""
        total = y.new_zeros(())
        for t in reversed(self._transforms):
            y, ladj = self._step(t, y, context, inverse=True)
            total = total + ladj
        return y, total

    # -- distribution API --------------------------------------------------------------
    def distribution(self, context: Tensor | None = None) -> pdist.TransformedDistribution:
        """The flow as a ``pyro.distributions.TransformedDistribution`` (batch shape of the context)."""
        self._check_context(context)
        base = self.base()
        parts: list[Transform] = []
        for t in self._transforms:
            parts.append(t.condition(context) if isinstance(t, Bijection) else t)
        if context is not None and context.dim() > 1:
            base = base.expand(torch.broadcast_shapes(base.batch_shape, context.shape[:-1]))
        return pdist.TransformedDistribution(base, parts)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact ``log p(x)`` by the change of variables; shape ``x.shape[:-len(event_shape)]``."""
        self._check_x(x)
        self._check_context(context)
        z, ladj = self.inverse_and_ladj(x, context)
        return self.base().log_prob(z) + ladj

    def _base_sample(self, shape: Shape, context: Tensor | None) -> Tensor:
        shape = _as_shape(shape)
        if context is not None:
            shape = shape + tuple(context.shape[:-1])
        return self.base().rsample(torch.Size(shape))

    def rsample(self, shape: Shape = (), context: Tensor | None = None) -> Tensor:
        """Reparameterized samples (differentiable w.r.t. the parameters)."""
        self._check_context(context)
        x = self._base_sample(shape, context)
        for t in self._transforms:
            if isinstance(t, Bijection):
                x = t.call(x, context)
            else:
                x = t(x)
        return x

    def sample(self, shape: Shape = (), context: Tensor | None = None) -> Tensor:
        """Samples without gradient, shape ``(*shape, *context_batch, *event_shape)``."""
        with torch.no_grad():
            return self.rsample(shape, context)

    def sample_and_log_prob(self, shape: Shape = (), context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterized samples and their exact log-density in one forward pass."""
        self._check_context(context)
        x = self._base_sample(shape, context)
        lp = self.base().log_prob(x)
        y, ladj = self.forward_and_ladj(x, context)
        return y, lp - ladj

    def loss(self, batch: Tensor | tuple[Tensor, Tensor] | list[Tensor]) -> Tensor:
        """Negative mean log-likelihood of ``batch`` (a tensor, or ``(x, context)``)."""
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
