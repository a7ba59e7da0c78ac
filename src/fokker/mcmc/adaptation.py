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
kernel only through its public API: ``step``, ``set_step_size``,
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
    "DualAveraging",
    "stan_windows",
    "find_reasonable_step_size",
    "Adaptation",
    "WindowedAdaptation",
    "STUCK_ACCEPT",
]

#: A chain whose mean acceptance probability over a warm-up window is below this is "stuck".
STUCK_ACCEPT = 0.01


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
    (one host sync per trial proposal; the chains do not move).  Leaves the kernel's
    step size at the last trial value: callers set the one they want.
    """

    def accept(eps: torch.Tensor) -> float:
        kernel.set_step_size(eps, check=False)  # eps > 0 by construction
        _, info = kernel.step(state)
        return float(torch.nan_to_num(info.accept_prob, nan=0.0).mean())

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
    4. :meth:`finish`: the averaged step size ``epsbar`` for sampling.

    Args:
        adapt_step_size: run steps 1 and 4.
        adapt_metric: run step 2.
        restart_stuck: run step 3 (only meaningful for kernels that can reject).
        init_buffer, term_buffer, base_window: Stan's schedule (defaults 75 / 50 / 25).
        initial_step_size: start of the step-size search when the kernel has none.

    Attributes (read by kernels and :meth:`diagnostics`): ``iteration``, ``windows``,
    ``num_metric_updates``, ``warmup_resets``, :attr:`metric_pending`.
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
    ) -> None:
        if not (isinstance(initial_step_size, (int, float)) and initial_step_size > 0):
            raise ParameterError(f"initial_step_size must be a positive number; got {initial_step_size!r}")
        self.adapt_step_size = bool(adapt_step_size)
        self.adapt_metric = bool(adapt_metric)
        self.restart_stuck = bool(restart_stuck)
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
        self._in_window = [any(s <= it < e for s, e in self.windows) for it in range(num_warmup)]
        self.iteration = 0
        self.num_metric_updates = 0
        self.warmup_resets = 0
        self._buffer: list[torch.Tensor] = []
        x = state.x
        self._window_accept = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
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
        self._window_accept = self._window_accept + info.accept_prob.nan_to_num(0.0)
        if self._dual is not None:
            kernel.set_step_size(self._dual.update(info.accept_prob.mean()), check=False)
        if it < len(self._in_window) and self._in_window[it]:
            self._buffer.append(state.x)
        if (it + 1) in self._ends:
            state = self._end_window(kernel, state)
        self.iteration += 1
        return state

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
        self._buffer = []
        if self._dual is not None:
            eps = find_reasonable_step_size(kernel, state, kernel.step_size)
            self._dual.reset(eps)
            kernel.set_step_size(eps, check=False)
        return state

    def finish(self, kernel: Any) -> None:
        if self._dual is not None:
            kernel.set_step_size(self._dual.final_step_size, check=False)

    def diagnostics(self) -> dict[str, Any]:
        return {
            "warmup_iterations": self.iteration,
            "metric_windows": list(self.windows),
            "num_metric_updates": self.num_metric_updates,
            "warmup_resets": self.warmup_resets,
        }
