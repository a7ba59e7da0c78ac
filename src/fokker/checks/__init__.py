"""User-facing identity checkers; each returns a :class:`CheckOutcome` (error, tolerance, passed).

SDE checks (:mod:`fokker.checks.sde`): :func:`check_marginal` (simulation vs closed form),
:func:`check_fokker_planck` (autograd residual of the Fokker-Planck equation),
:func:`check_tweedie` (denoiser / noise predictor vs score).

Flow checks (:mod:`fokker.checks.flows`): :func:`check_inverse` (both round trips),
:func:`check_log_det` (analytic log-det vs autograd slogdet), :func:`check_normalized`
(quadrature in 1-2-D).
"""

from .flows import check_inverse, check_log_det, check_normalized
from .result import CheckOutcome
from .sde import check_fokker_planck, check_marginal, check_tweedie

__all__ = [
    "CheckOutcome",
    "check_marginal",
    "check_fokker_planck",
    "check_tweedie",
    "check_inverse",
    "check_log_det",
    "check_normalized",
]
