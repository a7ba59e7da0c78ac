"""Forward SDEs with closed-form marginals, time reversal, probability flow, the DDPM chain.

* :class:`SDE` -- base (torchsde protocol); :class:`LinearSDE` -- ``dX = a(t) X dt + g(t) dW``
  with exact ``alpha(t)``, ``sigma(t)``, ``marginal``, ``transition``, ``prior``
  (Särkkä & Solin 2019, sec. 6.1; seed 001 Prop. 1); concrete :class:`VESDE`, :class:`VPSDE` (``VPSDE.cosine()``),
  :class:`SubVPSDE`, :class:`OrnsteinUhlenbeck`, :class:`BrownianMotion`,
  ``LinearSDE.from_schedule``; :class:`CriticallyDampedLangevin` (phase space).
* ``sde.reverse(score_fn)`` -> :class:`ReverseSDE`; ``sde.probability_flow(score_fn)`` ->
  :class:`ProbabilityFlowODE`.
* :class:`DDPM` -- the discrete chain (Ho, Jain & Abbeel 2020; seed 003).
* :func:`solve` -- lean fixed-grid Euler-Maruyama / Heun; other methods via torchsde/torchdiffeq.
* :class:`Schedule` -- the protocol (``alpha, sigma, f, g2, log_snr, coefficients``) that diffusion
  models, samplers and checkers use; :func:`time_grid` -- the one grid builder.
* :func:`kl_path` -- Girsanov KL between the path measures of two SDEs with the same diffusion;
  :func:`girsanov_integrand` -- its rate ``0.5 |(f_p - f_q)/g|^2`` (also used by ``fokker.neural_sde``).
"""

from .base import SDE, ScoreFn
from .cld import CriticallyDampedLangevin
from .ddpm import DDPM
from .linear import LinearSDE, ScheduleSDE
from .ou import BrownianMotion, OrnsteinUhlenbeck
from .reverse import ProbabilityFlowODE, ReverseSDE
from .grid import SPACINGS, time_grid
from .path_kl import PathKL, girsanov_integrand, kl_path
from .schedule import Coefficients, Schedule
from .solve import solve
from .ve import VESDE
from .vp import CosineVPSDE, PiecewiseVPSDE, SubVPSDE, VPSDE

__all__ = [
    "SDE",
    "ScoreFn",
    "Schedule",
    "Coefficients",
    "LinearSDE",
    "ScheduleSDE",
    "VESDE",
    "VPSDE",
    "CosineVPSDE",
    "SubVPSDE",
    "PiecewiseVPSDE",
    "OrnsteinUhlenbeck",
    "BrownianMotion",
    "CriticallyDampedLangevin",
    "ReverseSDE",
    "ProbabilityFlowODE",
    "DDPM",
    "solve",
    "time_grid",
    "SPACINGS",
    "kl_path",
    "PathKL",
    "girsanov_integrand",
]
