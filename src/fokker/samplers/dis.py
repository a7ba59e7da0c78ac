"""Time-reversed Diffusion Sampler (Berner, Richter & Ullrich, "An optimal control
perspective on diffusion-based generative modeling", TMLR 2024).

Noising process (forward time ``tau``): the VP SDE started at the target,
``dX = -1/2 beta(tau) X dtau + sigma sqrt(beta(tau)) dW``, ``X_0 ~ pi``, with the
linear schedule ``beta(tau) = beta_min + (beta_max - beta_min) tau / T``; its law
at ``T`` is close to ``N(0, sigma^2 I)``, the sampler's initial law.  The sampler
learns the score of the noised target and runs the time reversal (generative time
``s = T - tau``, Euler-Maruyama; Berner, Richter & Ullrich 2024, sec. 3; seed 001 eqs. 72-73):

.. math:: y_{k+1} = y_k + h_k[\\tfrac12\\beta_k y_k + \\sigma^2\\beta_k s_\\theta(y_k, s_k)]
          + \\sigma\\sqrt{\\beta_k h_k}\\,\\varepsilon_k, \\qquad \\beta_k = \\beta(T - s_k).

The target path measure is ``pi(y_K)`` times the Euler-Maruyama noising kernels
``B_k(y_k | y_{k+1}) = N(y_k; (1 - h_k beta'_k / 2) y_{k+1}, sigma^2 beta'_k h_k I)``,
``beta'_k = beta(T - s_{k+1})``, so

.. math:: \\log w = \\log\\gamma(y_K) - \\log N(y_0; 0, \\sigma^2 I)
          + \\sum_k [\\log B_k(y_k|y_{k+1}) - \\log q_k(y_{k+1}|y_k)]

is an exact discrete-time weight (``E w = Z``) even though ``N(0, sigma^2)`` is
only approximately the noised target.

Network: PIS-grad with the interpolated score feature
``lambda_k grad log gamma(y) + (1 - lambda_k) grad log N(y; 0, sigma^2)``,
``lambda_k = s_k / T`` (the "lerp" model of ``sde_sampler``), gain initialized to 1.

Defaults: ``sde_sampler``'s DIS configuration (VP with ``beta`` from 0.1 to 10,
``T = 1``, ``sigma = 1``), 128 uniform steps.
"""

from __future__ import annotations

import torch
from torch import nn

from .._args import check_positive
from .._gaussian import isotropic_normal_log_prob
from .._random import randn, randn_like
from ..errors import ParameterError
from ..sde import VPSDE, time_grid
from ..targets.base import Target, as_target
from .base import DiffusionSampler, net_like_target
from .networks import PISGradNet

__all__ = ["DIS"]


class DIS(DiffusionSampler):
    """Time-reversed diffusion sampler (Berner, Richter & Ullrich 2024, *An optimal control
    perspective on diffusion-based generative modeling*, TMLR, sec. 3), trained with the reverse
    KL or the log-variance loss of Richter & Berner (2024).

    See the module docstring for the discrete chain and its exact importance weight.

    Args:
        target: the unnormalized target.
        num_steps, T, spacing: time discretization in generative time (:func:`fokker.sde.time_grid`).
        beta_min, beta_max: linear VP schedule of the noising process.
        sigma: std of the prior ``N(0, sigma^2 I)`` (and scale of the VP noise).
        loss: ``"kl"`` or ``"lv"`` (``sde_sampler`` default).
        net: score network ``net(x, s/T, feature)``; default :class:`PISGradNet` with gain 1.
    """

    def __init__(
        self,
        target: Target,
        num_steps: int = 128,
        T: float = 1.0,
        beta_min: float = 0.1,
        beta_max: float = 10.0,
        sigma: float = 1.0,
        spacing: str = "uniform",
        loss: str = "kl",
        net: nn.Module | None = None,
        width: int = 64,
        num_layers: int = 2,
    ) -> None:
        check_positive(beta_min, "beta_min")
        check_positive(beta_max, "beta_max")
        check_positive(sigma, "sigma")
        if beta_max < beta_min:
            raise ParameterError(f"beta_max must be >= beta_min={beta_min}; got {beta_max}")
        target = as_target(target)
        times = time_grid(num_steps, 0.0, T, spacing)
        if net is None:
            net = net_like_target(PISGradNet(target.dim, width, num_layers, feature_bias_init=1.0), target)
        super().__init__(target, times, net, loss)
        self.beta_min, self.beta_max, self.sigma = float(beta_min), float(beta_max), float(sigma)
        #: the noising process (unit scale; the sampler scales its noise by sigma): VP with linear beta
        self.noising = VPSDE(beta_min=self.beta_min, beta_max=self.beta_max, T=float(T))

    def coefficient_tables(self) -> dict[str, torch.Tensor]:
        s = self.times
        h = torch.diff(s)
        beta = self.noising.coefficients(self.T - s).g2  # the VP rate beta(tau) = g(tau)^2
        b = beta[:-1]  # at the start of each generative step
        b_back = beta[1:]  # the forward EM step starts at tau = T - s_{k+1}
        s2 = self.sigma**2
        return {
            "t_norm": s / self.T,
            "h_half_beta": 0.5 * h * b,
            "h_beta_s2": h * b * s2,
            "std": self.sigma * (b * h).sqrt(),
            "back_a": 1.0 - 0.5 * h * b_back,
            "back_std": self.sigma * (b_back * h).sqrt(),
            "sigma": torch.tensor(self.sigma, dtype=torch.float64),
        }

    def feature(self, k: int, y: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        lam = self.tables_like(y)["t_norm"][k]
        return lam * score - (1.0 - lam) * y / self.sigma**2

    def init_sample(self, num_samples: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sigma * randn((num_samples, self.dim), generator=generator, dtype=like.dtype, device=like.device)

    def init_log_weight(self, y0: torch.Tensor) -> torch.Tensor:
        return -isotropic_normal_log_prob(y0, None, self.tables_like(y0)["sigma"])

    def model_kernel(self, k, y, tab):
        mean = y + tab["h_half_beta"][k] * y + tab["h_beta_s2"][k] * self.control(k, y)
        return mean, tab["std"][k]

    def evaluate(self, k, y, ctx):
        return self.control_in(k, y, ctx)

    def step(self, k, y, f, noise, ctx, detach):
        # Euler-Maruyama both ways: the kernels' standard deviations differ, so no closed-form shortcut
        mean = y + ctx["h_half_beta"][k] * y + ctx["h_beta_s2"][k] * f
        std = ctx["std"][k]
        y_next = mean + std * noise
        if detach:
            y_next = y_next.detach()
        inc = isotropic_normal_log_prob(y, ctx["back_a"][k] * y_next, ctx["back_std"][k]) - isotropic_normal_log_prob(
            y_next, mean, std
        )
        return y_next, inc, (self.evaluate(k + 1, y_next, ctx) if k + 1 < self.num_steps else None)

    def target_kernel_log_prob(self, k, y, y_next, tab):
        return isotropic_normal_log_prob(y, tab["back_a"][k] * y_next, tab["back_std"][k])

    def target_kernel_sample(self, k, y_next, tab, generator=None):
        return tab["back_a"][k] * y_next + tab["back_std"][k] * randn_like(y_next, generator)

    def terminal_log_weight(self, yK, log_gamma):
        return log_gamma
