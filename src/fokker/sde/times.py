"""Time handling shared by every SDE: conversion to float64 and broadcasting against ``x``.

Convention (DESIGN.md, principle 4): ``t`` is a Python float, a 0-d tensor or a
tensor whose shape equals the *leading* batch dims of ``x`` (typically
``(batch,)`` for ``x`` of shape ``(batch, *event_shape)``).  A ``(B,)`` time is
viewed as ``(B, 1, ..., 1)`` so it broadcasts over the remaining dims of ``x``.
Schedule math runs in float64; results are cast to the dtype/device of ``x`` at
the boundary.
"""

from __future__ import annotations

import torch

from .._args import check_in_interval
from ..errors import ShapeError

TimeLike = float | int | torch.Tensor

__all__ = ["TimeLike", "as_time64", "align_time", "check_time", "out_dtype", "protocol_time"]


def as_time64(t: TimeLike, device: torch.device | None = None) -> torch.Tensor:
    """``t`` as a float64 tensor (on ``t``'s device, else ``device``, else CPU).

    Differentiable: a ``t`` that requires grad keeps its graph (the Fokker-Planck check
    differentiates densities in ``t``)."""
    if isinstance(t, torch.Tensor):
        return t.to(torch.float64)
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"t must be a float or a torch.Tensor; got {type(t).__name__}")
    return torch.tensor(float(t), dtype=torch.float64, device=device)


def protocol_time(t: TimeLike) -> torch.Tensor:
    """A solver's time argument (torchsde/torchdiffeq pass 0-d tensors) as a detached float64 tensor."""
    if isinstance(t, torch.Tensor):
        return t.detach().to(torch.float64)
    return torch.tensor(float(t), dtype=torch.float64)


def out_dtype(t: TimeLike) -> torch.dtype:
    """dtype of a schedule value returned for time ``t`` (``t``'s float dtype, else the default)."""
    if isinstance(t, torch.Tensor) and t.is_floating_point():
        return t.dtype
    return torch.get_default_dtype()


def check_time(t: TimeLike, low: float, high: float, name: str = "t") -> None:
    """Raise :class:`~fokker.errors.DomainError` unless ``low <= t <= high`` (tensor: only while validating)."""
    check_in_interval(t.detach() if isinstance(t, torch.Tensor) else t, low, high, name)


def align_time(
    coef: torch.Tensor, x: torch.Tensor, event_dim: int, name: str = "t", cast: bool = True
) -> torch.Tensor:
    """Reshape a per-time coefficient (shape of ``t``) so it broadcasts against ``x``.

    ``coef`` of shape ``()`` stays 0-d; shape ``(B, ...)`` must equal the leading dims of
    ``x``'s batch shape and gets trailing singleton dims; moved to ``x``'s device and,
    when ``cast``, to ``x``'s dtype.
    """
    coef = coef.to(device=x.device, dtype=x.dtype) if cast else coef.to(device=x.device)
    if coef.dim() == 0:
        return coef
    batch_dims = x.dim() - event_dim
    if coef.dim() > batch_dims or tuple(coef.shape) != tuple(x.shape[: coef.dim()]):
        raise ShapeError(
            f"{name} must be a float, a 0-d tensor or have the leading batch shape of x "
            f"{tuple(x.shape[:batch_dims])}; got shape {tuple(coef.shape)}"
        )
    return coef.reshape(coef.shape + (1,) * (x.dim() - coef.dim()))
