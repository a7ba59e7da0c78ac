"""The validation registry behind ``fokker validate``.

A *check* reproduces a closed-form or published number and compares it with a
reference.  Packages register checks in modules ``fokker/validate/checks_*.py``
(discovered automatically)::

    from fokker.validate import CheckResult, register

    @register("targets.manywell_log_z", group="targets")
    def manywell_log_z(ctx):
        est = ...
        return CheckResult.compare("ManyWell(32) log Z", est, 164.695675, tol=1e-3)

A check returns one :class:`CheckResult` or a list of them.  It reads
``ctx.quick`` to run a reduced version, writes plots under ``ctx.out`` and
raises :class:`fokker.errors.DataNotFoundError` when it needs ``shared/`` data
that is absent (reported as "skipped: data not found").
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CheckResult", "Context", "Check", "Figure", "register", "registry", "discover"]


@dataclass
class CheckResult:
    """One row of the validation table.

    A *control* row (``control=True``) runs the same metric on a deliberately wrong model
    (an untrained network, a single Gaussian fit, a sampler with the wrong sign of the score,
    a broken log-det, ...): it passes only when the metric **rejects** that model, which shows
    the real row beside it could fail.  Build both with the same constructor and
    ``control=True`` for the control.
    """

    name: str
    measured: float | str
    reference: float | str
    tolerance: float | str
    passed: bool
    status: str = ""  # "pass", "FAIL", "rejected", "skipped: ..." (filled in by the runner when empty)
    details: str = ""
    control: bool = False

    @classmethod
    def compare(
        cls,
        name: str,
        measured: float,
        reference: float,
        tol: float,
        relative: bool = False,
        details: str = "",
        control: bool = False,
    ) -> "CheckResult":
        """Pass when ``|measured - reference| <= tol`` (times ``|reference|`` if ``relative``).

        With ``control=True`` the row passes when that criterion does **not** hold (the metric
        rejected the deliberately wrong model); a NaN measurement never passes either way.
        """
        bound = tol * abs(reference) if relative else tol
        finite = math.isfinite(measured)
        ok = finite and abs(measured - reference) <= bound
        tol_s = f"{tol:.3g} (rel)" if relative else f"{tol:.3g}"
        return cls(name, float(measured), float(reference), tol_s, _verdict(ok, finite, control), details=details,
                   control=control)

    @classmethod
    def bound(
        cls, name: str, measured: float, limit: float, details: str = "", upper: bool = True, control: bool = False
    ) -> "CheckResult":
        """Pass when ``measured <= limit`` (``>=`` when ``upper`` is False); a control passes when it does not."""
        finite = math.isfinite(measured)
        ok = finite and (measured <= limit if upper else measured >= limit)
        return cls(
            name, float(measured), "-", f"{'<=' if upper else '>='} {limit:.3g}", _verdict(ok, finite, control),
            details=details, control=control,
        )


    def reported(self, why: str) -> "CheckResult":
        """This row measured but not judged: it passes whatever its value; ``why``, its bound and whether the
        bound is met (or, for a control, whether the wrong model is rejected) go into the details."""
        met = ("rejected" if self.passed else "not rejected") if self.control else ("met" if self.passed else "not met")
        details = f"measured, not judged ({why}; bound {self.tolerance}, {met}); {self.details}".rstrip("; ")
        return CheckResult(self.name, self.measured, "-", "-", True, details=details)


def _verdict(ok: bool, finite: bool, control: bool) -> bool:
    return bool((not ok and finite) if control else ok)


@dataclass
class Figure:
    """A picture a check wrote into the report folder, with the caption shown under it."""

    path: Path
    caption: str


@dataclass
class Context:
    """What a check gets: run mode, output folder, a seed, and where to announce its figures."""

    quick: bool = True
    out: Path = field(default_factory=lambda: Path("fokker-report"))
    seed: int = 0
    figures: list[Figure] = field(default_factory=list)

    def figure(self, name: str, caption: str) -> Path:
        """The path to save a PNG called ``name`` to, registered with its caption for ``report.md``."""
        path = self.out / name
        self.figures.append(Figure(path, caption))
        return path


@dataclass
class Check:
    name: str
    group: str
    fn: Callable[[Context], "CheckResult | list[CheckResult]"]
    needs_data: bool = False


_REGISTRY: dict[str, Check] = {}
_IMPORT_ERRORS: dict[str, str] = {}


def register(
    name: str, group: str = "misc", needs_data: bool = False
) -> Callable[[Callable[[Context], "CheckResult | list[CheckResult]"]], Callable]:
    """Decorator registering a validation check under a unique ``name``."""

    def deco(fn: Callable[[Context], "CheckResult | list[CheckResult]"]) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"a validation check named {name!r} is already registered")
        _REGISTRY[name] = Check(name, group, fn, needs_data)
        return fn

    return deco


def discover() -> None:
    """Import every ``fokker.validate.checks_*`` module so its checks register."""
    pkg_path = Path(__file__).parent
    for mod in pkgutil.iter_modules([str(pkg_path)]):
        if mod.name.startswith("checks_"):
            try:
                importlib.import_module(f"{__name__}.{mod.name}")
            except Exception as e:  # reported as a failed row by the runner, not a crash
                _IMPORT_ERRORS[mod.name] = f"{type(e).__name__}: {e}"


def import_errors() -> dict[str, str]:
    """Check modules that failed to import during :func:`discover` (name -> error)."""
    return dict(_IMPORT_ERRORS)


def registry() -> dict[str, Check]:
    """All registered checks, by name (after discovery)."""
    discover()
    return dict(sorted(_REGISTRY.items()))
