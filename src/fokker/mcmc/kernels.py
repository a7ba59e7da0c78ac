"""Many-chain MCMC kernels: ULA, MALA and HMC, vectorized over ``(chains, dim)``.

Functional core shared by every kernel::

    kernel = fokker.mcmc.HMC(target, step_size=0.1, num_steps=10, generator=g)
    state = kernel.init(x)                 # x: (chains, dim) -> State(x, log_prob, grad)
    state, info = kernel.step(state)       # one transition of every chain

``info`` (:class:`StepInfo`) holds per-chain statistics of the transition:
``accept_prob`` (the Metropolis-Hastings acceptance probability ``min(1, r)``,
1 for ULA), ``accepted``, ``energy_error``, ``divergent``, ``num_steps``
(gradient evaluations) and ``step_size``, plus kernel-specific ``extra``
statistics.  A proposal whose log density or gradient is not finite is
rejected (``accept_prob = 0``).  The step size may be a scalar or a per-chain
``(chains,)`` tensor.  ``S`` below is the inverse mass matrix
(:class:`fokker.mcmc.metric.Metric`), identity by default.  Random numbers are
drawn from ``kernel.generator`` (the global RNG when ``None``).

Warm-up protocol (what :func:`fokker.mcmc.sample` drives; Pyro's ``MCMCKernel``
``setup / sample / diagnostics`` split)::

    state = kernel.setup(target, x0, num_warmup, generator)  # bind, initial state, adapter
    for _ in range(num_warmup):
        state, info = kernel.warmup_step(state)             # transition + adaptation
    kernel.end_warmup()                                     # fix the adapted parameters
    state, info = kernel.step(state)                        # sampling transitions
    kernel.diagnostics()                                    # step size, inverse mass, warm-up counts

The adaptation itself lives in :class:`fokker.mcmc.adaptation.WindowedAdaptation`.
A new kernel (NUTS, ChEES-HMC, ...) subclasses :class:`Kernel`, implements
``step`` (with :meth:`Kernel.accept_reject` / :meth:`Kernel.step_info`) and
reports its own per-chain statistics (tree depth, energy, ...) in
``StepInfo.extra``; it may bring its own adapter (``adaptation=``, or override
:meth:`Kernel.default_adaptation`).  The driver needs no change.

* **ULA** (unadjusted Langevin; Roberts & Tweedie 1996, eq. 1.2; seed 004 "Sampling strategy")::

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

import copy
import math
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import torch

from .. import _random
from .._args import check_positive
from ..errors import NonFiniteError, ParameterError
from ..targets.base import Target, as_target
from .adaptation import Adaptation, ChEESAdaptation, WindowedAdaptation, halton
from .metric import Metric

__all__ = ["State", "StepInfo", "Kernel", "ULA", "MALA", "HMC", "ChEESHMC", "leapfrog", "langevin_move",
           "WARMUP_STEP_CAP"]

#: Leapfrog steps per HMC warm-up iteration while the metric is still the initial identity.
WARMUP_STEP_CAP = 32


class State(NamedTuple):
    """Positions ``x`` ``(chains, dim)``, ``log_prob`` ``(chains,)`` and ``grad`` ``(chains, dim)``."""

    x: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor


class StepInfo(NamedTuple):
    """Per-chain statistics of one transition: every field is a ``(chains,)`` tensor.

    ``num_steps`` counts gradient evaluations (leapfrog steps for HMC); ``extra`` holds
    kernel-specific statistics (e.g. a NUTS tree depth or the Hamiltonian) under their names.
    :meth:`stats` gives them all as one dict, which :func:`fokker.mcmc.sample` stores per draw.
    """

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    energy_error: torch.Tensor
    divergent: torch.Tensor
    num_steps: torch.Tensor
    step_size: torch.Tensor
    extra: Mapping[str, torch.Tensor] | None = None

    def stats(self) -> dict[str, torch.Tensor]:
        """``{name: (chains,) tensor}`` of every statistic, the ``extra`` ones included."""
        out = {name: getattr(self, name) for name in self._fields if name != "extra"}
        out.update(self.extra or {})
        return out


def log_prob_and_grad(target: Target, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log pi(x), grad log pi(x))`` without input checks, detached.

    Targets overriding ``_score`` (analytic scores) are evaluated in two cheap
    calls; the others in one forward/backward autograd pass.
    """
    if target.has_analytic_score:
        with torch.no_grad():
            return target.log_prob_unchecked(x), target.score_unchecked(x)
    return target.log_prob_and_score(x)


