"""Discretely observed paths ``(times, paths)``: the argument checks and the tuple :func:`fokker.train.fit` minibatches.

A data set of ``B`` paths observed at ``K`` times in ``d`` dimensions is a pair

* ``paths``: ``(B, K, d)``, finite;
* ``times``: ``(K,)`` (one grid shared by all paths) or ``(B, K)`` (a grid per path), strictly
  increasing along the last dimension, same dtype and device as ``paths``.
"""

from __future__ import annotations

import torch

from .._args import argument_checks_enabled, check_finite, check_like, check_tensor
from ..errors import ParameterError, ShapeError

__all__ = ["path_data", "check_paths"]


def check_paths(times: torch.Tensor, paths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate observed paths and return ``(times, paths)`` with ``times`` expanded to ``(B, K)``.

    Raises:
        ShapeError: ``paths`` not ``(B, K, d)`` with ``K >= 2``, or ``times`` not ``(K,)`` / ``(B, K)``.
        DeviceDtypeError: ``times`` and ``paths`` differ in dtype or device.
        NonFiniteError: NaN or inf in ``paths`` or ``times`` (while argument checks are on).
        ParameterError: ``times`` not strictly increasing (while argument checks are on).
    """
    check_tensor(paths, "paths")
    check_tensor(times, "times")
    if paths.dim() != 3:
        raise ShapeError(f"paths must have shape (num_paths, num_times, d); got shape {tuple(paths.shape)}")
    num_paths, num_times, _ = paths.shape
    if num_times < 2:
        raise ShapeError(f"paths must hold at least 2 observation times per path; got {num_times}")
    if times.shape not in ((num_times,), (num_paths, num_times)):
        raise ShapeError(
            f"times must have shape ({num_times},) or ({num_paths}, {num_times}) to match paths {tuple(paths.shape)}; "
            f"got shape {tuple(times.shape)}"
        )
    check_like(times, paths, "times", owner="paths")
    check_finite(paths, "paths")
    check_finite(times, "times")
    if argument_checks_enabled() and not bool((times[..., 1:] > times[..., :-1]).all()):
        raise ParameterError("times must be strictly increasing along the last dimension")
    return times.expand(num_paths, num_times), paths


def path_data(times: torch.Tensor, paths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tuple ``(times (B, K), paths (B, K, d))`` to hand to :func:`fokker.train.fit`.

    ``fit`` minibatches a tuple of tensors along their first dimension, so a shared ``(K,)`` time
    grid must first be repeated per path: ``fit(model, path_data(times, paths), ...)``.
    """
    t, p = check_paths(times, paths)
    return t.contiguous(), p
