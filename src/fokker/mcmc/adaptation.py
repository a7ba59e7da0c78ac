"""Warm-up adaptation: dual-averaging step size, Stan's windowed metric schedule, and the adapter that runs them.

Dual averaging (Hoffman & Gelman 2014, "The No-U-Turn Sampler", JMLR 15,
Algorithm 5 and eq. (6), after Nesterov 2009): with ``H_t = delta - a_t`` the
gap between the target and the observed acceptance statistic ``a_t``,

    Hbar_t = (1 - 1/(t + t0)) Hbar_{t-1} + H_t / (t + t0)
    log eps_t = mu - sqrt(t) / gamma * Hbar_t
    log epsbar_t = t^{-kappa} log eps_t + (1 - t^{-kappa}) log epsbar_{t-1}

with ``mu = log(10 eps_0)``, ``gamma = 0.05``, ``t0 = 10``, ``kappa = 0.75``;
``eps_t`` is used during warm-up and ``epsbar`` afterwards.  All state is kept
in tensors (no host synchronisation); the step size is shared by all chains
and ``a_t`` is the mean acceptance statistic over chains.

Windowed adaptation (Stan reference manual, "Automatic parameter tuning"):
a fast initial buffer (75 iterations), slow windows of 25, 50, 100, ...
iterations that each end with a new metric estimated from that window's
draws, and a final fast buffer (50 iterations) for the step size alone; the
last slow window stretches to the final buffer.  Short warm-ups use 15% /
75% / 10% as Stan does.

:class:`WindowedAdaptation` composes the two for a kernel (``fokker.mcmc``
kernels build one in :meth:`~fokker.mcmc.Kernel.setup`); it talks to the
kernel only through its public API: ``step``, ``trial_accept_prob``, ``set_step_size``,
``step_size``, ``metric``, ``dense``, ``target_accept``, ``generator``.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from .. import _random
from ..errors import ParameterError
from .metric import Metric, regularized_covariance

__all__ = [
    "ChEESAdaptation",
    "halton",
    "DualAveraging",
    "stan_windows",
    "find_reasonable_step_size",
    "Adaptation",
    "WindowedAdaptation",
    "STUCK_ACCEPT",
]

#: A chain whose mean acceptance probability over a warm-up window is below this is "stuck".
STUCK_ACCEPT = 0.01
#: ChEES-HMC: iterations after a restart of dual averaging (a metric update) before T learns again.
SETTLE = 10
#: Fraction of divergent transitions in a slow window above which the acceptance target is raised.
DIVERGENT_RAISE = 0.01
#: The highest acceptance target the warm-up raises to.
MAX_TARGET_ACCEPT = 0.99


class DualAveraging:
    """Dual-averaging optimizer of ``log eps`` toward an acceptance target ``delta``.

    Hoffman & Gelman (2014), Algorithm 5 (see the module docstring for the recursion).
    """

    def __init__(
        self,
        step_size: torch.Tensor,
        target_accept: float,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ) -> None:
        self.delta = target_accept
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.reset(step_size)

    def reset(self, step_size: torch.Tensor) -> None:
        """Restart at ``step_size`` (``mu = log(10 eps)``), as Stan does after each metric update."""
        self.mu = torch.log(10 * step_size)
        self.log_eps = torch.log(step_size)
        self.log_eps_bar = torch.zeros_like(self.log_eps)
        self.h_bar = torch.zeros_like(self.log_eps)
        self.t = 0

    def update(self, accept_stat: torch.Tensor) -> torch.Tensor:
        """One update from the acceptance statistic (NaN counts as 0); returns the new ``eps_t``."""
        self.t += 1
        t = self.t
        a = torch.nan_to_num(accept_stat, nan=0.0).clamp(0.0, 1.0)
        w = 1.0 / (t + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.delta - a)
        self.log_eps = self.mu - math.sqrt(t) / self.gamma * self.h_bar
        eta = t ** (-self.kappa)
        self.log_eps_bar = eta * self.log_eps + (1 - eta) * self.log_eps_bar
        return self.log_eps.exp()

    @property
    def step_size(self) -> torch.Tensor:
        return self.log_eps.exp()

    @property
    def final_step_size(self) -> torch.Tensor:
        return self.log_eps_bar.exp() if self.t > 0 else self.log_eps.exp()


def stan_windows(
    warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """Slow-window ``(start, end)`` iteration ranges (end exclusive) of Stan's warm-up schedule."""
    if warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > warmup:
        init_buffer = int(0.15 * warmup)
        term_buffer = int(0.1 * warmup)
        base_window = warmup - init_buffer - term_buffer
    windows = []
    start, size = init_buffer, base_window
    last = warmup - term_buffer
    while start < last:
        end = start + size
        if end + 2 * size > last:  # the next window would not fit: stretch this one
            end = last
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