def langevin_move(
    x: torch.Tensor, drift: torch.Tensor, step_size: torch.Tensor | float, noise: torch.Tensor,
    noise_scale: float | None = None,
) -> torch.Tensor:
    """The Langevin step ``x + eps * drift + sqrt(2 eps) * noise`` (``noise_scale * noise`` when given).

    ``drift`` is ``S grad log pi(x)`` (a score for annealed Langevin) and ``noise`` a draw of
    ``N(0, S)``; ``eps`` broadcasts against ``x``.  The one Langevin update of the library:
    ULA, the MALA proposal, :func:`~fokker.mcmc.annealed_langevin` and
    :func:`fokker.ebm.langevin_chain` all take it from here.
    """
    if isinstance(step_size, torch.Tensor):
        scale = (2 * step_size).sqrt() if noise_scale is None else noise_scale
    else:
        scale = math.sqrt(2 * step_size) if noise_scale is None else noise_scale
    return x + step_size * drift + scale * noise


def _check_step_size(step_size: float | torch.Tensor | None, allow_none: bool) -> None:
    if step_size is None:
        if not allow_none:
            raise ParameterError("step_size must be given for this kernel (a positive number)")
        return
    if isinstance(step_size, torch.Tensor):
        if step_size.dim() > 1:
            raise ParameterError(f"step_size must be a scalar or a per-chain (chains,) tensor; got shape {tuple(step_size.shape)}")
        if not bool(torch.isfinite(step_size).all()) or not bool((step_size > 0).all()):
            raise ParameterError(f"step_size must be > 0 and finite; got {step_size}")
        return
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not math.isfinite(step_size) or step_size <= 0:
        raise ParameterError(f"step_size must be > 0 and finite; got {step_size!r}")


def _check_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
    return generator


