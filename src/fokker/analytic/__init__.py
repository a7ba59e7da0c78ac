"""Closed-form oracles: diffused Gaussian mixtures (exact p_t, score, denoiser) and RBM partition functions."""

from __future__ import annotations

import importlib.util as _ilu

from .diffused_gmm import DiffusedGaussianMixture

__all__ = ["DiffusedGaussianMixture"]

if _ilu.find_spec(f"{__name__}.rbm") is not None:  # exact RBM partition functions (EBM engineer)
    from . import rbm as _rbm
    from .rbm import *  # noqa: F401,F403

    __all__ += list(getattr(_rbm, "__all__", []))
