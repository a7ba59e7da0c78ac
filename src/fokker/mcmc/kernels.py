"""Many-chain MCMC kernels: ULA, MALA and HMC, vectorized over ``(chains, dim)``.

Functional core shared by every kernel::

    kernel = fokker.mcmc.HMC(target, step_size=0.1, num_steps=10)
    state = kernel.init(x)                 # x: (chains, dim) -> State(x, log_prob, grad)
    state, info = kernel.step(state)       # one transition of every chain

``info`` holds per-chain ``accept_prob`` (the Metropolis-Hastings acceptance
probability ``min(1, r)``, 1 for ULA), ``accepted``, ``energy_error`` and
``divergent`` flags.  A proposal whose log density or gradient is not finite
is rejected (``accept_prob = 0``).  The step size may be a scalar or a
per-chain ``(chains,)`` tensor.  ``S`` below is the inverse mass matrix
(:class:`fokker.mcmc.metric.Metric`), identity by default.

* **ULA** (unadjusted Langevin; seed 004 "Sampling strategy")::

      x' = x + eps S grad log pi(x) + sqrt(2 eps) S^{1/2} z,   z ~ N(0, I)

  Not exact: its stationary law differs from ``pi`` by O(eps).
* **MALA** (Roberts & Tweedie 1996): the ULA proposal ``y`` accepted with
  probability ``min(1, pi(y) q(x|y) / (pi(x) q(y|x)))`` where
  ``log q(y|x) = -|y - x - eps S grad log pi(x)|^2_{S^{-1}} / (4 eps) + const``.
* **HMC** (Neal 2011, Sec. 5.3.3): momentum ``p ~ N(0, S^{-1})``, ``L`` leapfrog
  steps of the Hamiltonian ``H = -log pi(x) + p^T S p / 2``, accepted with
  probability ``min(1, exp(H(x, p) - H(x', p')))``.  The number of steps is
  fixed (``num_steps``) or ``ceil(trajectory_length / eps)`` with the length
  jittered uniformly in ``[0.5, 1.5] * trajectory_length`` each iteration (the
  same for all chains; jitter independent of the state keeps detailed balance).

All kernels leave ``pi`` invariant except ULA.  Vectorized NUTS is not provided:
the per-chain tree doubling makes chains wait for the longest trajectory in
the batch; jittered HMC with many chains and adapted metric is the vectorized
workhorse (see ``docs/mcmc.md`` for the measured figures).
"""

from __future__ import annotations

import math
import random
from typing import Callable, NamedTuple

import torch

from ..errors import ParameterError
from ..targets.base import Target, as_target
from .metric import Metric

__all__ = ["State", "StepInfo", "Kernel", "ULA", "MALA", "HMC", "leapfrog"]


class State(NamedTuple):
    """Positions ``x`` ``(chains, dim)``, ``log_prob`` ``(chains,)`` and ``grad`` ``(chains, dim)``."""

    x: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor


class StepInfo(NamedTuple):
    """Per-chain diagnostics of one transition (all ``(chains,)``)."""

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    energy_error: torch.Tensor
    divergent: torch.Tensor
    num_steps: int


