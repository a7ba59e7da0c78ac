"""Annealed Langevin samplers with a learned drift: CMCD and MCD.

Both move particles from a base ``p_0`` to ``pi = gamma / Z`` along the geometric annealing path

.. math:: \\log\\pi_k(x) = (1 - \\beta_k) \\log p_0(x) + \\beta_k \\log\\gamma(x), \\qquad 0 = \\beta_0 < \\dots < \\beta_K = 1,

with Langevin kernels of step ``h_k`` whose drift is the path's score plus a learned correction
``u_k(x) = f_theta(x, t_k, grad log gamma(x))``:

.. math::

    F_k(y_{k+1} | y_k) &= N\\big(y_k + h_k[\\nabla\\log\\pi_k(y_k) + c_F\\, u_k(y_k)],\\; 2 h_k I\\big),

    B_k(y_k | y_{k+1}) &= N\\big(y_{k+1} + h_k[\\nabla\\log\\pi_{k+1}(y_{k+1}) + c_B\\, u_{k+1}(y_{k+1})],\\; 2 h_k I\\big),

and the exact discrete-time importance weight (``E_F[w] = Z`` for every step size, schedule and
network)

.. math:: \\log w = \\log\\gamma(y_K) - \\log p_0(y_0) + \\sum_{k<K} \\big[\\log B_k(y_k|y_{k+1}) - \\log F_k(y_{k+1}|y_k)\\big].

* **CMCD** (``c_F = 1, c_B = -1``; Vargas, Padhy, Blessing & Nüsken 2024, *Transport meets
  variational inference: controlled Monte Carlo diffusions*, ICLR, sec. 3 and the discretization
  of sec. 4): forward and backward drifts differ by ``2 grad log pi_k`` and share the control, so
  with ``u`` a transport field of the path (continuity equation
  ``d pi_t / dt + div(pi_t u_t) = 0``) the forward chain has the path's marginals as ``h -> 0``.
* **MCD** (``c_F = 0, c_B = 1``; Doucet, Grathwohl, Matthews & Strathmann 2022, *Score-based
  diffusion meets annealed importance sampling*, NeurIPS, sec. 3): unadjusted Langevin forward
  (ULA) and a learned backward kernel whose drift corrects the path's score towards the score
  of the forward marginals.

With ``u = 0`` both are unadjusted-Langevin AIS (Thin et al. 2021; Wu, Köhler & Noé 2020), so
training starts from an exact, if noisy, AIS estimate.  Learned besides the network (each
can be frozen): the mean and log-scale of a diagonal Gaussian base, the schedule ``beta_k``
(cumulative softplus increments, so it stays increasing from 0 to 1) and the per-step log step
sizes.  Cost: ``K + 1`` scores and one log density per path.

Losses: ``"lv"`` (log-variance on detached paths; the CMCD paper's best variant, no second
derivatives of ``log gamma``) or ``"kl"`` (reparameterized reverse KL: the drift contains
``grad log gamma``, so the gradient needs Hessian-vector products of the target).

Underdamped (momentum) variants (UHA, LDVI: Geffner & Domke 2021, 2023) double the state and are
not provided; neither is the sequential variant with resampling between the learned kernels
(SCLD, Chen et al. 2025).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._args import check_int, check_positive
from .._gaussian import isotropic_normal_log_prob
from .._random import randn, randn_like
from ..errors import ParameterError, ShapeError
from ..sde import time_grid
from ..targets.base import Target, as_target
from .base import DiffusionSampler, net_like_target
from .networks import PISGradNet

__all__ = ["AnnealedLangevinSampler", "CMCD", "MCD"]

_LOG_SCALE_BOUND = 5.0  # learned log step-size multipliers stay within exp(+-5)


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class AnnealedLangevinSampler(DiffusionSampler):
    """The machinery shared by :class:`CMCD` and :class:`MCD` (see the module docstring).

    Args:
        target: the unnormalized target ``gamma``.
        num_steps: ``K`` (annealing steps; ``K + 1`` score evaluations per path).
        step_size: initial mean Langevin step ``h`` (each ``h_k = step_size K (t_{k+1} - t_k)``
            on the ``spacing`` grid of :func:`fokker.sde.time_grid`, times a learned factor).
        sigma: initial scale of the default base ``N(0, sigma^2 I)``.
        base: a fixed base instead of the learned diagonal Gaussian: a torch distribution with
            event shape ``(dim,)`` (``log_prob``; ``rsample`` or ``sample``), e.g. a model's prior.
        schedule: initial ``beta`` ``(K + 1,)`` increasing from 0 to 1 (default: ``beta_k = t_k``).
        learn_base, learn_schedule, learn_step_size: which of these are trained.
        loss: ``"lv"`` or ``"kl"``.
        net: the drift correction ``u(x, t/T, grad log gamma(x))``; default :class:`PISGradNet`
            (zero at initialization).
    """

    #: coefficients of the learned drift in the forward and backward kernels
    forward_control = 1.0
    backward_control = -1.0

    def __init__(
        self,
        target: Target,
        num_steps: int = 128,
        step_size: float = 0.05,
        sigma: float = 1.0,
        base: torch.distributions.Distribution | None = None,
        schedule: torch.Tensor | None = None,
        spacing: str = "uniform",
        learn_base: bool = True,
        learn_schedule: bool = True,
        learn_step_size: bool = True,
        loss: str = "lv",
        net: nn.Module | None = None,
        width: int = 64,
        num_layers: int = 2,
    ) -> None:
        check_int(num_steps, "num_steps")
        check_positive(step_size, "step_size")
        check_positive(sigma, "sigma")
        target = as_target(target)
        times = time_grid(num_steps, 0.0, 1.0, spacing)
        if net is None:
            net = net_like_target(PISGradNet(target.dim, width, num_layers), target)
        super().__init__(target, times, net, loss)
        ref = target.reference_tensor()
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        device = ref.device if ref is not None else torch.device("cpu")
        self.step_size, self.sigma = float(step_size), float(sigma)
        self.fixed_base = self._check_base(base, target)
        self.base_loc = nn.Parameter(torch.zeros(target.dim, dtype=dtype, device=device), requires_grad=learn_base and base is None)
        self.base_log_scale = nn.Parameter(
            torch.full((target.dim,), math.log(sigma), dtype=dtype, device=device), requires_grad=learn_base and base is None
        )
        beta0 = self.times if schedule is None else self._check_schedule(schedule, num_steps)
        inc = torch.diff(beta0).clamp_min(1e-12)
        # softplus increments, normalized: beta stays increasing from exactly 0 to exactly 1
        self.schedule_logits = nn.Parameter(_inverse_softplus(inc / inc.mean()).to(dtype=dtype, device=device),
                                            requires_grad=learn_schedule)
        self.log_step_scale = nn.Parameter(torch.zeros(num_steps, dtype=dtype, device=device), requires_grad=learn_step_size)

    # ------------------------------------------------------------- arguments
    @staticmethod
    def _check_base(base: Any, target: Target) -> torch.distributions.Distribution | None:
        if base is None:
            return None
        if not hasattr(base, "log_prob") or not (hasattr(base, "rsample") or hasattr(base, "sample")):
            raise ParameterError(f"base must be a torch distribution with log_prob and sample; got {type(base).__name__}")
        shape = tuple(getattr(base, "event_shape", ()))
        if shape != (target.dim,) or tuple(getattr(base, "batch_shape", ())) != ():
            raise ShapeError(
                f"base must be one distribution over R^{target.dim} (event_shape ({target.dim},), batch_shape ()), the "
                f"space of target {target.name!r}; got event_shape {shape}, batch_shape {tuple(getattr(base, 'batch_shape', ()))}"
            )
        return base

    @staticmethod
    def _check_schedule(schedule: torch.Tensor, num_steps: int) -> torch.Tensor:
        b = torch.as_tensor(schedule, dtype=torch.float64).cpu()
        if b.shape != (num_steps + 1,):
            raise ShapeError(f"schedule must have shape ({num_steps + 1},) (num_steps + 1 values of beta); got {tuple(b.shape)}")
        if float(b[0]) != 0.0 or float(b[-1]) != 1.0 or not bool((b[1:] > b[:-1]).all()):
            raise ParameterError("schedule must increase strictly from 0 to 1")
        return b

    # ------------------------------------------------------------- the path
    def betas(self) -> torch.Tensor:
        """The annealing schedule ``(K + 1,)`` from 0 to 1 (differentiable in the schedule logits)."""
        inc = F.softplus(self.schedule_logits)
        cum = torch.cumsum(inc, 0)
        return torch.cat([cum.new_zeros(1), cum / cum[-1]])

    def step_sizes(self) -> torch.Tensor:
        """The Langevin steps ``h_k`` ``(K,)``."""
        grid = torch.diff(self.times).to(self.log_step_scale) * (self.step_size * self.num_steps)
        return grid * torch.exp(self.log_step_scale.clamp(-_LOG_SCALE_BOUND, _LOG_SCALE_BOUND))

    def base_log_prob_and_score(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log p_0(y)`` ``(n,)`` and ``grad log p_0(y)`` ``(n, dim)``."""
        if self.fixed_base is None:
            scale = torch.exp(self.base_log_scale)
            z = (y - self.base_loc) / scale
            lp = -0.5 * (z * z).sum(-1) - self.base_log_scale.sum() - 0.5 * self.dim * math.log(2 * math.pi)
            return lp, -z / scale
        with torch.enable_grad():
            yg = y if y.requires_grad else y.detach().requires_grad_(True)
            lp = self.fixed_base.log_prob(yg)
            (g,) = torch.autograd.grad(lp.sum(), yg, create_graph=y.requires_grad)
        return lp, g

    def coefficient_tables(self) -> dict[str, torch.Tensor]:
        return {"t_norm": self.times}

    def rollout_context(self, like: torch.Tensor) -> dict[str, Any]:
        ctx = super().rollout_context(like)
        beta = self.betas().to(like)
        h = self.step_sizes().to(like)
        ctx.update(beta=beta.unbind(0), h=h.unbind(0), noise_std=torch.sqrt(2 * h).unbind(0))
        return ctx

    def path_score(self, k: int, y: torch.Tensor, ctx: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grad log pi_k(y), grad log gamma(y))``; the first is on the graph of ``y`` (KL loss)."""
        beta = ctx["beta"][k]
        target_score = self.target.score_unchecked(y)
        _, base_score = self.base_log_prob_and_score(y)
        return (1 - beta) * base_score + beta * target_score, target_score

    # ---------------------------------------------------------------- hooks
    def evaluate(self, k: int, y: torch.Tensor, ctx: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward drift, backward drift)`` at ``y_k``: ``grad log pi_k + c u_k`` for ``c = c_F, c_B``."""
        score, target_score = self.path_score(k, y, ctx)
        u = self.control_in(k, y, ctx, score=target_score)
        return score + self.forward_control * u, score + self.backward_control * u

    def step(self, k, y, ev, noise, ctx, detach):
        h, std = ctx["h"][k], ctx["noise_std"][k]
        mean = y + h * ev[0]
        y_next = mean + std * noise
        if detach:
            y_next = y_next.detach()
            noise = (y_next - mean) / std
        ev_next = self.evaluate(k + 1, y_next, ctx)
        r = (y - y_next - h * ev_next[1]) / std
        # log B_k - log F_k: the two kernels share the variance 2 h_k, so the normalizers cancel
        inc = 0.5 * ((noise * noise).sum(-1) - (r * r).sum(-1))
        return y_next, inc, ev_next

    def init_sample(self, num_samples: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.fixed_base is None:
            eps = randn((num_samples, self.dim), generator=generator, dtype=like.dtype, device=like.device)
            return self.base_loc + torch.exp(self.base_log_scale) * eps
        from .._random import rng_scope

        with rng_scope(generator, devices=(like.device,)):
            b = self.fixed_base
            x = b.rsample((num_samples,)) if getattr(b, "has_rsample", False) else b.sample((num_samples,))
        return x.to(like)

    def init_log_weight(self, y0: torch.Tensor) -> torch.Tensor:
        return -self.base_log_prob_and_score(y0)[0]

    def terminal_log_weight(self, yK: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
        return log_gamma

    # the kernel hooks (generic machinery: EUBO paths, tests); the rollout uses the fused step
    def _drifts(self, k: int, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.evaluate(k, y, self.rollout_context(y))

    def model_kernel(self, k, y, tab):
        h = self.step_sizes()[k].to(y)
        return y + h * self._drifts(k, y)[0], torch.sqrt(2 * h)

    def target_kernel_log_prob(self, k, y, y_next, tab):
        h = self.step_sizes()[k].to(y)
        return isotropic_normal_log_prob(y, y_next + h * self._drifts(k + 1, y_next)[1], torch.sqrt(2 * h))

    def target_kernel_sample(self, k, y_next, tab, generator=None):
        h = self.step_sizes()[k].to(y_next)
        return y_next + h * self._drifts(k + 1, y_next)[1] + torch.sqrt(2 * h) * randn_like(y_next, generator)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", step_size={self.step_size:g}, base={'learned' if self.fixed_base is None else 'fixed'}"


class CMCD(AnnealedLangevinSampler):
    """Controlled Monte Carlo Diffusion (Vargas, Padhy, Blessing & Nüsken 2024, *Transport meets
    variational inference: controlled Monte Carlo diffusions*, ICLR, sec. 3-4): annealed Langevin
    kernels whose forward and backward drifts ``grad log pi_k +- u_k`` share a learned control.

    See the module docstring for the kernels and the exact weight, and
    :class:`AnnealedLangevinSampler` for the arguments.  Defaults: 128 steps, log-variance loss,
    learned base, schedule and step sizes.
    """

    forward_control = 1.0
    backward_control = -1.0


class MCD(AnnealedLangevinSampler):
    """Monte Carlo Diffusion (Doucet, Grathwohl, Matthews & Strathmann 2022, *Score-based
    diffusion meets annealed importance sampling*, NeurIPS, sec. 3): unadjusted Langevin forward
    kernels on the annealing path and learned backward kernels with drift ``grad log pi_k + u_k``.

    See the module docstring and :class:`AnnealedLangevinSampler` for the arguments.
    """

    forward_control = 0.0
    backward_control = 1.0
