"""Path Integral Sampler (Zhang & Chen, ICLR 2022).

Reference: scaled Brownian motion from the origin, ``dX_t = sigma dW_t``,
``X_0 = 0``; its exact transitions on the grid are
``y_{k+1} = y_k + sigma sqrt(h_k) eps_k`` (``h_k = t_{k+1} - t_k``) and its marginal
at ``T`` is ``N(0, sigma^2 T I)``.  Controlled chain (Euler-Maruyama, exact for the
reference part):

.. math:: y_{k+1} = y_k + \\sigma^2 h_k f_\\theta(y_k, t_k) + \\sigma \\sqrt{h_k}\\, \\varepsilon_k

(the drift ``u = sigma^2 f``; the optimal ``f`` is ``grad log h_t`` with
``h_t(x) = E[pi(X_T) / N(X_T; 0, sigma^2 T) | X_t = x]``).  Target path measure:
``pi(y_K)`` times the Brownian bridge from ``y_K`` back to 0, so

.. math:: \\log w = \\log\\gamma(y_K) - \\log N(y_K; 0, \\sigma^2 T I)
          + \\sum_k [\\log ref_k(y_{k+1}|y_k) - \\log q_k(y_{k+1}|y_k)].

Defaults: the PIS configuration of Berner/Richter's ``sde_sampler``
(``sigma = sqrt(0.2)``, ``T = 5``, so the reference ends in ``N(0, I)``), uniform
grid of 100 steps (as in the PIS paper), PIS-grad network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._args import check_positive
from .._gaussian import isotropic_normal_log_prob
from .._random import randn_like
from ..sde import BrownianMotion, time_grid
from ..targets.base import Target, as_target
from .base import DiffusionSampler, controlled_gaussian_step, net_like_target
from .networks import PISGradNet

__all__ = ["PIS"]


class PIS(DiffusionSampler):
    """Path Integral Sampler (Zhang & Chen 2022, *Path integral sampler: a stochastic control
    approach for sampling*, ICLR; the Brownian reference and its control objective, sec. 3).

    See the module docstring for the discrete chain and its exact importance weight.

    Args:
        target: the unnormalized target.
        num_steps, T, spacing: time discretization (:func:`fokker.sde.time_grid`).
        sigma: diffusion coefficient of the Brownian reference.
        loss: ``"kl"`` (PIS objective) or ``"lv"``.
        net: control network; default :class:`PISGradNet`.
    """

    def __init__(
        self,
        target: Target,
        num_steps: int = 100,
        T: float = 5.0,
        sigma: float = math.sqrt(0.2),
        spacing: str = "uniform",
        loss: str = "kl",
        net: nn.Module | None = None,
        width: int = 64,
        num_layers: int = 2,
    ) -> None:
        check_positive(sigma, "sigma")
        target = as_target(target)
        times = time_grid(num_steps, 0.0, T, spacing)
        super().__init__(target, times, net if net is not None else net_like_target(PISGradNet(target.dim, width, num_layers), target), loss)
        self.sigma = float(sigma)
        #: the reference process: scaled Brownian motion dX = sigma dW from X_0 = 0
        self.reference = BrownianMotion(sigma=self.sigma, T=float(T))

    def coefficient_tables(self) -> dict[str, torch.Tensor]:
        t = self.times
        h = torch.diff(t)
        _, std = self.reference.transition_coefs(t[:-1], t[1:])
        var = self.reference.coefficients(t).sigma ** 2  # marginal variances sigma^2 t of the reference
        return {
            "t_norm": t / self.T,
            "std": std,
            "gain": self.sigma**2 * h,
            # Brownian bridge back from y_{k+1} to 0: X_k | X_{k+1} = y ~ N(v_k/v_{k+1} y, v_k s_k^2 / v_{k+1})
            "bridge_ratio": var[:-1] / var[1:],
            "bridge_std": (var[:-1] / var[1:]).sqrt() * std,
            "terminal_std": var[-1].sqrt(),
        }

    def init_sample(self, num_samples: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.zeros(num_samples, self.dim, dtype=like.dtype, device=like.device)

    def init_log_weight(self, y0: torch.Tensor) -> torch.Tensor:
        return y0.new_zeros(y0.shape[:-1])

    def model_kernel(self, k, y, tab):
        return y + tab["gain"][k] * self.control(k, y), tab["std"][k]

    def evaluate(self, k, y, ctx):
        return self.control_in(k, y, ctx)

    def step(self, k, y, f, noise, ctx, detach):
        # the fused form of the default step: Brownian increment plus the control's shift
        y_next, inc = controlled_gaussian_step(y, ctx["gain"][k] * f, ctx["std"][k], noise, detach)
        return y_next, inc, (self.evaluate(k + 1, y_next, ctx) if k + 1 < self.num_steps else None)

    def target_kernel_log_prob(self, k, y, y_next, tab):
        return isotropic_normal_log_prob(y_next, y, tab["std"][k])

    def target_kernel_sample(self, k, y_next, tab, generator=None):
        return tab["bridge_ratio"][k] * y_next + tab["bridge_std"][k] * randn_like(y_next, generator)

    def terminal_log_weight(self, yK, log_gamma):
        tab = self.tables_like(yK)
        return log_gamma - isotropic_normal_log_prob(yK, None, tab["terminal_std"])
