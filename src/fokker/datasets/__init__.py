"""Data sets for density estimation: 2-D toy samplers and scikit-learn's 8x8 digits.

See :mod:`fokker.datasets.toy` and :mod:`fokker.datasets.digits` for the exact definitions, and
:mod:`fokker.datasets.densities` for the toys' exact log-densities.
"""

from __future__ import annotations

from .densities import TOY_DENSITIES, ToyComponents, toy_components, toy_log_prob
from .digits import digits
from .toy import (
    TOY_DATASETS,
    ToyDataset,
    checkerboard,
    eight_gaussians,
    load,
    pinwheel,
    rings,
    sample,
    swiss_roll,
    two_moons,
)

__all__ = [
    "two_moons",
    "eight_gaussians",
    "checkerboard",
    "rings",
    "pinwheel",
    "swiss_roll",
    "TOY_DATASETS",
    "ToyDataset",
    "load",
    "sample",
    "digits",
    "toy_log_prob",
    "toy_components",
    "ToyComponents",
    "TOY_DENSITIES",
]
