"""One gradient evaluation of :func:`fokker.train.fit`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ShapeError
from .distributed import average_gradients


def compute_gradients(
    model: nn.Module,
    batch: Any,
    loss_of: Callable[[nn.Module, Any], torch.Tensor],
    params: list[nn.Parameter],
    grad_clip: float | None = None,
    world: int = 1,
) -> tuple[float, float]:
    """Forward and backward pass on ``batch``; returns ``(loss, gradient norm)`` on the host.

    Gradients are accumulated into ``.grad`` (zero them before), averaged across ranks
    under data parallelism, and clipped to global norm ``grad_clip`` when given.  The norm
    returned is the one before clipping.  Loss and norm are read to the host together:
    one sync per step.
    """
    loss = loss_of(model, batch)
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"the loss must be a scalar tensor; got {type(loss).__name__}")
    if loss.dim() != 0:
        raise ShapeError(f"the loss must be a scalar tensor; got shape {tuple(loss.shape)}")
    loss.backward()
    if world > 1:
        average_gradients(params, world)
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else math.inf)
    dtype = torch.promote_types(loss.dtype, torch.float32)  # at least float32: a half-precision norm overflows
    loss_v, norm_v = torch.stack([loss.detach().to(dtype), norm.detach().to(loss.device, dtype)]).tolist()
    return loss_v, norm_v
