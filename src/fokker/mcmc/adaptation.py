"""Warm-up adaptation: dual-averaging step size and Stan's windowed schedule.

Dual averaging (Hoffman & Gelman 2014, "The No-U-Turn Sampler", Algorithm 5,
after Nesterov 2009): with ``H_t = delta - a_t`` the gap between the target
and the observed acceptance statistic ``a_t``,

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
"""

from __future__ import annotations

import math

import torch

__all__ = ["DualAveraging", "stan_windows"]


class DualAveraging:
    """Dual-averaging optimizer of ``log eps`` toward an acceptance target ``delta``."""

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
