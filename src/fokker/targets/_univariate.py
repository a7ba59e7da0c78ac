"""Exact sampling and normalization of 1-D unnormalized densities (helpers for product targets).

``Univariate(log_density, lo, hi)`` prepares, once, on a fine float64 grid over ``[lo, hi]``:

* ``log_Z = log int exp(f(x)) dx`` by composite Simpson quadrature (``f`` smooth and
  negligible outside ``[lo, hi]``; the error is far below float64 rounding for the
  quartic / Gaussian-tailed factors used here -- tests compare with ``scipy.integrate.quad``);
* a rejection sampler (von Neumann): proposal ``q`` = mixture of Gaussians centred at the
  grid's local maxima of ``f`` with widths ``1.5 / sqrt(-f'')`` (Laplace, inflated), weights
  ``~ exp(f(mode)) * width`` (total 0.9), plus a broad defensive component
  ``N((lo + hi) / 2, ((hi - lo) / 4)^2)`` of weight 0.1 that covers the barriers; bound
  ``M = 1.05 * max_grid exp(f - log q)``.  A draw ``x ~ q`` is accepted with probability
  ``exp(f(x) - log q(x) - log M)``, which yields exact samples of ``exp(f) / Z`` as long as
  ``f - log q <= log M`` everywhere.  ``f`` decays at least as fast as a Gaussian narrower
  than ``q``'s components in the tails for every factor used in fokker, so the ratio is
  largest inside ``[lo, hi]`` where the grid (spacing ``(hi - lo) / 4e4``) locates its
  maximum; the 5 % margin covers the grid error (tests check the bound on a wide grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._random import rand, randn

_LogDensity = Callable[[torch.Tensor], torch.Tensor]


class Univariate:
    """Quadrature log-normalizer and exact rejection sampler of ``p(x) ~ exp(f(x))`` on ``R``."""

    def __init__(self, log_density: _LogDensity, lo: float, hi: float, num_grid: int = 40_001) -> None:
        if num_grid % 2 == 0:
            num_grid += 1
        self.f = log_density
        g = torch.linspace(lo, hi, num_grid, dtype=torch.float64)
        fg = log_density(g)
        h = (hi - lo) / (num_grid - 1)
        fmax = float(fg.max())
        # composite Simpson: h/3 (f0 + 4 f1 + 2 f2 + ... + fn)
        wts = torch.ones(num_grid, dtype=torch.float64)
        wts[1:-1:2] = 4.0
        wts[2:-1:2] = 2.0
        self.log_Z = fmax + math.log(float((wts * torch.exp(fg - fmax)).sum()) * h / 3.0)

        # local maxima of f on the grid that carry non-negligible mass
        inner = (fg[1:-1] >= fg[:-2]) & (fg[1:-1] >= fg[2:]) & (fg[1:-1] > fmax - 30.0)
        idx = (torch.nonzero(inner).flatten() + 1).tolist()
        means, stds, logw = [], [], []
        for i in idx:
            curv = float((fg[i + 1] - 2 * fg[i] + fg[i - 1]) / h**2)
            width = 1.5 / math.sqrt(-curv) if curv < 0 else (hi - lo) / 10.0
            width = max(width, 50 * h)  # never narrower than the grid can resolve
            means.append(float(g[i]))
            stds.append(width)
            logw.append(float(fg[i]) + math.log(width))
        # defensive broad component (10 % of the mass) so the barriers between modes are covered
        means.append(0.5 * (lo + hi))
        stds.append((hi - lo) / 4.0)
        lw = torch.tensor(logw, dtype=torch.float64)
        lw = torch.cat([torch.log(0.9 * torch.softmax(lw, 0)), torch.tensor([math.log(0.1)], dtype=torch.float64)])
        self.means = torch.tensor(means, dtype=torch.float64)
        self.stds = torch.tensor(stds, dtype=torch.float64)
        self.weights = torch.softmax(lw, 0)
        self.log_M = float((fg - self._log_q(g)).max()) + math.log(1.05)

    def _log_q(self, x: torch.Tensor) -> torch.Tensor:
        m, s, w = (t.to(device=x.device, dtype=x.dtype) for t in (self.means, self.stds, self.weights))
        z = (x.unsqueeze(-1) - m) / s
        return torch.logsumexp(torch.log(w) - 0.5 * z * z - torch.log(s) - 0.5 * math.log(2 * math.pi), dim=-1)

    def sample(
        self,
        sample_shape: torch.Size | tuple[int, ...] | int,
        dtype: torch.dtype,
        device: torch.device,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Exact draws of ``exp(f) / Z`` of shape ``sample_shape`` by rejection, in ``dtype`` on ``device``.

        The acceptance test runs in float64 (then cast), so float32 targets get exact draws too.
        Every draw comes from ``generator`` (global RNG when ``None``), on the generator's
        device; the result is then moved to ``device``.
        """
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        num_samples = math.prod(shape)
        where = generator.device if generator is not None else torch.device(device)
        out: list[torch.Tensor] = [torch.empty(0, dtype=torch.float64, device=where)]
        have = 0
        accept_rate = math.exp(self.log_Z - self.log_M)
        m, s, w = (t.to(device=where) for t in (self.means, self.stds, self.weights))
        while have < num_samples:
            k = int(1.1 * (num_samples - have) / accept_rate) + 16
            comp = torch.multinomial(w, k, replacement=True, generator=generator)
            x = m[comp] + s[comp] * randn((k,), generator=generator, dtype=torch.float64, device=where)
            log_u = torch.log(rand((k,), generator=generator, dtype=torch.float64, device=where))
            acc = log_u < self.f(x) - self._log_q(x) - self.log_M
            xa = x[acc]
            out.append(xa)
            have += int(xa.shape[0])
        return torch.cat(out)[:num_samples].reshape(shape).to(device=device, dtype=dtype)
