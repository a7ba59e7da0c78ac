"""The result object every identity checker returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckOutcome"]


@dataclass
class CheckOutcome:
    """Outcome of one identity check.

    Attributes:
        name: which identity (``"marginal"``, ``"fokker_planck"``, ``"tweedie"``, ...).
        error: the measured discrepancy (its meaning is in ``metric``).
        tolerance: the largest ``error`` that passes.
        passed: ``error <= tolerance`` (and finite).
        metric: what ``error`` measures, e.g. ``"max |residual|"`` or ``"max z-score"``.
        details: extra numbers (per-quantity errors, sample sizes, ...).

    ``bool(outcome)`` is ``passed``, so ``assert check_tweedie(...)`` works.
    """

    name: str
    error: float
    tolerance: float
    passed: bool
    metric: str = "max error"
    details: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.passed)

    def __repr__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        extra = ", ".join(f"{k}={_fmt(v)}" for k, v in self.details.items())
        return (
            f"CheckOutcome({self.name}: {verdict}, {self.metric} = {_fmt(self.error)} "
            f"{'<=' if self.passed else '>'} tolerance {_fmt(self.tolerance)}" + (f"; {extra}" if extra else "") + ")"
        )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
