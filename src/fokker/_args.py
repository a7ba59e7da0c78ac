"""Argument checks shared by all public entry points.

Follows the pattern of torch's ``Distribution.set_default_validate_args``: checks are
on by default and one global switch turns them off for speed::

    fokker.set_argument_checks(False)          # process-wide
    with fokker.argument_checks(False): ...    # temporarily

Cheap structural checks (shapes, dtypes, devices, Python-number parameters) cost
no host-device synchronisation and always run.  Value checks on tensors
(``isfinite(x).all()``) need a sync, so they run only while argument checks are on;
inner sampling / training loops call the unchecked internals instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from numbers import Real

import torch

from .errors import DeviceDtypeError, DomainError, NonFiniteError, ParameterError, ShapeError

_CHECKS = True


def set_argument_checks(value: bool) -> None:
    """Turn value checks (NaN/inf inputs, ranges of tensor arguments) on or off globally."""
    global _CHECKS
    _CHECKS = bool(value)


def argument_checks_enabled() -> bool:
    """Whether value checks are currently on."""
    return _CHECKS


@contextlib.contextmanager
def argument_checks(value: bool) -> Iterator[None]:
    """Context manager that sets the global argument-check switch and restores it on exit."""
    global _CHECKS
    old = _CHECKS
    _CHECKS = bool(value)
    try:
        yield
    finally:
        _CHECKS = old


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Require a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise DeviceDtypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_last_dim(x: torch.Tensor, dim: int, name: str) -> None:
    """Require ``x.shape[-1] == dim`` (event vectors of length ``dim``)."""
    if x.dim() == 0 or x.shape[-1] != dim:
        raise ShapeError(f"{name} must have shape (..., {dim}); got shape {tuple(x.shape)}")


def check_event_shape(x: torch.Tensor, event_shape: tuple[int, ...], name: str) -> None:
    """Require the trailing dims of ``x`` to equal ``event_shape``."""
    k = len(event_shape)
    if x.dim() < k or tuple(x.shape[x.dim() - k :]) != tuple(event_shape):
        raise ShapeError(
            f"{name} must have shape (..., {', '.join(map(str, event_shape))}); got shape {tuple(x.shape)}"
        )


def check_finite(x: torch.Tensor, name: str) -> None:
    """Require every entry of ``x`` to be finite (only while argument checks are on: it syncs)."""
    if _CHECKS and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{name} contains {n_bad} non-finite value(s) (NaN or inf)")


def check_like(x: torch.Tensor, ref: torch.Tensor | None, name: str, owner: str = "the target") -> None:
    """Require ``x`` to share device and dtype with the reference tensor ``ref`` (if any)."""
    if ref is None:
        return
    if x.device != ref.device:
        raise DeviceDtypeError(
            f"{name} is on device {x.device} but {owner} is on {ref.device}; move one with .to()"
        )
    if x.dtype != ref.dtype:
        raise DeviceDtypeError(
            f"{name} has dtype {x.dtype} but {owner} has dtype {ref.dtype}; convert one with .to()"
        )


def check_positive(value: float | torch.Tensor, name: str) -> None:
    """Require a (tensor of) strictly positive finite number(s)."""
    if isinstance(value, torch.Tensor):
        if not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
            raise ParameterError(f"{name} must be positive and finite; got {value}")
        return
    if not isinstance(value, Real) or not math.isfinite(float(value)) or float(value) <= 0:
        raise ParameterError(f"{name} must be a positive finite number; got {value!r}")


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """Require a Python integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def check_in_interval(
    t: float | torch.Tensor, low: float, high: float, name: str = "t"
) -> None:
    """Require ``low <= t <= high`` (tensor check only while argument checks are on)."""
    if isinstance(t, torch.Tensor):
        if not _CHECKS:
            return
        if t.numel() == 0:
            return
        lo, hi = float(t.min()), float(t.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < low or hi > high:
            raise DomainError(f"{name} must lie in [{low}, {high}]; got values in [{lo}, {hi}]")
        return
    if not (low <= float(t) <= high):
        raise DomainError(f"{name} must lie in [{low}, {high}]; got {t!r}")


def reference_tensor(module: object) -> torch.Tensor | None:
    """The first floating parameter or buffer of ``module`` (whose dtype and device its inputs must
    share), or ``None`` for a plain callable or a module without floating tensors (it then follows
    its inputs)."""
    import torch.nn as nn

    if not isinstance(module, nn.Module):
        return None
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t
    return None
