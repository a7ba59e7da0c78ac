"""fokker: densities and the SDEs that move them.

Subpackages are imported lazily (``fokker.sde`` loads on first use), so
``import fokker`` is fast and a user who needs only flows never pays for sympy.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._args import argument_checks, argument_checks_enabled, set_argument_checks

__version__ = "0.1.0"

_SUBMODULES = (
    "analytic",
    "checks",
    "datasets",
    "diffusion",
    "ebm",
    "errors",
    "importance",
    "flows",
    "gan",
    "mcmc",
    "metrics",
    "nets",
    "neural_sde",
    "samplers",
    "sde",
    "symbolic",
    "targets",
    "train",
    "vae",
    "validate",
)

__all__ = ["__version__", "set_argument_checks", "argument_checks", "argument_checks_enabled", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'fokker' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
