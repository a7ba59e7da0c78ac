"""Densities to sample from: the :class:`Target` protocol and benchmark targets.

``from_pyro`` (in :mod:`fokker.targets.pyro`) is loaded on first access so that
``import fokker.targets`` does not import Pyro.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .banana import Banana
from .base import CallableTarget, Target, as_target
from .eight_schools import EightSchools
from .funnel import Funnel
from .lgcp import LGCP
from .logistic import LogisticRegression, breast_cancer, german_credit, ionosphere, sonar
from .mixture import GaussianMixture, mog40
from .rings import Rings
from .wells import DoubleWell, ManyWell

__all__ = [
    "Target",
    "CallableTarget",
    "as_target",
    "catalogue",
    "GaussianMixture",
    "mog40",
    "Funnel",
    "ManyWell",
    "DoubleWell",
    "Banana",
    "Rings",
    "LogisticRegression",
    "breast_cancer",
    "ionosphere",
    "sonar",
    "german_credit",
    "LGCP",
    "EightSchools",
    "from_pyro",
]


def __getattr__(name: str) -> Any:
    if name == "from_pyro":
        from .pyro import from_pyro

        return from_pyro
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def catalogue() -> dict[str, Callable[[], Target]]:
    """Named factories of the benchmark targets (used by ``fokker targets``).

    Each value is a zero-argument callable building the target with its benchmark
    settings; targets that read ``shared/validation`` data raise
    :class:`fokker.errors.DataNotFoundError` when it is absent.
    """
    return {
        "mog40": mog40,
        "funnel": Funnel,
        "manywell": ManyWell,
        "doublewell": lambda: DoubleWell(dim=5, num_wells=5, delta=4.0),
        "banana": Banana,
        "rings": Rings,
        "eight_schools": EightSchools,
        "breast_cancer": breast_cancer,
        "ionosphere": ionosphere,
        "sonar": sonar,
        "german_credit": german_credit,
        "lgcp": LGCP,
    }