class Kernel:
    """Base class: a Markov kernel on ``(chains, dim)`` bound to a target, with its own warm-up.

    The Metropolis-Hastings construction (Hastings 1970, eq. (4)) with the warm-up protocol of
    Pyro's ``MCMCKernel`` (Bingham et al. 2019) and Stan's adaptation (Hoffman & Gelman 2014).

    Args:
        target: a :class:`~fokker.targets.Target` or a ``log_prob`` callable
            (then ``dim`` is needed), or ``None`` to bind later with :meth:`bind`
            or :meth:`setup` (``fokker.mcmc.sample`` does that).
        step_size: ``eps > 0`` (float or per-chain tensor); ``None`` lets the
            warm-up pick and adapt it.
        metric: ``"diag"`` or ``"dense"``: shape of the inverse mass matrix
            adapted during warm-up, or a :class:`Metric` / tensor to fix it.
        target_accept: acceptance target for dual averaging.
        adapt_step_size, adapt_metric: whether the warm-up adapts them.
        adaptation: the warm-up adapter (default: a
            :class:`~fokker.mcmc.adaptation.WindowedAdaptation` built from the two flags);
            :meth:`setup` works on a fresh copy of it, kept in ``kernel.adaptation``.
        generator: the ``torch.Generator`` every random number is drawn from
            (``None``: the global RNG); :meth:`setup` replaces it.
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
        *,
        adaptation: Adaptation | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_step_size(step_size, allow_none=True)
        if isinstance(metric, str) and metric not in ("diag", "dense"):
            raise ParameterError(f"metric must be 'diag', 'dense', a Metric or an inverse-mass tensor; got {metric!r}")
        ta = self.target_accept_default if target_accept is None else target_accept
        if not (0.0 < ta < 1.0):
            raise ParameterError(f"target_accept must lie in (0, 1); got {ta!r}")
        self.target = None if target is None else as_target(target, dim)
        self._step_size: float | torch.Tensor | None = None
        self._eps_host: float | None = None
        self.set_step_size(step_size)
        self.target_accept = ta
        self.target_accept_given = target_accept is not None  # the warm-up may raise a default target only
        self.adapt_step_size = adapt_step_size and self.metropolis
        self.adapt_metric = adapt_metric and isinstance(metric, str)
        self.metric: Metric | None = metric if isinstance(metric, Metric) else (
            Metric(metric) if isinstance(metric, torch.Tensor) else None
        )
        self.dense = (metric == "dense") if isinstance(metric, str) else self.metric.dense  # type: ignore[union-attr]
        self._adaptation_config = adaptation
        self.adaptation: Adaptation | None = None  # the working adapter, built by setup()
        self.generator = _check_generator(generator)
        self._warming_up = False

    # ------------------------------------------------------------ parameters
    @property
    def step_size(self) -> float | torch.Tensor | None:
        """The step size ``eps`` (float, scalar tensor or per-chain ``(chains,)`` tensor)."""
        return self._step_size

    @step_size.setter
    def step_size(self, value: float | torch.Tensor | None) -> None:
        self.set_step_size(value)

    def set_step_size(self, value: float | torch.Tensor | None, check: bool = True) -> None:
        """Set ``eps``; ``check=False`` skips the value check (a host sync for tensors), as adaptation does."""
        if check:
            _check_step_size(value, allow_none=True)
        self._step_size = value
        self._eps_host = None
        self._eps_tensor: torch.Tensor | None = None

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
        """Step size as a tensor broadcastable against ``(chains,)`` (cached: no host-to-device copy per step)."""
        if self.step_size is None:
            raise ParameterError(f"{type(self).__name__}.step_size is None; set it or run fokker.mcmc.sample")
        cached = self._eps_tensor
        if cached is None or cached.dtype != x.dtype or cached.device != x.device:
            cached = self._eps_tensor = torch.as_tensor(self.step_size, dtype=x.dtype, device=x.device)
        return cached

    def log_prob_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi(x), grad log pi(x))``, unchecked, for ``(chains, dim)``.

        Uses the target's analytic score when it has one, else one autograd pass.
        """
        return log_prob_and_grad(self._require_target(), x)

    def init(self, x: torch.Tensor) -> State:
        """Initial :class:`State` at ``x`` ``(chains, dim)`` (no checks: :meth:`setup` validates)."""
        lp, g = self.log_prob_and_grad(x)
        return State(x.detach(), lp.detach(), g.detach())

    def step(self, state: State) -> tuple[State, StepInfo]:
        """One transition of every chain with the current parameters."""
        raise NotImplementedError

    def trial_accept_prob(self, state: State) -> torch.Tensor:
        """``(chains,)`` acceptance probabilities of a trial move from ``state`` (the chains do not move).

        What the initial step-size search (:func:`~fokker.mcmc.adaptation.find_reasonable_step_size`)
        looks at: one whole transition here; NUTS overrides it with one leapfrog step.
        """
        return self.step(state)[1].accept_prob

    # ----------------------------------------------------------------- warm-up
    def default_adaptation(self) -> Adaptation:
        """The adapter used when none was given: Stan's windowed adaptation per the ``adapt_*`` flags."""
        return WindowedAdaptation(self.adapt_step_size, self.adapt_metric, restart_stuck=self.metropolis)

    def setup(
        self,
        target: Target | Callable,
        x0: torch.Tensor,
        num_warmup: int = 0,
        generator: torch.Generator | None = None,
    ) -> State:
        """Bind ``target``, take ``generator``, build the initial state at ``x0`` ``(chains, dim)`` and prepare warm-up.

        With ``num_warmup > 0`` an adapted metric restarts from the identity and the
        adapter picks the initial step size; with ``num_warmup = 0`` the current
        parameters are kept (a kernel adapted by an earlier run samples on as it is).

        Raises :class:`~fokker.errors.NonFiniteError` naming the chains whose log density
        or gradient is not finite at ``x0``, and :class:`~fokker.errors.ParameterError` when
        no step size is given and none will be adapted.
        """
        self.bind(target)
        self.generator = _check_generator(generator)
        if num_warmup > 0 and self.adapt_metric:
            self.metric = None
        self._metric_for(x0)
        state = self.init(x0)
        bad = ~(torch.isfinite(state.log_prob) & torch.isfinite(state.grad).all(-1))
        if bool(bad.any()):
            idx = torch.nonzero(bad).flatten().tolist()
            raise NonFiniteError(
                f"log_prob or its gradient is not finite at the initial point of chain(s) {idx[:10]}"
                f"{'...' if len(idx) > 10 else ''}; pass a different init"
            )
        if self.step_size is None and not (self.adapt_step_size and num_warmup > 0):
            raise ParameterError(
                "step_size is None and adaptation is off (warmup=0 or adapt_step_size=False); give a step size"
            )
        config = self._adaptation_config
        self.adaptation = copy.deepcopy(config) if config is not None else self.default_adaptation()
        state = self.adaptation.setup(self, state, num_warmup)
        self._warming_up = num_warmup > 0
        return state

    def warmup_step(self, state: State) -> tuple[State, StepInfo]:
        """One warm-up transition followed by one adaptation update."""
        if self.adaptation is None:
            raise ParameterError(f"{type(self).__name__}.warmup_step needs setup(target, x0, num_warmup) first")
        state, info = self.step(state)
        return self.adaptation.update(self, state, info), info

    def end_warmup(self) -> None:
        """Fix the adapted parameters for sampling (the averaged step size)."""
        if self.adaptation is not None:
            self.adaptation.finish(self)
        self._warming_up = False

    def diagnostics(self) -> dict[str, Any]:
        """``step_size``, ``inv_mass``, ``target_accept`` and the adapter's warm-up counts."""
        out: dict[str, Any] = {
            "step_size": self.step_size,
            "inv_mass": None if self.metric is None else self.metric.inv_mass,
            "target_accept": self.target_accept,
        }
        if self.adaptation is not None:
            out.update(self.adaptation.diagnostics())
        return out

    # ----------------------------------------------------------------- helpers
    def step_info(
        self, accept_prob: torch.Tensor, accepted: torch.Tensor, energy_error: torch.Tensor,
        divergent: torch.Tensor, num_steps: int | torch.Tensor, step_size: torch.Tensor,
        extra: Mapping[str, torch.Tensor] | None = None,
    ) -> StepInfo:
        """A :class:`StepInfo` with ``num_steps`` and ``step_size`` broadcast to ``(chains,)``."""
        if isinstance(num_steps, int):  # a fill, not a host-to-device copy
            n = torch.full(accept_prob.shape, num_steps, dtype=torch.long, device=accept_prob.device)
        else:
            n = num_steps.to(torch.long).expand(accept_prob.shape)
        return StepInfo(accept_prob, accepted, energy_error, divergent, n, step_size.expand_as(accept_prob), extra)

    def accept_reject(
        self, state: State, proposal: State, log_ratio: torch.Tensor, num_steps: int | torch.Tensor,
        step_size: torch.Tensor, energy: bool = False, extra: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[State, StepInfo]:
        """Metropolis-Hastings: accept ``proposal`` per chain with probability ``min(1, exp(log_ratio))``.

        A non-finite ``log_ratio`` or proposal gradient is a rejection (``accept_prob = 0``,
        ``divergent``); with ``energy=True`` (HMC) an energy error above 1000 is divergent too.
        The uniform is drawn from :attr:`generator`.
        """
        finite = torch.isfinite(log_ratio) & torch.isfinite(proposal.grad).all(-1)
        log_ratio = torch.where(finite, log_ratio, torch.full_like(log_ratio, -math.inf))
        accept_prob = log_ratio.clamp(max=0.0).exp()
        u = _random.rand_like(accept_prob, self.generator)
        accepted = u < accept_prob
        a2 = accepted.unsqueeze(-1)
        new = State(
            torch.where(a2, proposal.x, state.x),
            torch.where(accepted, proposal.log_prob, state.log_prob),
            torch.where(a2, proposal.grad, state.grad),
        )
        energy_error = torch.where(finite, -log_ratio, torch.full_like(log_ratio, math.inf))
        divergent = ~finite | (energy_error > 1000.0) if energy else ~finite
        return new, self.step_info(accept_prob, accepted, energy_error, divergent, num_steps, step_size, extra)

    def __repr__(self) -> str:
        eps = self.step_size if not isinstance(self.step_size, torch.Tensor) or self.step_size.numel() > 1 else float(self.step_size)
        return f"{type(self).__name__}(step_size={eps}, metric={'dense' if self.dense else 'diag'})"


class ULA(Kernel):
    """Unadjusted Langevin algorithm ``x' = x + eps S grad log pi(x) + sqrt(2 eps) S^{1/2} z``.

    Roberts & Tweedie (1996), "Exponential convergence of Langevin distributions and their
    discrete approximations", Bernoulli 2(4), eq. (1.2) (their ``h = 2 eps``).  Biased (no
    accept/reject): the chain targets a perturbation of ``pi`` of order ``eps``.
    ``step_size`` is required; nothing is adapted by default.

    Two heuristics for neural energies (Du & Mordatch 2019, "Implicit generation and
    generalization in energy-based models", Sec. 3.1) are available and make the chain
    target something else again: ``noise_scale`` replaces ``sqrt(2 eps)`` by a fixed noise
    standard deviation, and ``grad_clip`` clamps each coordinate of ``grad log pi``.
    """

    metropolis = False

    def __init__(
        self,
        target: Target | Callable | None = None,
        step_size: float | torch.Tensor | None = None,
        metric: str | Metric | torch.Tensor = "diag",
        adapt_metric: bool = False,
        dim: int | None = None,
        *,
        noise_scale: float | None = None,
        grad_clip: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_step_size(step_size, allow_none=False)
        if noise_scale is not None:
            check_positive(noise_scale, "noise_scale")
        if grad_clip is not None:
            check_positive(grad_clip, "grad_clip")
        super().__init__(target, step_size, metric, 0.5, adapt_step_size=False, adapt_metric=adapt_metric, dim=dim,
                         generator=generator)
        self.noise_scale = None if noise_scale is None else float(noise_scale)
        self.grad_clip = None if grad_clip is None else float(grad_clip)

    def step(self, state: State) -> tuple[State, StepInfo]:
        x = state.x
        eps = self._eps(x)
        e = eps.unsqueeze(-1) if eps.dim() else eps
        m = self._metric_for(x)
        g = state.grad if self.grad_clip is None else state.grad.clamp(-self.grad_clip, self.grad_clip)
        noise = m.sqrt_times(_random.randn_like(x, self.generator))
        y = langevin_move(x, m.velocity(g), e, noise, self.noise_scale)
        lp, g_y = self.log_prob_and_grad(y)
        ones = torch.ones_like(lp)
        finite = torch.isfinite(lp)
        return State(y, lp, g_y), self.step_info(ones, torch.ones_like(finite), torch.zeros_like(lp), ~finite, 1, eps)


class MALA(Kernel):
    """Metropolis-adjusted Langevin algorithm (exact; default acceptance target 0.574).

    Roberts & Tweedie (1996), Bernoulli 2(4), Sec. 1.4.1: the ULA proposal corrected by a
    Metropolis-Hastings step; 0.574 is the optimal acceptance rate of Roberts & Rosenthal (1998).
    """

    target_accept_default = 0.574

    def step(self, state: State) -> tuple[State, StepInfo]:
        x = state.x
        eps = self._eps(x)
        e = eps.unsqueeze(-1) if eps.dim() else eps
        m = self._metric_for(x)
        drift = m.velocity(state.grad)
        mean_x = x + e * drift
        y = langevin_move(x, drift, e, m.sqrt_times(_random.randn_like(x, self.generator)))
        lp_y, g_y = self.log_prob_and_grad(y)
        mean_y = y + e * m.velocity(g_y)
        log_q_y_given_x = -m.inv_quad(y - mean_x) / (4 * eps)
        log_q_x_given_y = -m.inv_quad(x - mean_y) / (4 * eps)
        log_ratio = lp_y - state.log_prob + log_q_x_given_y - log_q_y_given_x
        return self.accept_reject(state, State(y, lp_y, g_y), log_ratio, 1, eps)


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
    """Hamiltonian Monte Carlo with leapfrog integration (Neal 2011, "MCMC using Hamiltonian dynamics", Sec. 5.3.3).

    Args (beyond :class:`Kernel`):
        num_steps: fixed number of leapfrog steps ``L``; if ``None`` it is
            ``ceil(trajectory_length * u / eps)`` with ``u ~ U[0.5, 1.5]`` drawn
            each iteration (shared by the chains), capped at ``max_num_steps``.
        trajectory_length: integration time ``L eps`` (default 2, in the
            units of the adapted metric, where the target is roughly whitened).
        jitter: randomize the trajectory length as above (only with ``num_steps=None``).

    The jitter ``u`` is drawn on the host from a CPU generator seeded once from
    ``generator`` (no device sync per step).  During warm-up, while the metric is still
    the initial identity, at most :data:`WARMUP_STEP_CAP` leapfrog steps are taken: in a
    badly scaled target's raw units ``trajectory_length / eps`` can be huge.
    """

    def __init__(
        self,
        target: Target | Callable | None = None,
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
        *,
        adaptation: Adaptation | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(target, step_size, metric, target_accept, adapt_step_size, adapt_metric, dim,
                         adaptation=adaptation, generator=generator)
        if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
            raise ParameterError(f"num_steps must be an integer >= 1; got {num_steps!r}")
        if not (isinstance(trajectory_length, (int, float)) and trajectory_length > 0):
            raise ParameterError(f"trajectory_length must be a positive number; got {trajectory_length!r}")
        self.num_steps = num_steps
        self.trajectory_length = float(trajectory_length)
        self.jitter = jitter
        self.max_num_steps = max_num_steps
        self._jitter_source: torch.Generator | None = None
        self._jitter_generator: torch.Generator | None = None

    def _jitter_draw(self) -> float:
        """``u ~ U[0.5, 1.5]`` from a CPU generator derived from ``self.generator`` (global CPU RNG when None)."""
        if self.generator is None:
            self._jitter_source = self._jitter_generator = None
        elif self._jitter_source is not self.generator:
            self._jitter_source = self.generator
            self._jitter_generator = torch.Generator().manual_seed(_random.spawn_seed(self.generator))
        return 0.5 + float(_random.rand((), generator=self._jitter_generator, dtype=torch.float64))

    def _num_steps(self, eps: torch.Tensor) -> int:
        if self.num_steps is not None:
            return self.num_steps
        if self._eps_host is None:
            self._eps_host = float(eps.min())  # one host sync per step-size change
        u = self._jitter_draw() if self.jitter else 1.0
        cap = self.max_num_steps
        pending = self.adaptation is not None and getattr(self.adaptation, "metric_pending", False)
        if self._warming_up and pending:
            cap = min(cap, WARMUP_STEP_CAP)
        return max(1, min(cap, math.ceil(self.trajectory_length * u / self._eps_host)))

    def step(self, state: State) -> tuple[State, StepInfo]:
        x = state.x
        eps = self._eps(x)
        n = self._num_steps(eps)
        e = eps.unsqueeze(-1) if eps.dim() else eps
        m = self._metric_for(x)
        p0 = m.sample_momentum(x, self.generator)
        x1, p1, lp1, g1 = leapfrog(x, p0, state.grad, e, n, m, self.log_prob_and_grad)
        self.last_proposal = (x, x1, p1, n * eps)  # start, proposal, its momentum, integration time
        log_ratio = (lp1 - m.kinetic(p1)) - (state.log_prob - m.kinetic(p0))
        return self.accept_reject(state, State(x1, lp1, g1), log_ratio, n, eps, energy=True)


class ChEESHMC(HMC):
    """ChEES-HMC: HMC whose trajectory length is learnt across many chains (Hoffman, Radul & Sountsov 2021).

    Hoffman, Radul & Sountsov (2021), "An adaptive MCMC scheme for setting trajectory lengths
    in Hamiltonian Monte Carlo", AISTATS, Algorithm 1.  All chains share the step size ``eps``
    and the trajectory length ``T``; iteration ``n`` integrates for
    ``L_n = ceil(h_n T / eps)`` leapfrog steps with ``h_n`` the base-2 Halton sequence (a
    quasi-random jitter in ``(0, 1)``, independent of the state, so each transition leaves
    ``pi`` invariant).  The warm-up (:class:`~fokker.mcmc.adaptation.ChEESAdaptation`) learns
    ``T`` by stochastic gradient ascent on the ChEES criterion computed over the chains, the
    step size by dual averaging of the harmonic-mean acceptance toward 0.651, and the metric
    by Stan's windows.  It is designed for many chains on accelerators: no per-chain control
    flow, every chain takes the same number of gradient steps.

    Args (beyond :class:`HMC`): ``trajectory_length`` (``None``: learnt, starting at one
    step), ``adapt_trajectory_length``, ``max_num_steps`` (cap on ``L_n``, default 1024).
    """

    target_accept_default = 0.651

    def __init__(
        self,
        target: Target | Callable | None = None,
        step_size: float | torch.Tensor | None = None,
        trajectory_length: float | None = None,
        metric: str | Metric | torch.Tensor = "diag",
        target_accept: float | None = None,
        adapt_step_size: bool = True,
        adapt_metric: bool = True,
        adapt_trajectory_length: bool = True,
        max_num_steps: int = 1024,
        dim: int | None = None,
        *,
        adaptation: Adaptation | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(target, step_size, None, 1.0 if trajectory_length is None else trajectory_length, metric,
                         target_accept, adapt_step_size, adapt_metric, jitter=True, max_num_steps=max_num_steps,
                         dim=dim, adaptation=adaptation, generator=generator)
        if trajectory_length is None and not adapt_trajectory_length:
            raise ParameterError("trajectory_length must be given when adapt_trajectory_length=False")
        self.trajectory_length = trajectory_length  # type: ignore[assignment]
        self.adapt_trajectory_length = bool(adapt_trajectory_length)
        self.iteration = 0

    def default_adaptation(self) -> Adaptation:
        return ChEESAdaptation(self.adapt_step_size, self.adapt_metric, self.adapt_trajectory_length)

    def _num_steps(self, eps: torch.Tensor) -> int:
        if self._eps_host is None:
            self._eps_host = float(eps.min())  # one host sync per step-size change
        if self.trajectory_length is None:
            raise ParameterError("ChEESHMC.trajectory_length is None; set it or run fokker.mcmc.sample (warm-up learns it)")
        self.iteration += 1
        h = halton(self.iteration)
        return max(1, min(self.max_num_steps, math.ceil(h * self.trajectory_length / self._eps_host)))

    def diagnostics(self) -> dict[str, Any]:
        out = super().diagnostics()
        out["trajectory_length"] = self.trajectory_length
        return out

    def __repr__(self) -> str:
        eps = self.step_size if not isinstance(self.step_size, torch.Tensor) or self.step_size.numel() > 1 else float(self.step_size)
        return f"ChEESHMC(step_size={eps}, trajectory_length={self.trajectory_length}, metric={'dense' if self.dense else 'diag'})"
