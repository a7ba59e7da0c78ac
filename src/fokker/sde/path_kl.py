"""KL divergence between the path measures of two SDEs with the same diffusion (Girsanov).

For ``dX = f_p(X, t) dt + g(X, t) dW`` (law ``P``) and ``dX = f_q(X, t) dt + g(X, t) dW``
(law ``Q``) started from the same initial law, Girsanov's theorem (Øksendal 2003, thm. 8.6.6;
Li et al. 2020, eq. 5) gives

.. math::

    \\mathrm{KL}(P \\,\\|\\, Q) = \\mathbb E_P \\int_{t_0}^{t_N} \\tfrac12
        \\big|g(X_t, t)^{-1}\\big(f_p(X_t, t) - f_q(X_t, t)\\big)\\big|^2 \\, dt .

:func:`kl_path` estimates it by Monte Carlo over Euler-Maruyama paths of ``P`` on a grid
``t_0 < ... < t_N``:

.. math::

    \\widehat{\\mathrm{KL}} = \\frac1n \\sum_{i=1}^n \\sum_k \\frac{h_k}2
        \\Big|\\frac{f_p(x^i_k, t_k) - f_q(x^i_k, t_k)}{g(x^i_k, t_k)}\\Big|^2 .

Each summand is exactly the KL between the two Euler transitions
``N(x + h f_p, g^2 h)`` and ``N(x + h f_q, g^2 h)``, so the estimate is *unbiased* for the KL
between the two Euler-discretized chains at any step size, and converges to the continuous
KL as the steps shrink (error ``O(h)``).  Its standard error is the sample standard deviation
of the per-path sums over ``sqrt(n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .._args import check_finite, check_tensor
from .._random import randn
from ..errors import ParameterError, ShapeError

__all__ = ["PathKL", "kl_path", "girsanov_integrand"]


@dataclass(frozen=True)
class PathKL:
    """A Monte-Carlo estimate of ``KL(P || Q)`` between two path measures.

    Attributes:
        kl: the estimate (exact in expectation for the Euler-discretized chains).
        stderr: its Monte-Carlo standard error.
        num_samples: number of simulated paths.
        per_path: the ``(n,)`` per-path sums (their mean is ``kl``).
    """

    kl: float
    stderr: float
    num_samples: int
    per_path: torch.Tensor = field(repr=False, compare=False)

    def __float__(self) -> float:
        return float(self.kl)


def girsanov_integrand(f_p: torch.Tensor, f_q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The Girsanov rate ``0.5 |(f_p - f_q) / g|^2`` of ``KL(P || Q)`` per unit time (Li et al. 2020, eq. 5).

    The one place the path KL's integrand is written: :func:`kl_path` sums it along Euler paths,
    and the latent SDE of :mod:`fokker.neural_sde` integrates it as an extra state coordinate.
    Over one Euler step of length ``h`` from a common state, ``h`` times it is exactly
    ``KL(N(x + h f_p, g^2 h) || N(x + h f_q, g^2 h))``.

    Args:
        f_p, f_q: drifts ``(..., d)`` of the two SDEs at the same state and time.
        g: their common diagonal diffusion, broadcastable to ``(..., d)``.

    Returns:
        ``(...)``: the sum over the last dimension.  A coordinate with ``g = 0`` contributes 0 where
        the drifts agree and ``inf`` where they differ.  Differentiable where ``g != 0``.
    """
    g = g.expand_as(f_p)
    df = f_p - f_q
    nonzero = g != 0
    u = torch.where(nonzero, df / torch.where(nonzero, g, torch.ones_like(g)), torch.where(df == 0, 0.0, math.inf))
    return 0.5 * (u * u).sum(-1)


def _protocol(obj: Any, name: str) -> None:
    if not (callable(getattr(obj, "f", None)) and callable(getattr(obj, "g", None))):
        raise TypeError(
            f"{name} must follow torchsde's protocol (methods f(t, y) and g(t, y)), e.g. a fokker.sde.SDE; "
            f"got {type(obj).__name__}"
        )
    if getattr(obj, "noise_type", "diagonal") != "diagonal" or getattr(obj, "sde_type", "ito") != "ito":
        raise ParameterError(f"{name} must be an Ito SDE with diagonal noise for kl_path")


