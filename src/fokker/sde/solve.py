"""Fixed-grid solvers: Euler-Maruyama and Heun for SDEs and ODEs, written for low overhead.

Euler-Maruyama (Kloeden & Platen 1992, sec. 10.2; seed 001 eq. 26), on a grid ``t_0, ..., t_n`` with
``h_k = t_{k+1} - t_k``:

.. math::

    x_{k+1} = x_k + h_k\\, b(x_k, t_k) + g(t_k) \\sqrt{h_k}\\, z_k, \\qquad z_k \\sim \\mathcal N(0, I).

Heun (2nd order for ODEs; for SDEs with state-independent diffusion, where Ito and
Stratonovich agree, the stochastic Heun scheme with the same increment in predictor and
corrector):

.. math::

    \\tilde x = x_k + h_k b(x_k, t_k) + g(t_k) \\Delta W_k, \\quad
    x_{k+1} = x_k + \\tfrac{h_k}{2}\\big(b(x_k, t_k) + b(\\tilde x, t_{k+1})\\big)
              + \\tfrac12 (g(t_k) + g(t_{k+1})) \\Delta W_k.

For linear SDEs (and their reversal / probability flow) the drift is
``b(x, t) = A(t) x + S(t) score(x, t)``; ``A``, ``S``, ``g`` on the grid are computed once in
float64 and kept as Python floats, so each step costs the model call plus a few in-place
kernels and no host-device synchronisation.  Other methods dispatch to
``torchsde.sdeint`` (SDEs) and ``torchdiffeq.odeint`` (ODEs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .._args import check_finite, check_tensor
from ..errors import DomainError, ParameterError, ShapeError
from .base import SDE, ScoreFn
from .linear import LinearSDE
from .reverse import ProbabilityFlowODE, ReverseSDE, _score_time

__all__ = ["solve"]

_FIXED = ("euler", "heun")
_ADAPTIVE_ODE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


class _LinearPlan:
    """``b(x, tau) = A(tau) x + S(tau) score(x, t(tau))`` and noise ``G(tau)`` on a grid, as Python floats."""

    def __init__(self, A: list[float], S: list[float], G: list[float], t_score: torch.Tensor, score_fn: ScoreFn | None):
        self.A, self.S, self.G, self.t_score, self.score_fn = A, S, G, t_score, score_fn


def _linear_plan(obj: Any, grid64: torch.Tensor, x: torch.Tensor) -> _LinearPlan | None:
    """Coefficients of the linear-family objects on the grid (``None`` for anything else)."""
    if isinstance(obj, LinearSDE):
        c = obj.coefficients(grid64)
        a, g2 = c.f, c.g2
        return _LinearPlan(a.tolist(), [0.0] * len(grid64), g2.sqrt().tolist(), grid64.to(x), None)
    if isinstance(obj, ReverseSDE) and isinstance(obj.forward_sde, LinearSDE):
        fwd = obj.forward_sde
        t = fwd.T - grid64
        c = fwd.coefficients(t)
        a, g2 = c.f, c.g2
        return _LinearPlan((-a).tolist(), g2.tolist(), g2.sqrt().tolist(), t.to(x), obj.score_fn)
    if isinstance(obj, ProbabilityFlowODE) and isinstance(obj.sde, LinearSDE):
        c = obj.sde.coefficients(grid64)
        a, g2 = c.f, c.g2
        return _LinearPlan(a.tolist(), (-0.5 * g2).tolist(), [0.0] * len(grid64), grid64.to(x), obj.score_fn)
    return None


def _noise_source(
    noise: torch.Tensor | None, bm: Any, x: torch.Tensor, n: int, grid: torch.Tensor, generator: torch.Generator | None
) -> Callable[[int, float, float], torch.Tensor]:
    """Returns ``dW(k, h, scale)``: ``scale`` times the Brownian increment of step ``k``, written
    into one reused buffer (no per-step allocation; the caller may modify it in place)."""
    buf = torch.empty_like(x)
    if noise is not None:
        check_tensor(noise, "noise")
        if tuple(noise.shape) != (n, *x.shape):
            raise ShapeError(f"noise must have shape ({n}, {', '.join(map(str, x.shape))}); got {tuple(noise.shape)}")
        noise = noise.to(x)
        return lambda k, h, scale: torch.mul(noise[k], scale * math.sqrt(abs(h)), out=buf)
    if bm is not None:
        ts = grid.to(x)
        return lambda k, h, scale: torch.mul(bm(ts[k], ts[k + 1]), scale, out=buf)
    if generator is not None and generator.device.type != x.device.type:
        # a CPU generator driving a CUDA solve (or the reverse): draw where the generator lives, into a
        # second reused buffer there, and copy
        home = torch.empty(x.shape, dtype=x.dtype, device=generator.device)
        return lambda k, h, scale: buf.copy_(home.normal_(0.0, scale * math.sqrt(abs(h)), generator=generator))
    return lambda k, h, scale: buf.normal_(0.0, scale * math.sqrt(abs(h)), generator=generator)


def solve(
    sde: SDE | ProbabilityFlowODE | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    ts: torch.Tensor,
    method: str = "euler",
    score_fn: ScoreFn | None = None,
    *,
    ode: bool = False,
    noise: torch.Tensor | None = None,
    bm: Any = None,
    generator: torch.Generator | None = None,
    return_path: bool = False,
    grad: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """Integrate ``sde`` from ``x0`` at ``ts[0]`` along the grid ``ts``; return ``x`` at ``ts[-1]``.

    Args:
        sde: an :class:`SDE` (forward or :class:`ReverseSDE`), a :class:`ProbabilityFlowODE`,
            or any ODE right-hand side ``func(t, x)`` (then only ``"euler"``/``"heun"``/torchdiffeq).
        x0: initial state ``(..., *event_shape)``.
        ts: 1-d grid, strictly monotone (increasing for SDEs; ODEs may run backwards).
        method: ``"euler"`` (Euler-Maruyama) or ``"heun"``; any other name goes to
            ``torchsde.sdeint`` (SDEs) or ``torchdiffeq.odeint`` (ODEs) with ``**kwargs``.
        score_fn: if given, ``sde`` must be a forward SDE and the object solved is its reversal
            (``ode=False``: ``ts`` are forward times, *decreasing*, mapped to ``s = T - t``) or
            its probability-flow ODE (``ode=True``; ``ts`` forward times, any direction).
        noise: pre-drawn standard normals ``(len(ts) - 1, *x0.shape)`` (``dW_k = sqrt(h_k) noise[k]``).
        bm: a torchsde Brownian object ``bm(t0, t1) -> dW`` (same increments as ``torchsde.sdeint``).
        generator: ``torch.Generator`` for the in-loop noise.
        return_path: return every grid point, shape ``(len(ts), *x0.shape)``.
        grad: keep the autograd graph (out-of-place updates); default runs under ``no_grad``
            and updates in place.

    Returns:
        ``x`` at ``ts[-1]`` (or the path).  The scheme's error is ``O(h)`` (EM, weak order 1)
        or ``O(h^2)`` (Heun on ODEs): an approximation, not exact.
    """
    if score_fn is not None:
        if not isinstance(sde, SDE) or isinstance(sde, ReverseSDE):
            raise TypeError("with score_fn, sde must be a forward fokker.sde.SDE")
        if ode:
            sde = sde.probability_flow(score_fn)
        else:
            rev = sde.reverse(score_fn)
            ts = torch.as_tensor(ts, dtype=torch.float64) if not isinstance(ts, torch.Tensor) else ts
            ts = sde.T - ts.to(torch.float64)
            sde = rev
    check_tensor(x0, "x0")
    check_finite(x0, "x0")
    if not isinstance(ts, torch.Tensor):
        ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.dim() != 1 or ts.numel() < 2:
        raise ShapeError(f"ts must be a 1-d grid with at least 2 points; got shape {tuple(ts.shape)}")
    grid64 = ts.detach().to("cpu", torch.float64)
    diffs = grid64[1:] - grid64[:-1]
    is_ode = isinstance(sde, ProbabilityFlowODE) or (not isinstance(sde, SDE) and callable(sde))
    if is_ode:
        if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
            raise ParameterError("ts must be strictly monotone")
    elif not bool((diffs > 0).all()):
        raise ParameterError("ts must be strictly increasing for an SDE (solve a ReverseSDE in reversed time)")
    if isinstance(sde, (SDE, ProbabilityFlowODE)):
        lo, hi = float(grid64.min()), float(grid64.max())
        if lo < sde.t_min - 1e-12 or hi > sde.T + 1e-12:
            raise DomainError(f"ts must lie in [{sde.t_min}, {sde.T}]; got values in [{lo}, {hi}]")
        (sde.sde if isinstance(sde, ProbabilityFlowODE) else sde).check_x(x0, "x0")

    if method not in _FIXED:
        return _dispatch(sde, x0, ts, method, is_ode, bm, return_path, grad, **kwargs)
    if kwargs:
        raise TypeError(f"unexpected arguments for method {method!r}: {sorted(kwargs)}")
    if method == "heun" and not is_ode and not getattr(sde, "additive_noise", False):
        raise ParameterError("method='heun' needs a state-independent diffusion (Ito = Stratonovich)")
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        return _fixed(sde, x0, grid64, method, is_ode, noise, bm, generator, return_path, inplace=not grad)


def _fixed(
    obj: Any,
    x0: torch.Tensor,
    grid64: torch.Tensor,
    method: str,
    is_ode: bool,
    noise: torch.Tensor | None,
    bm: Any,
    generator: torch.Generator | None,
    return_path: bool,
    inplace: bool,
) -> torch.Tensor:
    n = grid64.numel() - 1
    h = (grid64[1:] - grid64[:-1]).tolist()
    x = x0.clone()
    path = [x0.clone()] if return_path else None
    dW = None if is_ode else _noise_source(noise, bm, x, n, grid64, generator)
    plan = _linear_plan(obj, grid64, x)

    if plan is not None:
        A, S, G, score = plan.A, plan.S, plan.G, plan.score_fn
        tl = list(plan.t_score.unbind(0))  # 0-d time tensors, built once

        def b(xx: torch.Tensor, k: int) -> torch.Tensor:  # drift A x + S score, out of place
            out = xx * A[k]
            return out.add_(score(xx, tl[k]), alpha=S[k]) if score is not None else out

        if method == "euler" and inplace:
            # x <- (1 + h A) x + h S score(x, t) + G dW : three kernels per step besides the model
            cx = [1.0 + hk * ak for hk, ak in zip(h, A)]
            cs = [hk * sk for hk, sk in zip(h, S)]
            for k in range(n):
                noisy = dW is not None and G[k] != 0.0
                if score is not None:
                    s = score(x, tl[k])
                    if noisy:
                        w = dW(k, h[k], G[k]).add_(s, alpha=cs[k])
                        torch.add(w, x, alpha=cx[k], out=x)
                    else:
                        x.mul_(cx[k]).add_(s, alpha=cs[k])
                elif noisy:
                    torch.add(dW(k, h[k], G[k]), x, alpha=cx[k], out=x)
                else:
                    x.mul_(cx[k])
                if path is not None:
                    path.append(x.clone())
            return torch.stack(path) if path is not None else x

        for k in range(n):
            hk = h[k]
            if method == "euler":  # out of place (autograd through the path)
                x = x + hk * b(x, k)
                if dW is not None:
                    x = x + dW(k, hk, G[k])
            else:  # heun
                d1 = b(x, k)
                w = dW(k, hk, 1.0) if dW is not None else None
                xt = x + hk * d1
                if w is not None:
                    xt = xt + G[k] * w
                d2 = b(xt, k + 1)
                if inplace:
                    x.add_(d1.add_(d2), alpha=0.5 * hk)
                    if w is not None:
                        x.add_(w, alpha=0.5 * (G[k] + G[k + 1]))
                else:
                    x = x + 0.5 * hk * (d1 + d2)
                    if w is not None:
                        x = x + 0.5 * (G[k] + G[k + 1]) * w
            if path is not None:
                path.append(x.clone())
        return torch.stack(path) if path is not None else x

    # generic objects: SDE hooks or an ODE right-hand side func(t, x)
    tgrid = grid64.to(x.device)

    def drift(xx: torch.Tensor, k: int) -> torch.Tensor:
        if isinstance(obj, SDE):
            return obj._drift(xx, tgrid[k])
        if isinstance(obj, ProbabilityFlowODE):
            return obj._drift(xx, tgrid[k])
        return obj(tgrid[k].to(xx.dtype), xx)

    def diff(xx: torch.Tensor, k: int) -> torch.Tensor:
        return obj._diffusion(xx, tgrid[k]).to(xx.dtype)

    for k in range(n):
        hk = h[k]
        d1 = drift(x, k)
        w = dW(k, hk, 1.0) if dW is not None else None
        if method == "euler":
            x_new = x + hk * d1
            if w is not None:
                x_new = x_new + diff(x, k) * w
        else:
            g1 = diff(x, k) if w is not None else None
            xt = x + hk * d1 + (g1 * w if w is not None else 0.0)
            d2 = drift(xt, k + 1)
            x_new = x + 0.5 * hk * (d1 + d2)
            if w is not None:
                x_new = x_new + 0.5 * (g1 + diff(xt, k + 1)) * w
        x = x_new
        if path is not None:
            path.append(x.clone())
    return torch.stack(path) if path is not None else x


def _dispatch(
    obj: Any,
    x0: torch.Tensor,
    ts: torch.Tensor,
    method: str,
    is_ode: bool,
    bm: Any,
    return_path: bool,
    grad: bool,
    **kwargs: Any,
) -> torch.Tensor:
    ts_x = ts.to(device=x0.device, dtype=x0.dtype)
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        if is_ode:
            import torchdiffeq

            if method in _ADAPTIVE_ODE and "options" not in kwargs:
                # land steps on the grid: never evaluate the field beyond ts[-1] (outside [t_min, T])
                kwargs["options"] = {"step_t": ts_x}
            out = torchdiffeq.odeint(obj, x0, ts_x, method=method, **kwargs)
        else:
            import torchsde

            if "dt" not in kwargs:
                kwargs["dt"] = float((ts[1:] - ts[:-1]).abs().min())
            out = torchsde.sdeint(obj, x0, ts_x, method=method, bm=bm, **kwargs)
    return out if return_path else out[-1]
