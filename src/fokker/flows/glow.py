"""Multiscale image architecture (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018).

``squeeze`` trades space for channels, ``(C, H, W) -> (4C, H/2, W/2)`` (a permutation:
``log|det| = 0``).  One :class:`Multiscale` level, in the density direction
(data ``y`` -> noise ``x``)::

    v = squeeze(y);  v = layers^{-1}(v);  (z1, h) = split(v);  z2 = next^{-1}(h)
    x = unsqueeze(concat(z1, z2))

so half of the channels are factored out at every level and modelled directly by the
standard-normal base (RealNVP's factor-out), the rest goes on to the next, coarser
level.  The whole hierarchy is one bijection ``(C, H, W) -> (C, H, W)`` whose
log-det is the sum of its steps' log-dets (exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ParameterError, ShapeError
from .base import Bijection

__all__ = ["squeeze", "unsqueeze", "Squeeze", "Multiscale"]


def squeeze(x: Tensor) -> Tensor:
    """``(..., C, H, W) -> (..., 4C, H/2, W/2)``: each 2x2 block becomes 4 channels."""
    *b, C, H, W = x.shape
    x = x.reshape(*b, C, H // 2, 2, W // 2, 2)
    n = len(b)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return x.reshape(*b, 4 * C, H // 2, W // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """Inverse of :func:`squeeze`: ``(..., 4C, H, W) -> (..., C, 2H, 2W)``."""
    *b, C4, H, W = x.shape
    C = C4 // 4
    n = len(b)
    x = x.reshape(*b, C, 2, 2, H, W).permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return x.reshape(*b, C, 2 * H, 2 * W)


def _check_image(v: Tensor, shape: tuple[int, int, int], name: str) -> None:
    if v.dim() < 3 or tuple(v.shape[-3:]) != shape:
        raise ShapeError(f"{name} must have shape (..., {', '.join(map(str, shape))}); got shape {tuple(v.shape)}")


def _squeezed(shape: Sequence[int], name: str = "shape") -> torch.Size:
    """``(..., C, H, W) -> (..., 4C, H/2, W/2)`` on a shape."""
    shape = tuple(shape)
    if len(shape) < 3 or shape[-1] % 2 or shape[-2] % 2:
        raise ShapeError(f"{name} must end in (C, H, W) with even H and W; got {shape}")
    *b, C, H, W = shape
    return torch.Size((*b, 4 * C, H // 2, W // 2))


def _unsqueezed(shape: Sequence[int], name: str = "shape") -> torch.Size:
    """``(..., 4C, H, W) -> (..., C, 2H, 2W)`` on a shape."""
    shape = tuple(shape)
    if len(shape) < 3 or shape[-3] % 4:
        raise ShapeError(f"{name} must end in (4C, H, W) with a channel count divisible by 4; got {shape}")
    *b, C4, H, W = shape
    return torch.Size((*b, C4 // 4, 2 * H, 2 * W))


class Squeeze(Bijection):
    """The squeeze permutation as a layer: ``(C, H, W) -> (4C, H/2, W/2)`` (noise -> data).

    Dinh et al. (2017), RealNVP, sec. 3.6 (figure 3): every 2x2 spatial block becomes
    four channels.  A permutation of the entries, so ``log|det J| = 0`` (exact).  Input
    and output event shapes differ: ``forward_shape((..., C, H, W)) = (..., 4C, H/2, W/2)``
    and ``inverse_shape`` the reverse, so a ``TransformedDistribution`` or a
    :class:`~fokker.flows.flow.Flow` (whose ``event_shape`` is the data shape) reports the
    right shapes.

    Args:
        shape: ``(C, H, W)`` of the input (noise side), ``H`` and ``W`` even.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(event_dim=3)
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ParameterError(f"shape must be (C, H, W) with positive sizes; got {tuple(shape)}")
        C, H, W = self.shape
        if H % 2 or W % 2:
            raise ParameterError(f"Squeeze needs even height and width; got shape {self.shape}")
        self.out_shape = (4 * C, H // 2, W // 2)

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        if tuple(shape[-3:]) != self.shape:
            raise ShapeError(f"Squeeze{self.shape}.forward_shape: shape must end in {self.shape}; got {tuple(shape)}")
        return _squeezed(shape)

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        if tuple(shape[-3:]) != self.out_shape:
            raise ShapeError(f"Squeeze{self.shape}.inverse_shape: shape must end in {self.out_shape}; got {tuple(shape)}")
        return _unsqueezed(shape)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check_context(context)
        _check_image(x, self.shape, "x")
        return squeeze(x), x.new_zeros(x.shape[:-3])

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check_context(context)
        _check_image(y, self.out_shape, "y")
        return unsqueeze(y), y.new_zeros(y.shape[:-3])

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Multiscale(Bijection):
    """One level of the multiscale architecture, recursively holding the next one.

    Dinh et al. (2017), RealNVP, sec. 3.6 (factor out half the dimensions per scale);
    Kingma & Dhariwal (2018), Glow, figure 2.  Density direction (data ``y`` -> noise ``x``):
    ``v = squeeze(y)``, ``v = layers^{-1}(v)``, ``(z1, h) = split(v)``, ``z2 = next^{-1}(h)``,
    ``x = unsqueeze(concat(z1, z2))``.  Shape preserving, ``(C, H, W) -> (C, H, W)``; the
    log-det is the sum of the layers' (exact).

    Args:
        shape: ``(C, H, W)`` of this level's input (``H``, ``W`` even).
        layers: bijections (noise -> data) acting on the squeezed ``(4C, H/2, W/2)``.
        next: the next level, acting on ``(2C, H/2, W/2)``; ``None`` for the last level
            (then nothing is factored out there).
    """

    def __init__(self, shape: Sequence[int], layers: Sequence[Bijection], next: "Multiscale | None" = None) -> None:
        super().__init__(event_dim=3)
        C, H, W = self.shape = tuple(int(s) for s in shape)  # type: ignore[misc]
        if H % 2 or W % 2:
            raise ParameterError(f"Multiscale needs even height and width; got shape {self.shape}")
        for i, t in enumerate(layers):
            if not isinstance(t, Bijection) or t.context_dim or t.event_dim != 3:
                raise ParameterError(f"layers[{i}] must be an unconditional image Bijection (event_dim 3); got {t!r}")
        self.layers = nn.ModuleList(layers)
        if next is not None and tuple(next.shape) != (2 * C, H // 2, W // 2):
            raise ParameterError(f"next level must have shape {(2 * C, H // 2, W // 2)}; got {tuple(next.shape)}")
        self.next = next

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_image(x, self.shape, "x")
        self._check_context(context)
        v = squeeze(x)
        ladj = x.new_zeros(x.shape[:-3])
        if self.next is not None:
            c = self.shape[0] * 2
            h, l = self.next.call_and_ladj(v[..., c:, :, :])
            v = torch.cat([v[..., :c, :, :], h], -3)
            ladj = ladj + l
        for t in self.layers:
            v, l = t.call_and_ladj(v)
            ladj = ladj + l
        return unsqueeze(v), ladj

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_image(y, self.shape, "y")
        self._check_context(context)
        v = squeeze(y)
        ladj = y.new_zeros(y.shape[:-3])
        for t in reversed(self.layers):
            v, l = t.inverse_and_ladj(v)
            ladj = ladj + l
        if self.next is not None:
            c = self.shape[0] * 2
            z, l = self.next.inverse_and_ladj(v[..., c:, :, :])
            v = torch.cat([v[..., :c, :, :], z], -3)
            ladj = ladj + l
        return unsqueeze(v), ladj

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
