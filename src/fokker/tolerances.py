"""Numerical tolerances from the dtype's machine epsilon: the one place tests and checkers take them from.

Two levels, both relative to the size of the quantity compared (its *scale*):

* **rounding** (``tolerance(dtype)``): identities that hold up to floating-point rounding in a
  computation of moderate length (inverse round trips, log-det vs autograd, Tweedie
  conversions, Chapman-Kolmogorov): ``rtol = 4 eps^(2/3)``, i.e. two thirds of the digits
  (float64: 1.5e-10; float32: 1.0e-4).  These hold on any BLAS: reductions summed in another
  order or fused differently change results by a few ``eps`` times the scale, far below this.
* **loose** (``tolerance(dtype, loose=True)``): results that go through iterative solvers,
  power series or long compositions (ODE solves, fixed-point inverses, deep flows):
  ``rtol = eps^(1/3)``, one third of the digits (float64: 6.1e-6; float32: 4.9e-3).

The absolute tolerance is ``rtol * scale``; :func:`assert_close` takes the scale from the
expected value (``max(1, max |expected|)``) unless given, so a log-density of size 1e3 is
compared at 1e3 times the tolerance of one of size 1.  Statistical checks use ``Z_SCORE``
standard errors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Tolerance", "tolerance", "assert_close", "Z_SCORE", "eps"]


class Tolerance(NamedTuple):
    rtol: float
    atol: float


#: Number of standard errors allowed in Monte-Carlo comparisons.  With a fixed seed the tests
#: are deterministic; 4 SE keeps the per-comparison false-failure rate ~6e-5 so reseeding does
#: not flake either.
Z_SCORE = 4.0

_ROUNDING_FACTOR = 4.0


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of a floating dtype (``torch.finfo(dtype).eps``)."""
    if not dtype.is_floating_point:
        raise ValueError(f"no tolerance defined for non-floating dtype {dtype}")
    return float(torch.finfo(dtype).eps)


def tolerance(dtype: torch.dtype, loose: bool = False, scale: float = 1.0) -> Tolerance:
    """Tolerance for results computed in ``dtype`` (see the module docstring).

    Args:
        dtype: the floating dtype of the computation.
        loose: iterative solvers / long compositions instead of plain rounding.
        scale: typical magnitude of the compared quantity; ``atol = rtol * scale``.
    """
    e = eps(dtype)
    rtol = e ** (1.0 / 3.0) if loose else _ROUNDING_FACTOR * e ** (2.0 / 3.0)
    if not scale > 0:
        raise ValueError(f"scale must be positive; got {scale!r}")
    return Tolerance(rtol=rtol, atol=rtol * float(scale))


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    loose: bool = False,
    msg: str = "",
    scale: float | None = None,
) -> None:
    """``torch.testing.assert_close`` with the tolerance of ``dtype`` (default ``actual.dtype``).

    ``scale`` defaults to ``max(1, max |expected|)``.
    """
    expected = torch.as_tensor(expected)
    if scale is None:
        e = expected.detach()
        finite = e[torch.isfinite(e)] if e.numel() else e
        scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    tol = tolerance(dtype or actual.dtype, loose, scale)
    torch.testing.assert_close(
        actual,
        expected.to(device=actual.device, dtype=actual.dtype),
        rtol=tol.rtol,
        atol=tol.atol,
        msg=(lambda m: f"{msg}\n{m}") if msg else None,
    )