def log_prob_and_grad(target: Target, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log pi(x), grad log pi(x))`` without input checks, detached.

    Targets overriding ``_score`` (analytic scores) are evaluated in two cheap
    calls; the others in one forward/backward autograd pass.
    """
    if target.has_analytic_score:
        with torch.no_grad():
            return target.log_prob_unchecked(x), target.score_unchecked(x)
    return target.log_prob_and_score(x)


def _check_step_size(step_size: float | torch.Tensor | None, allow_none: bool) -> None:
    if step_size is None:
        if not allow_none:
            raise ParameterError("step_size must be given for this kernel (a positive number)")
        return
    if isinstance(step_size, torch.Tensor):
        if not bool(torch.isfinite(step_size).all()) or not bool((step_size > 0).all()):
            raise ParameterError(f"step_size must be > 0 and finite; got {step_size}")
        return
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not math.isfinite(step_size) or step_size <= 0:
        raise ParameterError(f"step_size must be > 0 and finite; got {step_size!r}")


class Kernel:
    """Base class: a Markov kernel on ``(chains, dim)`` bound to a target.

    Args:
        target: a :class:`~fokker.targets.Target` or a ``log_prob`` callable
            (then ``dim`` is needed), or ``None`` to bind later with :meth:`bind`
            (``fokker.mcmc.sample`` does that).
        step_size: ``eps > 0`` (float or per-chain tensor); ``None`` lets
            ``sample`` pick and adapt it.
        metric: ``"diag"`` or ``"dense"``: shape of the inverse mass matrix
            adapted during warm-up, or a :class:`Metric` / tensor to fix it.
        target_accept: acceptance target for dual averaging.
        adapt_step_size, adapt_metric: whether ``sample`` adapts them in warm-up.
    """

    target_accept_default = 0.8
    metropolis = True

    def __init__(
        self,
        target: Target | Callable | None = None,
        step_size: float | torch.Tensor | None = None,
        metric: str | Metric | torch.Tensor = "diag",
        target_accept: float | None = None,
        adapt_step_size: bool = True,
        adapt_metric: bool = True,
        dim: int | None = None,
    ) -> None:
        _check_step_size(step_size, allow_none=True)
        if isinstance(metric, str) and metric not in ("diag", "dense"):
            raise ParameterError(f"metric must be 'diag', 'dense', a Metric or an inverse-mass tensor; got {metric!r}")
        ta = self.target_accept_default if target_accept is None else target_accept
        if not (0.0 < ta < 1.0):
            raise ParameterError(f"target_accept must lie in (0, 1); got {ta!r}")
        self.target = None if target is None else as_target(target, dim)
        self._eps_host: float | None = None
        self.step_size = step_size
        self.target_accept = ta
        self.adapt_step_size = adapt_step_size and self.metropolis
        self.adapt_metric = adapt_metric and isinstance(metric, str)
        self._metric_spec = metric
        self.metric: Metric | None = metric if isinstance(metric, Metric) else (
            Metric(metric) if isinstance(metric, torch.Tensor) else None
        )
        self.dense = (metric == "dense") if isinstance(metric, str) else self.metric.dense  # type: ignore[union-attr]

    @property
    def step_size(self) -> float | torch.Tensor | None:
        """The step size ``eps`` (float, scalar tensor or per-chain ``(chains,)`` tensor)."""
        return self._step_size

    @step_size.setter
    def step_size(self, value: float | torch.Tensor | None) -> None:
        _check_step_size(value, allow_none=True)
        self._step_size = value
        self._eps_host = None

    # ------------------------------------------------------------------ set-up
    def bind(self, target: Target | Callable, dim: int | None = None) -> "Kernel":
        """Attach the target (returns ``self``)."""
        self.target = as_target(target, dim)
        return self

    def _require_target(self) -> Target:
        if self.target is None:
            raise ParameterError(f"{type(self).__name__} has no target; pass one or call .bind(target)")
        return self.target

    def _metric_for(self, x: torch.Tensor) -> Metric:
        if self.metric is None or self.metric.inv_mass.device != x.device or self.metric.inv_mass.dtype != x.dtype:
            if self.metric is None:
                self.metric = Metric.identity(x.shape[-1], self.dense, x)
            else:
                self.metric = Metric(self.metric.inv_mass.to(x))
        return self.metric

    def _eps(self, x: torch.Tensor) -> torch.Tensor:
        """Step size as a tensor broadcastable against ``(chains,)``."""
        if self.step_size is None:
            raise ParameterError(f"{type(self).__name__}.step_size is None; set it or run fokker.mcmc.sample")
        return torch.as_tensor(self.step_size, dtype=x.dtype, device=x.device)

    def log_prob_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi(x), grad log pi(x))``, unchecked, for ``(chains, dim)``.

        Uses the target's analytic score when it has one, else one autograd pass.
        """
        return log_prob_and_grad(self._require_target(), x)

    def init(self, x: torch.Tensor) -> State:
        """Initial :class:`State` at ``x`` ``(chains, dim)`` (no checks: ``sample`` validates)."""
        lp, g = self.log_prob_and_grad(x)
        return State(x.detach(), lp.detach(), g.detach())

    def step(self, state: State) -> tuple[State, StepInfo]:
        raise NotImplementedError

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _mh(
        state: State, prop: State, log_ratio: torch.Tensor, n: int, energy: bool = False
    ) -> tuple[State, StepInfo]:
        """Accept ``prop`` per chain with probability ``min(1, exp(log_ratio))`` (NaN -> reject)."""
        finite = torch.isfinite(log_ratio) & torch.isfinite(prop.grad).all(-1)
        log_ratio = torch.where(finite, log_ratio, torch.full_like(log_ratio, -math.inf))
        accept_prob = log_ratio.clamp(max=0.0).exp()
        u = torch.rand_like(accept_prob)
        accepted = u < accept_prob
        a2 = accepted.unsqueeze(-1)
        new = State(
            torch.where(a2, prop.x, state.x),
            torch.where(accepted, prop.log_prob, state.log_prob),
            torch.where(a2, prop.grad, state.grad),
        )
        energy_error = torch.where(finite, -log_ratio, torch.full_like(log_ratio, math.inf))
        divergent = ~finite | (energy_error > 1000.0) if energy else ~finite
        return new, StepInfo(accept_prob, accepted, energy_error, divergent, n)

    def __repr__(self) -> str:
        eps = self.step_size if not isinstance(self.step_size, torch.Tensor) or self.step_size.numel() > 1 else float(self.step_size)
        return f"{type(self).__name__}(step_size={eps}, metric={'dense' if self.dense else 'diag'})"


