"""Identity checkers for bijections and densities: inverse, log-det, normalization.

So a user can verify a layer of their own in one call:

* :func:`check_inverse` -- both round trips ``T^{-1}(T(x)) = x`` and ``T(T^{-1}(y)) = y``
  on the given (arbitrary) inputs;
* :func:`check_log_det` -- the analytic ``log|det dT/dx|`` (``log_abs_det_jacobian``)
  against ``slogdet`` of the autograd Jacobian, event by event (seed 000, change of
  variables), and the inverse's log-det against its negative;
* :func:`check_normalized` -- ``int exp(log_prob(x)) dx = 1`` by trapezoidal
  quadrature on a box in 1-D or 2-D.

Any ``torch.distributions.Transform`` works (fokker and Pyro layers, torch
transforms); conditional fokker layers take ``context=``.  Computations run in the
dtype of the inputs: pass float64 for tight tolerances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import Transform

from .._args import check_int, check_tensor
from ..errors import ParameterError, ShapeError
from ..tolerances import tolerance
from .result import CheckOutcome

__all__ = ["check_inverse", "check_log_det", "check_normalized"]


def _bind(transform: Transform, context: torch.Tensor | None) -> Transform:
    if not isinstance(transform, Transform):
        raise TypeError(f"transform must be a torch.distributions.Transform; got {type(transform).__name__}")
    if context is not None:
        if not hasattr(transform, "condition"):
            raise TypeError(f"{type(transform).__name__} takes no context")
        return transform.condition(context)
    return transform


def check_inverse(
    transform: Transform,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    tol: float | None = None,
) -> CheckOutcome:
    """Round trips of ``transform`` at ``x`` (domain points) and ``y`` (codomain points).

    ``y`` defaults to ``x``: for bijections of R^d any point is a valid input both ways,
    which is exactly what a layer that can only invert its own outputs gets wrong.
    ``error`` is ``max |round trip - input| / (1 + |input|)``; the default tolerance is the
    loose (iterative-solver) tolerance of the dtype.
    """
    check_tensor(x, "x")
    t = _bind(transform, context)
    y = x if y is None else check_tensor(y, "y")
    with torch.no_grad():
        fx = t(x)
        x_back = t.inv(fx)
        y_back = t(t.inv(y))
    err_x = float(((x_back - x).abs() / (1 + x.abs())).max())
    err_y = float(((y_back - y).abs() / (1 + y.abs())).max())
    err = max(err_x, err_y)
    bound = tol if tol is not None else 10 * tolerance(x.dtype, loose=True).atol
    ok = err == err and err <= bound
    return CheckOutcome("inverse", err, bound, ok, "max relative round-trip error",
                        {"x -> T -> T^-1": err_x, "y -> T^-1 -> T": err_y})


def _events(x: torch.Tensor, event_dim: int) -> tuple[torch.Tensor, torch.Size]:
    event_shape = x.shape[x.dim() - event_dim :] if event_dim else torch.Size()
    batch_shape = x.shape[: x.dim() - event_dim]
    return x.reshape(-1, *event_shape), batch_shape


def check_log_det(
    transform: Transform,
    x: torch.Tensor,
    context: torch.Tensor | None = None,
    tol: float | None = None,
    max_events: int = 64,
) -> CheckOutcome:
    """``log_abs_det_jacobian(x, T(x))`` vs ``slogdet`` of the autograd Jacobian at each event.

    Also checks the inverse transform's log-det equals the negative.  ``x`` is
    ``(*batch, *event)`` with ``transform.event_dim`` event dims (element-wise transforms,
    ``event_dim == 0``, are checked element by element).  At most ``max_events`` events
    are differentiated (the first ones).  ``error`` is the largest absolute difference.
    """
    check_tensor(x, "x")
    check_int(max_events, "max_events")
    t = _bind(transform, context)
    k = int(getattr(t, "event_dim", getattr(transform, "event_dim", 0)))
    if x.dim() < k:
        raise ShapeError(f"x must have at least event_dim={k} dimensions; got shape {tuple(x.shape)}")
    with torch.no_grad():
        y = t(x)
        ladj = t.log_abs_det_jacobian(x, y)
        ladj_inv = t.inv.log_abs_det_jacobian(y, x)
    if k == 0:  # element-wise: the Jacobian is diagonal, its log-det per element is log|T'(x)|
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (d,) = torch.autograd.grad(t(xg).sum(), xg)
        ref = d.abs().log()
        analytic = ladj.expand_as(ref)
        inv = ladj_inv.expand_as(ref)
    else:
        flat, _ = _events(x, k)
        n = min(flat.shape[0], max_events)
        ev = flat.shape[1:]
        # the analytic log-det has batch shape; its first n events in the same order
        analytic = ladj.reshape(-1)[:n]
        inv = ladj_inv.reshape(-1)[:n]
        refs = []
        for i in range(n):
            xi = flat[i].reshape(-1)

            def f(v: torch.Tensor) -> torch.Tensor:
                out = t(v.reshape(ev))
                return out.reshape(-1)

            J = torch.autograd.functional.jacobian(f, xi)
            if J.shape[0] != J.shape[1]:
                raise ShapeError(
                    f"check_log_det needs a dimension-preserving transform; Jacobian is {tuple(J.shape)}"
                )
            refs.append(torch.linalg.slogdet(J)[1])
        ref = torch.stack(refs)
    err_fwd = float((analytic - ref).abs().max())
    err_inv = float((inv + analytic).abs().max())
    err = max(err_fwd, err_inv)
    bound = tol if tol is not None else 100 * tolerance(x.dtype, loose=True).atol
    ok = err == err and err <= bound
    return CheckOutcome("log_det", err, bound, ok, "max |analytic - autograd slogdet|",
                        {"forward": err_fwd, "inverse + forward": err_inv, "events": int(ref.numel())})


def check_normalized(
    dist: Any,
    bounds: Sequence[float] | Sequence[Sequence[float]],
    n: int | None = None,
    tol: float = 1e-3,
    dtype: torch.dtype = torch.float64,
) -> CheckOutcome:
    """``int_box exp(dist.log_prob(x)) dx`` by the trapezoidal rule; passes when ``|mass - 1| <= tol``.

    Args:
        dist: anything with ``log_prob(x)``; ``x`` is ``(n,)`` for scalar 1-D
            distributions (``event_shape == ()``) and ``(n, d)`` otherwise.
        bounds: ``(low, high)`` in 1-D or ``((low0, high0), (low1, high1))`` in 2-D; the box must
            hold all but a negligible part of the mass.
        n: grid points per axis (default 4001 in 1-D, 401 in 2-D).
    """
    b = torch.as_tensor(bounds, dtype=dtype)
    if b.shape == (2,):
        b = b.unsqueeze(0)
    if b.dim() != 2 or b.shape[1] != 2 or b.shape[0] not in (1, 2):
        raise ShapeError(f"bounds must be (low, high) or ((low0, high0), (low1, high1)); got {bounds!r}")
    if not bool((b[:, 1] > b[:, 0]).all()):
        raise ParameterError(f"bounds must have low < high on every axis; got {bounds!r}")
    d = b.shape[0]
    n = n or (4001 if d == 1 else 401)
    check_int(n, "n", minimum=3)
    axes = [torch.linspace(float(lo), float(hi), n, dtype=dtype) for lo, hi in b]
    event_shape = tuple(getattr(dist, "event_shape", (d,)))
    with torch.no_grad():
        if d == 1:
            pts = axes[0] if event_shape == () else axes[0].unsqueeze(-1)
            dens = dist.log_prob(pts).exp()
            mass = torch.trapezoid(dens, axes[0])
        else:
            g0, g1 = torch.meshgrid(axes[0], axes[1], indexing="ij")
            pts = torch.stack([g0, g1], -1)
            dens = dist.log_prob(pts.reshape(-1, 2)).exp().reshape(n, n)
            mass = torch.trapezoid(torch.trapezoid(dens, axes[1], dim=1), axes[0])
    err = abs(float(mass) - 1.0)
    ok = err == err and err <= tol
    return CheckOutcome("normalized", err, tol, ok, "|mass - 1|", {"mass": float(mass), "grid": f"{n}^{d}"})