def find_reasonable_step_size(kernel: Any, state: Any, eps0: torch.Tensor, max_iter: int = 60) -> torch.Tensor:
    """Doubling/halving heuristic (Hoffman & Gelman 2014, Algorithm 4) on the mean acceptance over chains.

    Returns the largest tried ``eps`` whose mean acceptance probability exceeds 1/2
    (``kernel.trial_accept_prob(state)``: a whole transition for HMC and MALA, one leapfrog
    step for NUTS, as in Stan; one host sync per trial; the chains do not move).  Leaves the kernel's
    step size at the last trial value: callers set the one they want.
    """

    def accept(eps: torch.Tensor) -> float:
        kernel.set_step_size(eps, check=False)  # eps > 0 by construction
        return float(torch.nan_to_num(kernel.trial_accept_prob(state), nan=0.0).mean())

    eps = eps0
    direction = 1 if accept(eps) > 0.5 else -1
    for _ in range(max_iter):
        new = eps * (2.0 if direction == 1 else 0.5)
        a = accept(new)
        if direction == 1 and a <= 0.5:
            return eps
        if direction == -1 and a > 0.5:
            return new
        eps = new
    return eps


class Adaptation(Protocol):
    """What a kernel's warm-up adapter provides (see :class:`WindowedAdaptation`)."""

    def setup(self, kernel: Any, state: Any, num_warmup: int) -> Any:
        """Prepare for ``num_warmup`` iterations from ``state``; returns the (possibly new) state."""

    def update(self, kernel: Any, state: Any, info: Any) -> Any:
        """Adapt after one warm-up transition that produced ``(state, info)``; returns the state to continue from."""

    def finish(self, kernel: Any) -> None:
        """Fix the kernel's parameters for sampling."""

    def diagnostics(self) -> dict[str, Any]:
        """What the warm-up did (counts, schedule)."""


def _reindex_chains(state: Any, src: torch.Tensor) -> Any:
    """A kernel state (a NamedTuple of per-chain tensors, chains first) with chain ``c`` taken from ``src[c]``."""
    return type(state)(*(t.index_select(0, src) for t in state))