class ULA(Kernel):
    """Unadjusted Langevin algorithm ``x' = x + eps S grad log pi(x) + sqrt(2 eps) S^{1/2} z``.

    Biased (no accept/reject): the chain targets a perturbation of ``pi`` of
    order ``eps``.  ``step_size`` is required; nothing is adapted by default.
    """

    metropolis = False

    def __init__(self, target=None, step_size: float | torch.Tensor | None = None, metric="diag", adapt_metric: bool = False, dim=None) -> None:
        _check_step_size(step_size, allow_none=False)
        super().__init__(target, step_size, metric, 0.5, adapt_step_size=False, adapt_metric=adapt_metric, dim=dim)

    def step(self, state: State) -> tuple[State, StepInfo]:
        x = state.x
        eps = self._eps(x)
        e = eps.unsqueeze(-1) if eps.dim() else eps
        m = self._metric_for(x)
        y = x + e * m.velocity(state.grad) + (2 * e).sqrt() * m.sqrt_times(torch.randn_like(x))
        lp, g = self.log_prob_and_grad(y)
        ones = torch.ones_like(lp)
        finite = torch.isfinite(lp)
        return State(y, lp, g), StepInfo(ones, torch.ones_like(finite), torch.zeros_like(lp), ~finite, 1)


class MALA(Kernel):
    """Metropolis-adjusted Langevin algorithm (exact; default acceptance target 0.574)."""

    target_accept_default = 0.574

    def step(self, state: State) -> tuple[State, StepInfo]:
        x = state.x
        eps = self._eps(x)
        e = eps.unsqueeze(-1) if eps.dim() else eps
        m = self._metric_for(x)
        mean_x = x + e * m.velocity(state.grad)
        y = mean_x + (2 * e).sqrt() * m.sqrt_times(torch.randn_like(x))
        lp_y, g_y = self.log_prob_and_grad(y)
        mean_y = y + e * m.velocity(g_y)
        log_q_y_given_x = -m.inv_quad(y - mean_x) / (4 * eps)
        log_q_x_given_y = -m.inv_quad(x - mean_y) / (4 * eps)
        log_ratio = lp_y - state.log_prob + log_q_x_given_y - log_q_y_given_x
        return self._mh(state, State(y, lp_y, g_y), log_ratio, 1)


