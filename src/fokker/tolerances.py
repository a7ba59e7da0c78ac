"""Numerical tolerances per dtype: the one place tests and checkers take them from.

``tolerance(dtype)`` returns ``Tolerance(rtol, atol)``; identities that hold up to
rounding (inverse round trips, log-det vs autograd, Tweedie conversions,
Chapman-Kolmogorov) use it.  Statistical checks use ``Z_SCORE`` standard errors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Tolerance(NamedTuple):
    rtol: float
    atol: float


_TOL = {
    torch.float64: Tolerance(rtol=1e-9, atol=1e-9),
    torch.float32: Tolerance(rtol=1e-4, atol=1e-4),
    torch.float16: Tolerance(rtol=1e-2, atol=1e-2),
    torch.bfloat16: Tolerance(rtol=3e-2, atol=3e-2),
}

#: Looser tolerances for results that go through iterative solvers, power
#: series or long compositions (ODE solves, fixed-point inverses, deep flows).
_LOOSE = {
    torch.float64: Tolerance(rtol=1e-6, atol=1e-6),
    torch.float32: Tolerance(rtol=2e-3, atol=2e-3),
    torch.float16: Tolerance(rtol=5e-2, atol=5e-2),
    torch.bfloat16: Tolerance(rtol=1e-1, atol=1e-1),
}

#: Number of standard errors allowed in Monte-Carlo comparisons.  With a fixed
#: seed the tests are deterministic; 4 SE keeps the per-comparison false-failure
#: rate ~6e-5 so reseeding does not flake either.
Z_SCORE = 4.0


def tolerance(dtype: torch.dtype, loose: bool = False) -> Tolerance:
    """Tolerance for computations carried out in ``dtype``."""
    table = _LOOSE if loose else _TOL
    if dtype not in table:
        raise ValueError(f"no tolerance defined for dtype {dtype}")
    return table[dtype]


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, loose: bool = False, msg: str = ""
) -> None:
    """``torch.testing.assert_close`` with the tolerance of ``dtype`` (default: ``actual.dtype``)."""
    tol = tolerance(dtype or actual.dtype, loose)
    torch.testing.assert_close(
        actual, expected.to(actual.dtype), rtol=tol.rtol, atol=tol.atol, msg=(lambda m: f"{msg}\n{m}") if msg else None
    )