class WindowedAdaptation:
    """Stan's warm-up for a Metropolis kernel: step-size search, dual averaging, windowed metric, stuck-chain restarts.

    Per warm-up run (Stan reference manual, "Automatic parameter tuning"; Hoffman & Gelman 2014):

    1. :meth:`setup`: an initial step size by :func:`find_reasonable_step_size` (Algorithm 4),
       then :class:`DualAveraging` (Algorithm 5) of the shared step size toward
       ``kernel.target_accept`` after every transition;
    2. :func:`stan_windows`: at the end of each slow window the inverse mass matrix becomes
       :func:`~fokker.mcmc.metric.regularized_covariance` of that window's draws (within-chain,
       pooled over chains), then the step-size search and dual averaging restart;
    3. ``restart_stuck``: at a window end, chains whose mean acceptance over the window is below
       :data:`STUCK_ACCEPT` (stuck where the shared step size is far too large, e.g. started at a
       tiny scale parameter) restart from the current states of randomly chosen moving chains
       (drawn with ``kernel.generator``) and are left out of that metric estimate;
    4. ``raise_target_accept``: when more than :data:`DIVERGENT_RAISE` of the transitions in
       the second half of a slow window (after the first window) diverge, the acceptance target moves halfway to 1
       (0.8 -> 0.9 -> 0.95 -> 0.975 -> 0.99 at most) and dual averaging continues toward it: a
       smaller step size for posteriors with funnel-like regions (what Stan users do by hand
       with ``adapt_delta``).  Only when the kernel's ``target_accept`` was left at its default;
    5. :meth:`finish`: the averaged step size ``epsbar`` for sampling.

    Args:
        adapt_step_size: run steps 1 and 4.
        adapt_metric: run step 2.
        restart_stuck: run step 3 (only meaningful for kernels that can reject).
        raise_target_accept: run step 4.
        init_buffer, term_buffer, base_window: Stan's schedule (defaults 75 / 50 / 25).
        initial_step_size: start of the step-size search when the kernel has none.

    Attributes (read by kernels and :meth:`diagnostics`): ``iteration``, ``windows``,
    ``num_metric_updates``, ``warmup_resets``, ``target_accept_raised`` (the targets step 4
    moved to), :attr:`metric_pending`.
    """

    def __init__(
        self,
        adapt_step_size: bool = True,
        adapt_metric: bool = True,
        restart_stuck: bool = True,
        init_buffer: int = 75,
        term_buffer: int = 50,
        base_window: int = 25,
        initial_step_size: float = 0.5,
        raise_target_accept: bool = True,
    ) -> None:
        if not (isinstance(initial_step_size, (int, float)) and initial_step_size > 0):
            raise ParameterError(f"initial_step_size must be a positive number; got {initial_step_size!r}")
        self.adapt_step_size = bool(adapt_step_size)
        self.adapt_metric = bool(adapt_metric)
        self.restart_stuck = bool(restart_stuck)
        self.raise_target_accept = bool(raise_target_accept)
        self.target_accept_raised: list[float] = []
        self.schedule = (init_buffer, term_buffer, base_window)
        self.initial_step_size = float(initial_step_size)
        self.windows: list[tuple[int, int]] = []
        self.iteration = 0
        self.num_metric_updates = 0
        self.warmup_resets = 0
        self._dual: DualAveraging | None = None

    @property
    def metric_pending(self) -> bool:
        """True while a metric window is scheduled and no metric has been estimated yet."""
        return bool(self.windows) and self.num_metric_updates == 0

    def setup(self, kernel: Any, state: Any, num_warmup: int) -> Any:
        init_buffer, term_buffer, base_window = self.schedule
        self.windows = stan_windows(num_warmup, init_buffer, term_buffer, base_window) if self.adapt_metric else []
        self._starts = {s for s, _ in self.windows}
        self._ends = {e for _, e in self.windows}
        self._second_halves = {it for s, e in self.windows for it in range((s + e) // 2, e)}
        self._in_window = [any(s <= it < e for s, e in self.windows) for it in range(num_warmup)]
        self.iteration = 0
        self.num_metric_updates = 0
        self.warmup_resets = 0
        self.target_accept_raised = []
        self._buffer: list[torch.Tensor] = []
        x = state.x
        self._window_accept = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        self._window_divergent = torch.zeros((), dtype=torch.long, device=x.device)
        self._dual = None
        if self.adapt_step_size and num_warmup > 0:
            start = kernel.step_size if kernel.step_size is not None else self.initial_step_size
            eps = find_reasonable_step_size(kernel, state, torch.as_tensor(start, dtype=x.dtype, device=x.device))
            self._dual = DualAveraging(eps, kernel.target_accept)
            kernel.set_step_size(eps, check=False)
        return state

    def update(self, kernel: Any, state: Any, info: Any) -> Any:
        it = self.iteration
        if it in self._starts:
            self._buffer = []
            self._window_accept = torch.zeros_like(self._window_accept)
            self._window_divergent = torch.zeros_like(self._window_divergent)
        self._window_accept = self._window_accept + info.accept_prob.nan_to_num(0.0)
        if it in self._second_halves:  # dual averaging has settled: divergences now say something
            self._window_divergent = self._window_divergent + info.divergent.sum()
        if self._dual is not None:
            kernel.set_step_size(self._dual.update(self.accept_statistic(info)), check=False)
        if it < len(self._in_window) and self._in_window[it]:
            self._buffer.append(state.x)
        if (it + 1) in self._ends:
            state = self._end_window(kernel, state)
        self.iteration += 1
        return state

    def accept_statistic(self, info: Any) -> torch.Tensor:
        """What dual averaging drives to ``target_accept``: the mean acceptance probability over chains."""
        return info.accept_prob.mean()

    def _end_window(self, kernel: Any, state: Any) -> Any:
        draws = torch.stack(self._buffer, 0)  # (window, chains, dim): within-chain (co)variance
        draws = draws.nan_to_num(0.0, posinf=0.0, neginf=0.0)
        num_chains = draws.shape[1]
        if self.restart_stuck:
            stuck = (self._window_accept / len(self._buffer)) < STUCK_ACCEPT
            n_stuck = int(stuck.sum())  # one host sync per window
            if 0 < n_stuck < num_chains:
                good = torch.nonzero(~stuck).flatten()
                pick = _random.randint(len(good), (num_chains,), generator=kernel.generator, device=good.device)
                src = torch.where(stuck, good[pick], torch.arange(num_chains, device=good.device))
                state = _reindex_chains(state, src)
                draws = draws[:, good]
                self.warmup_resets += n_stuck
        kernel.metric = Metric(regularized_covariance(draws, kernel.dense))
        self.num_metric_updates += 1
        window = len(self._buffer)
        self._buffer = []
        if self._dual is not None:
            self._maybe_raise_target(kernel, (window - window // 2) * num_chains)
            eps = find_reasonable_step_size(kernel, state, kernel.step_size)
            self._dual.reset(eps)
            kernel.set_step_size(eps, check=False)
        return state

    def _maybe_raise_target(self, kernel: Any, transitions: int) -> None:
        """Step 4 of the class docstring (one host sync per window)."""
        if not self.raise_target_accept or self.num_metric_updates < 2 or getattr(kernel, "target_accept_given", True):
            return
        fraction = int(self._window_divergent) / max(transitions, 1)
        if fraction > DIVERGENT_RAISE and kernel.target_accept < MAX_TARGET_ACCEPT:
            kernel.target_accept = min(MAX_TARGET_ACCEPT, 1.0 - (1.0 - kernel.target_accept) / 2)
            assert self._dual is not None
            self._dual.delta = kernel.target_accept
            self.target_accept_raised.append(kernel.target_accept)

    def finish(self, kernel: Any) -> None:
        if self._dual is not None:
            kernel.set_step_size(self._dual.final_step_size, check=False)

    def diagnostics(self) -> dict[str, Any]:
        return {
            "warmup_iterations": self.iteration,
            "metric_windows": list(self.windows),
            "num_metric_updates": self.num_metric_updates,
            "warmup_resets": self.warmup_resets,
            "target_accept_raised": list(self.target_accept_raised),
        }


def halton(index: int, base: int = 2) -> float:
    """The ``index``-th term (``index >= 1``) of the van der Corput / Halton sequence in ``base``: a point of ``(0, 1)``.

    ``0.5, 0.25, 0.75, 0.125, ...`` for base 2: quasi-random, more even than uniform draws
    (Hoffman, Radul & Sountsov 2021 jitter ChEES-HMC's trajectory lengths with it).
    """
    out, f = 0.0, 1.0 / base
    while index > 0:
        out += f * (index % base)
        index //= base
        f /= base
    return out


class ChEESAdaptation(WindowedAdaptation):
    """ChEES-HMC's warm-up: the trajectory length that maximizes the ChEES criterion, learnt across chains.

    Hoffman, Radul & Sountsov (2021), "An adaptive MCMC scheme for setting trajectory lengths
    in Hamiltonian Monte Carlo", AISTATS, Algorithm 1.  With many chains at positions
    ``theta_c``, proposals ``theta'_c`` reached after time ``t = h_n T`` (``h_n`` the Halton
    sequence) with end momenta ``p'_c`` and acceptance probabilities ``a_c``, the *Change in
    the Estimator of the Expected Square*

        ChEES = E[(|theta' - E theta'|^2 - |theta - E theta|^2)^2] / 4

    has the stochastic gradient with respect to ``log T``

        g = sum_c a_c h_n T (|theta'_c - m'|^2 - |theta_c - m|^2) (theta'_c - m') . v'_c / sum_c a_c,

    (``m``, ``m'`` the means over chains, ``m'`` weighted by ``a_c``; ``v' = S p'`` the velocity;
    norms in the metric ``S^{-1}``, i.e. in whitened coordinates; divergent chains get weight 0).
    ``log T`` climbs ``g`` by Adam (learning rate 0.025, no momentum, ``beta_2 = 0.95``) with
    steps clipped to ``+-0.35``, each step taken from and averaged into the running mean of
    ``log T`` with weight ``t^{-1/2}`` (as in BlackJAX's implementation); ``T = exp`` of that
    mean, which restarts with the metric at each window end.  The step size is dual-averaged toward ``target_accept`` (0.651 for
    ChEES-HMC) of the *harmonic* mean of the chains' acceptance probabilities, and the metric
    follows Stan's windows (:class:`WindowedAdaptation`, whose other settings it takes).
    """

    def __init__(
        self,
        adapt_step_size: bool = True,
        adapt_metric: bool = True,
        adapt_trajectory_length: bool = True,
        restart_stuck: bool = True,
        learning_rate: float = 0.025,
        initial_trajectory_length: float = 1.0,
        init_buffer: int = 75,
        term_buffer: int = 50,
        base_window: int = 25,
        initial_step_size: float = 0.5,
    ) -> None:
        super().__init__(adapt_step_size, adapt_metric, restart_stuck, init_buffer, term_buffer, base_window,
                         initial_step_size)
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise ParameterError(f"learning_rate must be a positive number; got {learning_rate!r}")
        if not (isinstance(initial_trajectory_length, (int, float)) and initial_trajectory_length > 0):
            raise ParameterError(f"initial_trajectory_length must be a positive number; got {initial_trajectory_length!r}")
        self.adapt_trajectory_length = bool(adapt_trajectory_length)
        self.learning_rate = float(learning_rate)
        self.initial_trajectory_length = float(initial_trajectory_length)

    def setup(self, kernel: Any, state: Any, num_warmup: int) -> Any:
        learn = kernel.trajectory_length is None
        if learn:  # one leapfrog step per trial of the step-size search, and to start with (as in the paper)
            eps = kernel.step_size if kernel.step_size is not None else self.initial_step_size
            kernel.trajectory_length = float(torch.as_tensor(eps).min())
        state = super().setup(kernel, state, num_warmup)
        if learn:
            kernel.trajectory_length = self.initial_trajectory_length
        self._log_t_avg = math.log(kernel.trajectory_length)
        # learn T once the chains have left their initial points (Stan's initial fast buffer)
        self._learn_from = self.windows[0][0] if self.windows else 0
        self._last_restart = 0
        self._adam_v = 0.0
        self._t = 0
        return state

    def accept_statistic(self, info: Any) -> torch.Tensor:
        """Harmonic mean of the non-divergent chains' acceptance probabilities (0 if one is 0)."""
        a = torch.nan_to_num(info.accept_prob, nan=0.0)
        keep = ~info.divergent
        inv_sum = torch.where(keep, 1.0 / a, torch.zeros_like(a)).sum()
        return torch.where(keep.any(), keep.sum() / inv_sum, torch.zeros_like(inv_sum))  # 0 when every chain diverged

    def chees_gradient(self, kernel: Any, info: Any) -> torch.Tensor:
        """The stochastic gradient ``g`` of ChEES in ``log T`` (class docstring) from the kernel's last proposal."""
        x0, x1, p1, time = kernel.last_proposal
        metric = kernel.metric
        w = torch.where(info.divergent, 0.0, torch.nan_to_num(info.accept_prob, nan=0.0))
        finite = torch.isfinite(x1).all(-1) & torch.isfinite(p1).all(-1)
        w = torch.where(finite, w, torch.zeros_like(w))
        x1 = torch.where(finite.unsqueeze(-1), x1, x0)
        p1 = torch.where(finite.unsqueeze(-1), p1, torch.zeros_like(p1))
        m1 = (w.unsqueeze(-1) * x1).sum(0) / w.sum().clamp(min=1e-20)
        m0 = x0.mean(0)
        d1, d0 = x1 - m1, x0 - m0
        per_chain = time * (metric.inv_quad(d1) - metric.inv_quad(d0)) * (d1 * p1).sum(-1)  # d/dlog T = t d/dt
        return (w * per_chain).sum() / w.sum().clamp(min=1e-20)

    def update(self, kernel: Any, state: Any, info: Any) -> Any:
        settled = self.iteration >= self._learn_from and self.iteration - self._last_restart >= SETTLE
        if self.adapt_trajectory_length and settled and getattr(kernel, "last_proposal", None) is not None:
            g = float(self.chees_gradient(kernel, info))  # one host sync: the next trajectory's length
            if math.isfinite(g):
                self._t += 1
                self._adam_v = 0.95 * self._adam_v + 0.05 * g * g
                v_hat = self._adam_v / (1 - 0.95**self._t)
                step = self.learning_rate * g / (math.sqrt(v_hat) + 1e-8)
                eps = float(torch.as_tensor(kernel.step_size).min())
                log_t = self._log_t_avg + min(max(step, -0.35), 0.35)
                log_t = min(max(log_t, math.log(eps)), math.log(kernel.max_num_steps * eps))
                weight = self._t ** -0.5
                self._log_t_avg = (1 - weight) * self._log_t_avg + weight * log_t
                kernel.trajectory_length = math.exp(self._log_t_avg)
        return super().update(kernel, state, info)

    def _end_window(self, kernel: Any, state: Any) -> Any:
        state = super()._end_window(kernel, state)
        self._t, self._adam_v = 0, 0.0  # new metric, new units: the average and Adam start again
        self._last_restart = self.iteration + 1
        return state

    def diagnostics(self) -> dict[str, Any]:
        out = super().diagnostics()
        out["trajectory_length_updates"] = getattr(self, "_t", 0)
        return out