def leapfrog(
    x: torch.Tensor,
    p: torch.Tensor,
    grad: torch.Tensor,
    eps: torch.Tensor,
    num_steps: int,
    metric: Metric,
    log_prob_and_grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_steps`` leapfrog steps of ``H = -log pi(x) + p^T S p / 2`` (Neal 2011, eqs. 5.18-5.20).

    ``eps`` is a scalar tensor or ``(chains, 1)``.  Returns ``(x, p, log_prob, grad)`` at the end.
    """
    lp = None
    p = p + 0.5 * eps * grad
    for i in range(num_steps):
        x = x + eps * metric.velocity(p)
        lp, grad = log_prob_and_grad(x)
        if i < num_steps - 1:
            p = p + eps * grad
    p = p + 0.5 * eps * grad
    return x, p, lp, grad  # type: ignore[return-value]


class HMC(Kernel):
    """Hamiltonian Monte Carlo with leapfrog integration.

    Args (beyond :class:`Kernel`):
        num_steps: fixed number of leapfrog steps ``L``; if ``None`` it is
            ``ceil(trajectory_length * u / eps)`` with ``u ~ U[0.5, 1.5]`` drawn
            each iteration (shared by the chains), capped at ``max_num_steps``.
        trajectory_length: integration time ``L eps`` (default 2, in the
            units of the adapted metric, where the target is roughly whitened).
        jitter: randomize the trajectory length as above (only with ``num_steps=None``).
    """

    def __init__(
        self,
        target=None,
        step_size: float | torch.Tensor | None = None,
        num_steps: int | None = None,
        trajectory_length: float = 2.0,
        metric: str | Metric | torch.Tensor = "diag",
        target_accept: float | None = None,
        adapt_step_size: bool = True,
        adapt_metric: bool = True,
        jitter: bool = True,
        max_num_steps: int = 256,
        dim: int | None = None,
    ) -> None:
        super().__init__(target, step_size, metric, target_accept, adapt_step_size, adapt_metric, dim)
        if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
            raise ParameterError(f"num_steps must be an integer >= 1; got {num_steps!r}")
        if not (isinstance(trajectory_length, (int, float)) and trajectory_length > 0):
            raise ParameterError(f"trajectory_length must be a positive number; got {trajectory_length!r}")
        self.num_steps = num_steps
        self.trajectory_length = float(trajectory_length)
        self.jitter = jitter
        self.max_num_steps = max_num_steps
        self._step_cap: int | None = None  # set by ``sample`` while the metric is still the identity
        self._rng = random.Random(0)

    def seed(self, seed: int) -> None:
        """Seed the host RNG that jitters the trajectory length."""
        self._rng.seed(seed)

    def _num_steps(self, eps: torch.Tensor) -> int:
        if self.num_steps is not None:
            return self.num_steps
        if self._eps_host is None:
            self._eps_host = float(eps.min())  # one host sync per step-size change
        u = self._rng.uniform(0.5, 1.5) if self.jitter else 1.0
        cap = self.max_num_steps if self._step_cap is None else min(self._step_cap, self.max_num_steps)
        return max(1, min(cap, math.ceil(self.trajectory_length * u / self._eps_host)))

    def step(self, state: State) -> tuple[State, StepInfo]:
        x = state.x
        eps = self._eps(x)
        n = self._num_steps(eps)
        e = eps.unsqueeze(-1) if eps.dim() else eps
        m = self._metric_for(x)
        p0 = m.sample_momentum(x)
        x1, p1, lp1, g1 = leapfrog(x, p0, state.grad, e, n, m, self.log_prob_and_grad)
        log_ratio = (lp1 - m.kinetic(p1)) - (state.log_prob - m.kinetic(p0))
        return self._mh(state, State(x1, lp1, g1), log_ratio, n, energy=True)
