"""Denoising Diffusion Sampler (Vargas, Grathwohl & Doucet, ICLR 2023).

Reference (Vargas, Grathwohl & Doucet 2023, sec. 3; seed 001 eqs. 76-78): the Ornstein-Uhlenbeck process
``dX_t = -beta X_t dt + sigma sqrt(2 beta) dW_t`` started at its invariant law
``N(0, sigma^2 I)``.  Over a step ``[t_k, t_{k+1}]`` its exact transition is

.. math:: y_{k+1} = \\sqrt{1-\\alpha_k}\\, y_k + \\sigma \\sqrt{\\alpha_k}\\, \\varepsilon_k,
          \\qquad 1 - \\alpha_k = e^{-2 \\beta (t_{k+1} - t_k)},

which leaves ``N(0, sigma^2 I)`` invariant exactly: ``(1 - alpha_k) sigma^2 + sigma^2 alpha_k = sigma^2``.
The time-varying noise schedule enters through the (cosine) grid, as in the DDS
code; its ``alpha = a`` hyper-parameter is ``beta = a^2 / 2`` here.

Sampler (DDS paper, exponential integrator of the controlled reversal, eq. 82 with
``f_theta ~ s_theta + x / sigma^2``):

.. math:: y_{k+1} = \\sqrt{1-\\alpha_k}\\, y_k + 2\\sigma^2 (1 - \\sqrt{1-\\alpha_k}) f_\\theta(y_k, t_k)
          + \\sigma\\sqrt{\\alpha_k}\\, \\varepsilon_k .

Because the reference is stationary and reversible, the target path measure is
``pi(y_K) prod_k ref_k(y_{k+1}|y_k) / N(y_K; 0, sigma^2)`` and the discrete weight is

.. math:: \\log w = \\log\\gamma(y_K) - \\log N(y_K; 0, \\sigma^2 I)
          - \\sum_k \\Big[\\frac{|\\delta_k|^2}{2\\sigma^2\\alpha_k} + \\frac{\\delta_k\\cdot\\varepsilon_k}{\\sigma\\sqrt{\\alpha_k}}\\Big],
          \\quad \\delta_k = 2\\sigma^2(1-\\sqrt{1-\\alpha_k}) f_\\theta(y_k, t_k),

whose expectation is minus the discrete form of eq. 83 (the DDS paper's objective
``sum_k 2 sigma^2 (1 - sqrt(1-alpha_k))^2 / alpha_k |f|^2 + log N / gamma``) plus ``log Z``.

Defaults: the DDS funnel configuration (``T = 6.4``, 128 steps (``dt = 0.05``),
cosine grid, ``sigma = 1.075``, ``alpha = 0.6875`` i.e. ``beta = 0.236``), PIS-grad
network of width 64 with 2 layers.
"""

from __future__ import annotations

import torch
from torch import nn

from .._args import check_positive
from .._gaussian import isotropic_normal_log_prob
from .._random import randn, randn_like
from ..sde import OrnsteinUhlenbeck, time_grid
from ..targets.base import Target, as_target
from .base import DiffusionSampler, controlled_gaussian_step, net_like_target
from .networks import PISGradNet

__all__ = ["DDS"]


class DDS(DiffusionSampler):
    """Denoising Diffusion Sampler (Vargas, Grathwohl & Doucet 2023, *Denoising diffusion
    samplers*, ICLR; the OU reference and its exponential integrator, sec. 3).

    See the module docstring for the discrete chain and its exact importance weight.

    Args:
        target: the unnormalized target.
        num_steps: ``K``.
        T: time horizon.
        sigma: std of the invariant reference ``N(0, sigma^2 I)``.
        beta: OU rate (constant; time variation via ``grid``).
        spacing: time-grid spacing of :func:`fokker.sde.time_grid` (``"cosine"``: the DDS default).
        loss: ``"kl"`` (reparameterized reverse KL, the DDS objective) or ``"lv"``.
        net: control network ``net(x, t/T, score) -> f``; default :class:`PISGradNet`.
    """

    def __init__(
        self,
        target: Target,
        num_steps: int = 128,
        T: float = 6.4,
        sigma: float = 1.075,
        beta: float = 0.6875**2 / 2,
        spacing: str = "cosine",
        loss: str = "kl",
        net: nn.Module | None = None,
        width: int = 64,
        num_layers: int = 2,
    ) -> None:
        check_positive(sigma, "sigma")
        check_positive(beta, "beta")
        target = as_target(target)
        times = time_grid(num_steps, 0.0, T, spacing)
        super().__init__(target, times, net if net is not None else net_like_target(PISGradNet(target.dim, width, num_layers), target), loss)
        self.sigma, self.beta = float(sigma), float(beta)
        #: the reference process: OU with rate beta whose invariant law is N(0, sigma^2 I)
        self.reference = OrnsteinUhlenbeck(theta=self.beta, sigma=self.sigma * (2.0 * self.beta) ** 0.5, T=float(T))

    def coefficient_tables(self) -> dict[str, torch.Tensor]:
        # exact OU transitions over each step: ratio sqrt(1 - alpha_k), std sigma sqrt(alpha_k)
        ratio, std = self.reference.transition_coefs(self.times[:-1], self.times[1:])
        return {
            "t_norm": self.times / self.T,
            "a": ratio,
            "std": std,
            "gain": 2.0 * self.sigma**2 * (1.0 - ratio),  # 2 sigma^2 (1 - sqrt(1 - alpha_k))
            "sigma": torch.tensor(self.sigma, dtype=torch.float64),
        }

    def init_sample(self, num_samples: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sigma * randn((num_samples, self.dim), generator=generator, dtype=like.dtype, device=like.device)

    def init_log_weight(self, y0: torch.Tensor) -> torch.Tensor:
        return y0.new_zeros(y0.shape[:-1])  # p_0 equals the reference's initial law

    def reference_kernel(self, k: int, y: torch.Tensor, tab: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the exact OU transition ``ref_k(. | y_k)``."""
        return tab["a"][k] * y, tab["std"][k]

    def model_kernel(self, k, y, tab):
        mean_ref, std = self.reference_kernel(k, y, tab)
        return mean_ref + tab["gain"][k] * self.control(k, y), std

    def evaluate(self, k, y, ctx):
        return self.control_in(k, y, ctx)

    def step(self, k, y, f, noise, ctx, detach):
        # the fused form of the default step: exact OU move plus the control's shift
        y_next, inc = controlled_gaussian_step(ctx["a"][k] * y, ctx["gain"][k] * f, ctx["std"][k], noise, detach)
        return y_next, inc, (self.evaluate(k + 1, y_next, ctx) if k + 1 < self.num_steps else None)

    def target_kernel_log_prob(self, k, y, y_next, tab):
        mean_ref, std = self.reference_kernel(k, y, tab)
        return isotropic_normal_log_prob(y_next, mean_ref, std)

    def target_kernel_sample(self, k, y_next, tab, generator=None):
        # the OU transition is reversible w.r.t. N(0, sigma^2 I): the backward kernel is the same
        mean_ref, std = self.reference_kernel(k, y_next, tab)
        return mean_ref + std * randn_like(y_next, generator)

    def terminal_log_weight(self, yK, log_gamma):
        return log_gamma - isotropic_normal_log_prob(yK, None, self.tables_like(yK)["sigma"])

    def marginal_variance(self) -> float:
        """Reference marginal variance per coordinate (``sigma^2`` at every step)."""
        return self.sigma**2