def kl_path(
    p: Any,
    q: Any,
    x0: torch.Tensor,
    ts: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    rtol: float = 1e-6,
) -> PathKL:
    """``KL(P || Q)`` of two SDEs with the same diffusion, by Monte Carlo over paths of ``p``.

    Args:
        p, q: SDEs following torchsde's protocol (``f(t, y)``, ``g(t, y)``, diagonal Ito noise),
            e.g. :class:`fokker.sde.SDE` objects or ``torchsde`` modules.
        x0: ``(n, d)`` draws of the common initial law, one path each.
        ts: strictly increasing 1-d time grid (e.g. :func:`fokker.sde.time_grid`).
        generator: randomness of the simulated paths.
        rtol: the two diffusions must agree to this relative tolerance at every visited state
            (Girsanov needs equal diffusions); otherwise :class:`~fokker.errors.ParameterError`.

    Returns:
        :class:`PathKL`; ``kl`` is ``inf`` when ``f_p != f_q`` where ``g = 0``.

    Example:
        >>> from fokker.sde import OrnsteinUhlenbeck, time_grid
        >>> g = torch.Generator().manual_seed(0)
        >>> res = kl_path(OrnsteinUhlenbeck(1.0, 1.0), OrnsteinUhlenbeck(2.0, 1.0), torch.zeros(4000, 1),
        ...               time_grid(200, 0.0, 1.0), generator=g)
        >>> exact = 0.5 * (0.5 - (1 - math.exp(-2.0)) / 4)  # (2-1)^2/2 int_0^1 (1 - e^{-2t})/2 dt
        >>> abs(res.kl - exact) < 4 * res.stderr + 0.01
        True
    """
    _protocol(p, "p")
    _protocol(q, "q")
    check_tensor(x0, "x0")
    if x0.dim() != 2:
        raise ShapeError(f"x0 must have shape (num_samples, d); got {tuple(x0.shape)}")
    check_finite(x0, "x0")
    if not isinstance(ts, torch.Tensor) or ts.dim() != 1 or ts.numel() < 2:
        raise ShapeError("ts must be a 1-d tensor with at least 2 times")
    grid = ts.detach().to("cpu", torch.float64)
    h = (grid[1:] - grid[:-1]).tolist()
    if not all(v > 0 for v in h):
        raise ParameterError("ts must be strictly increasing")
    x = x0.detach().clone()
    n = x.shape[0]
    total = torch.zeros(n, dtype=x.dtype, device=x.device)
    mismatch = torch.zeros((), dtype=x.dtype, device=x.device)
    tt = grid.to(device=x.device, dtype=x.dtype)
    with torch.no_grad():
        for k, hk in enumerate(h):
            t = tt[k]
            fp, fq = p.f(t, x), q.f(t, x)
            gp, gq = p.g(t, x).expand_as(x), q.g(t, x).expand_as(x)
            if fp.shape != x.shape or fq.shape != x.shape:
                raise ShapeError(f"drifts must have the shape of the state {tuple(x.shape)}; got {tuple(fp.shape)}, {tuple(fq.shape)}")
            mismatch = torch.maximum(mismatch, ((gp - gq).abs() / (gp.abs() + gq.abs()).clamp_min(1e-300)).max())
            total = total + hk * girsanov_integrand(fp, fq, gp)
            x = x + hk * fp + gp * math.sqrt(hk) * randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if float(mismatch) > rtol:
        raise ParameterError(
            f"p and q must have the same diffusion g for the path KL (Girsanov); they differ by a relative "
            f"{float(mismatch):.3g} > rtol={rtol:g} along the paths"
        )
    if bool(torch.isnan(total).any()):
        raise ParameterError("the drifts or the diffusion produced NaN along the simulated paths")
    kl = float(total.double().mean())
    se = float(total.double().std() / math.sqrt(n)) if n > 1 and math.isfinite(kl) else math.nan
    return PathKL(kl=kl, stderr=se, num_samples=n, per_path=total)
