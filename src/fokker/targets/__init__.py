"""Densities to sample from: the :class:`Target` protocol and benchmark targets."""

from __future__ import annotations

from collections.abc import Callable

from .banana import Banana
from .base import CallableTarget, Target, as_target
from .funnel import Funnel
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
]


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
    }
