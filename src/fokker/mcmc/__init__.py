"""Many-chain MCMC: vectorized kernels (ULA, MALA, HMC, NUTS, ChEES-HMC) with their own warm-up, diagnostics, AIS/SMC.

See ``docs/mcmc.md``.  Typical use::

    res = fokker.mcmc.sample(target, fokker.mcmc.HMC(), num_chains=64, num_samples=1000, warmup=1000, seed=0)
    res.samples          # (chains, draws, dim)
    print(res.summary())
"""

from __future__ import annotations

from . import diagnostics
from .adaptation import (
    Adaptation,
    ChEESAdaptation,
    DualAveraging,
    WindowedAdaptation,
    find_reasonable_step_size,
    halton,
    stan_windows,
)
from .kernels import HMC, MALA, ULA, ChEESHMC, Kernel, State, StepInfo, langevin_move, leapfrog
from .metric import Metric, regularized_covariance
from .nuts import NUTS
from .sample import MCMCResult, initial_points, sample

__all__ = [
    "sample",
    "initial_points",
    "MCMCResult",
    "Kernel",
    "State",
    "StepInfo",
    "ULA",
    "MALA",
    "HMC",
    "NUTS",
    "ChEESHMC",
    "leapfrog",
    "langevin_move",
    "Metric",
    "regularized_covariance",
    "Adaptation",
    "WindowedAdaptation",
    "ChEESAdaptation",
    "halton",
    "DualAveraging",
    "stan_windows",
    "find_reasonable_step_size",
    "diagnostics",
]

from .annealing import (  # noqa: E402
    AIS,
    SMC,
    AdaptiveSMC,
    AnnealedTarget,
    annealed_langevin,
    geometric_betas,
    ncsn_step_sizes,
    systematic_resampling,
)

__all__ += [
    "annealed_langevin", "ncsn_step_sizes", "AIS", "SMC", "AdaptiveSMC", "AnnealedTarget", "geometric_betas",
    "systematic_resampling",
]

from .neutra import NeuTraTarget, neutra  # noqa: E402

__all__ += ["NeuTraTarget", "neutra"]
