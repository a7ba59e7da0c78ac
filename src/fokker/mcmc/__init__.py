"""Many-chain MCMC: vectorized kernels (ULA, MALA, HMC), Stan-style warm-up, diagnostics, AIS/SMC.

See ``docs/mcmc.md``.  Typical use::

    res = fokker.mcmc.sample(target, fokker.mcmc.HMC(), num_chains=64, num_samples=1000, warmup=1000)
    res.samples          # (chains, draws, dim)
    res.summary()
"""

from __future__ import annotations

from . import diagnostics
from .adaptation import DualAveraging, stan_windows
from .kernels import HMC, MALA, ULA, Kernel, State, StepInfo, leapfrog
from .metric import Metric, regularized_covariance
from .sample import MCMCResult, find_reasonable_step_size, sample

__all__ = [
    "sample",
    "MCMCResult",
    "Kernel",
    "State",
    "StepInfo",
    "ULA",
    "MALA",
    "HMC",
    "leapfrog",
    "Metric",
    "regularized_covariance",
    "DualAveraging",
    "stan_windows",
    "find_reasonable_step_size",
    "diagnostics",
]

from .annealing import AIS, SMC, AISResult, AnnealedTarget, annealed_langevin, geometric_betas  # noqa: E402

__all__ += ["annealed_langevin", "AIS", "SMC", "AISResult", "AnnealedTarget", "geometric_betas"]
