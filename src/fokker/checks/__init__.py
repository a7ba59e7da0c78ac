"""User-facing identity checkers; each returns a :class:`CheckOutcome` (error, tolerance, passed).

SDE checks (:mod:`fokker.checks.sde`): :func:`check_marginal` (simulation vs closed form),
:func:`check_fokker_planck` (autograd residual of the Fokker-Planck equation),
:func:`check_tweedie` (denoiser / noise predictor vs score).
"""

from .result import CheckOutcome
from .sde import check_fokker_planck, check_marginal, check_tweedie

__all__ = ["CheckOutcome", "check_marginal", "check_fokker_planck", "check_tweedie"]
