"""Identity checkers for bijections and densities: inverse, log-det, normalization.

So a user can verify a layer of their own in one call, on every path it has:

* :func:`check_inverse` -- both round trips ``T^{-1}(T(x)) = x`` and ``T(T^{-1}(y)) = y`` on
  the given (arbitrary) inputs, through every forward path (``call_and_ladj``, ``call``,
  the torch protocol ``t(x)``) and every inverse path (``inverse_and_ladj``, ``t.inv``),
  and the paths against each other;
* :func:`check_log_det` -- every log-det path (``call_and_ladj``, ``ladj``,
  ``log_abs_det_jacobian``, ``inverse_and_ladj``, ``t.inv.log_abs_det_jacobian``) against
  ``slogdet`` of the autograd Jacobian of the map it belongs to (forward at ``x``, inverse at
  ``y = T(x)``), event by event (change of variables, Rezende & Mohamed 2015, eq. 1);
* :func:`check_normalized` -- ``int exp(log_prob(x)) dx = 1`` by trapezoidal quadrature on a
  box in 1-D or 2-D, with the quadrature error estimated by halving the grid.

Any ``torch.distributions.Transform`` works (fokker and Pyro layers, torch transforms): for
a plain torch transform the paths are ``t(x)``, ``t.inv(y)``, ``t.log_abs_det_jacobian`` and
``t.inv.log_abs_det_jacobian``; a fokker :class:`~fokker.flows.Bijection` adds its fast
paths.  Conditional layers take ``context=``.  Caches are off: a transform constructed with
``cache_size=1`` is checked through ``with_cache(0)``, so every inverse is computed.

Tolerances come from :mod:`fokker.tolerances` in the dtype of the inputs: the rounding
tolerance ``rtol = 4 eps^(2/3)`` (float32 1e-4, float64 1.5e-10) times a scale tied to the
problem (the event size ``d`` and the magnitude of the log-dets / inputs), or with
``loose=True`` the tolerance of iterative solvers ``eps^(1/3)`` (ODE flows, fixed points).
In float32 the default log-det bound is ``1e-4 max(1, d, |log det|)``: an error of 0.05
nats is rejected up to ``d`` and ``|log det|`` of 500.  Pass float64 inputs for tight checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.distributions import Transform

from .._args import check_int, check_tensor
from ..errors import ParameterError, ShapeError
from ..flows.base import Bijection, ConditionedBijection
from ..tolerances import tolerance
from .result import CheckOutcome

__all__ = ["check_inverse", "check_log_det", "check_normalized"]

Map = Callable[[torch.Tensor], torch.Tensor]


class _Paths:
    """Every way to evaluate a transform, caches off.

    ``forward`` / ``inverse`` map to ``(name, fn)`` lists of value paths; ``ladj`` (at ``x``,
    ``y``) and ``inv_ladj`` to lists of log-det paths.
    """

    def __init__(self, transform: Transform, context: torch.Tensor | None) -> None:
        if not isinstance(transform, Transform):
            raise TypeError(f"transform must be a torch.distributions.Transform; got {type(transform).__name__}")
        layer: Bijection | None = None
        if isinstance(transform, ConditionedBijection):
            if context is not None:
                raise ShapeError("transform is already bound to a context; pass context=None")
            layer, context = transform.layer, transform.context
        elif isinstance(transform, Bijection):
            layer = transform
        if layer is not None:
            if not layer.context_dim and context is not None:
                raise ShapeError(f"{type(layer).__name__} is unconditional; context must be None")
            t: Transform = layer.condition(context) if layer.context_dim else layer  # validates the context
        else:
            if context is not None:
                if not hasattr(transform, "condition"):
                    raise TypeError(f"{type(transform).__name__} takes no context")
                transform = transform.condition(context)  # type: ignore[attr-defined]
            t = transform
            if getattr(t, "_cache_size", 0):
                t = t.with_cache(0)
        self.t, self.layer, self.context = t, layer, context
        self.event_dim = int(t.domain.event_dim)

    def forward(self) -> list[tuple[str, Map]]:
        paths: list[tuple[str, Map]] = [("t(x)", self.t)]
        if self.layer is not None:
            layer, ctx = self.layer, self.context
            paths = [
                ("call_and_ladj", lambda v: layer.call_and_ladj(v, ctx)[0]),
                ("call", lambda v: layer.call(v, ctx)),
                *paths,
            ]
        return paths

    def inverse(self) -> list[tuple[str, Map]]:
        paths: list[tuple[str, Map]] = [("t.inv(y)", self.t.inv)]
        if self.layer is not None:
            layer, ctx = self.layer, self.context
            paths = [("inverse_and_ladj", lambda v: layer.inverse_and_ladj(v, ctx)[0]), *paths]
        return paths

    def ladj(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Forward log-dets ``log|det dT/dx|`` at ``x`` (``y = T(x)``) by every path."""
        out = [("log_abs_det_jacobian", self.t.log_abs_det_jacobian(x, y))]
        if self.layer is not None:
            layer, ctx = self.layer, self.context
            out = [("call_and_ladj", layer.call_and_ladj(x, ctx)[1]), ("ladj", layer.ladj(x, y, ctx)), *out]
        return out

    def inv_ladj(self, y: torch.Tensor, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Inverse log-dets ``log|det dT^{-1}/dy|`` at ``y`` (``x = T^{-1}(y)``) by every path."""
        out = [("inv.log_abs_det_jacobian", self.t.inv.log_abs_det_jacobian(y, x))]
        if self.layer is not None:
            out = [("inverse_and_ladj", self.layer.inverse_and_ladj(y, self.context)[1]), *out]
        return out


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / (1 + |b|)`` (inf when the shapes differ or a value is not finite)."""
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    e = ((a - b).abs() / (1 + b.abs())).max()
    return float(e) if bool(torch.isfinite(e)) else float("inf")


def _bound(dtype: torch.dtype, loose: bool, scale: float, tol: float | None) -> float:
    if tol is not None:
        if not tol > 0:
            raise ParameterError(f"tol must be positive; got {tol!r}")
        return float(tol)
    return tolerance(dtype, loose=loose, scale=scale).atol


def check_inverse(
    transform: Transform,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    tol: float | None = None,
    loose: bool = False,
) -> CheckOutcome:
    """Round trips of ``transform`` at ``x`` (domain points) and ``y`` (codomain points), every path.

    For each forward path ``F`` and inverse path ``G`` (see the module docstring):
    ``G(F(x)) = x``, ``F(G(y)) = y``, and all forward paths agree at ``x``, all inverse paths at
    ``y``.  ``y`` defaults to ``x`` (for bijections of R^d any point is a valid input both
    ways, which is exactly what a layer that can only invert its own outputs gets wrong).
    ``error`` is the largest ``max |a - b| / (1 + |b|)`` over all comparisons (``details``
    has each); the default bound is ``tolerance(dtype, loose).rtol * d`` with ``d`` the event
    size (every output coordinate is a sum over ``d`` inputs).
    """
    check_tensor(x, "x")
    paths = _Paths(transform, context)
    y = x if y is None else check_tensor(y, "y")
    fwd, inv = paths.forward(), paths.inverse()
    details: dict[str, Any] = {}
    with torch.no_grad():
        ys = [(name, f(x)) for name, f in fwd]
        xs = [(name, g(y)) for name, g in inv]
        y_ref, x_ref = ys[0][1], xs[0][1]
        for name, v in ys[1:]:
            details[f"{name} == {ys[0][0]} at x"] = _rel_err(v, y_ref)
        for name, v in xs[1:]:
            details[f"{name} == {xs[0][0]} at y"] = _rel_err(v, x_ref)
        for gname, g in inv:
            details[f"{gname} o {ys[0][0]} (x)"] = _rel_err(g(y_ref), x)
        for fname, f in fwd:
            details[f"{fname} o {xs[0][0]} (y)"] = _rel_err(f(x_ref), y)
    err = max(details.values())
    k = paths.event_dim
    d = max(1, int(torch.Size(x.shape[x.dim() - k :]).numel())) if k else 1
    bound = _bound(x.dtype, loose, float(d), tol)
    ok = err <= bound
    return CheckOutcome("inverse", err, bound, ok, "max relative round-trip / path error", details)


def _flat_events(v: torch.Tensor, event_dim: int) -> tuple[torch.Tensor, torch.Size]:
    event_shape = v.shape[v.dim() - event_dim :] if event_dim else torch.Size()
    return v.reshape(-1, *event_shape), torch.Size(event_shape)


def _slogdet_batched(f: Map, v: torch.Tensor, event_shape: torch.Size) -> torch.Tensor:
    """``log|det df/dv|`` per event of ``v`` ``(n, *event_shape)``, one backward pass per event coordinate.

    Assumes the events are mapped independently (true of every bijection evaluated event by
    event); the determinant is taken in float64.
    """
    n, D = v.shape[0], int(event_shape.numel())
    with torch.enable_grad():
        vg = v.detach().clone().requires_grad_(True)
        out = f(vg)
        if out.shape != vg.shape:
            raise ShapeError(
                f"check_log_det needs a dimension-preserving map per event; input {tuple(vg.shape)}, "
                f"output {tuple(out.shape)}"
            )
        out = out.reshape(n, D)
        rows = []
        for i in range(D):
            (g,) = torch.autograd.grad(out[:, i].sum(), vg, retain_graph=i < D - 1, allow_unused=True)
            rows.append(torch.zeros_like(vg) if g is None else g)
    J = torch.stack([r.reshape(n, D) for r in rows], dim=-2)  # J[k, i, j] = d out_i / d v_j of event k
    return torch.linalg.slogdet(J.double())[1].to(v.dtype)


def check_log_det(
    transform: Transform,
    x: torch.Tensor,
    context: torch.Tensor | None = None,
    tol: float | None = None,
    max_events: int = 64,
    loose: bool = False,
) -> CheckOutcome:
    """Every log-det path of ``transform`` vs ``slogdet`` of the autograd Jacobian, at each event.

    Forward paths (``call_and_ladj``, ``ladj``, ``log_abs_det_jacobian``) at ``x`` are compared
    with the Jacobian of the forward map at ``x``; inverse paths (``inverse_and_ladj``,
    ``inv.log_abs_det_jacobian``) at ``y = T(x)`` with the Jacobian of the *inverse* map at
    ``y`` (not just the negative of the forward one: an inverse log-det can be wrong on its
    own).  ``x`` is ``(*batch, *event)`` with ``transform.domain.event_dim`` event dims
    (element-wise transforms, ``event_dim == 0``, are checked element by element).  At most
    ``max_events`` events (the first ones) are differentiated.  ``error`` is the largest
    absolute difference; the default bound is ``tolerance(dtype, loose).rtol * max(1, d,
    max |log det|)`` (float32: 0.05 nats fails for ``d <= 16``).
    """
    check_tensor(x, "x")
    check_int(max_events, "max_events")
    paths = _Paths(transform, context)
    k = paths.event_dim
    if x.dim() < k:
        raise ShapeError(f"x must have at least event_dim={k} dimensions; got shape {tuple(x.shape)}")
    ctx = paths.context
    if ctx is not None and ctx.dim() > 1:  # a context row per event: flatten both, keep the first max_events
        if paths.layer is None:
            raise ShapeError("a batch of contexts needs a fokker layer; pass one context vector of shape (c,)")
        batch = torch.broadcast_shapes(ctx.shape[:-1], x.shape[: x.dim() - k])
        x = x.expand(*batch, *x.shape[x.dim() - k :])
        ctx = ctx.expand(*batch, ctx.shape[-1]).reshape(-1, ctx.shape[-1])[:max_events]
        paths = _Paths(paths.layer, ctx)
    flat, event_shape = _flat_events(x, k)
    flat = flat[:max_events]
    n = flat.shape[0]
    (fname, forward), (iname, inverse) = paths.forward()[0], paths.inverse()[0]
    with torch.no_grad():
        y = forward(flat)
        x_back = inverse(y)
        fwd = [(name, v.reshape(-1)) for name, v in paths.ladj(flat, y)]
        inv = [(name, v.reshape(-1)) for name, v in paths.inv_ladj(y, x_back)]
    if k == 0:  # element-wise: log|T'(x)| per element by one backward pass
        def diag_ref(f: Map, v: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                vg = v.detach().clone().requires_grad_(True)
                (g,) = torch.autograd.grad(f(vg).sum(), vg)
            return g.abs().log().reshape(-1)

        ref_f, ref_i = diag_ref(forward, flat), diag_ref(inverse, y)
    else:
        ref_f = _slogdet_batched(forward, flat, event_shape)
        ref_i = _slogdet_batched(inverse, y, event_shape)
    details: dict[str, Any] = {}
    for name, v in fwd:
        details[f"{name} vs slogdet d{fname}/dx"] = _abs_err(v, ref_f)
    for name, v in inv:
        details[f"{name} vs slogdet d{iname}/dy"] = _abs_err(v, ref_i)
    details[f"{inv[0][0]} + {fwd[0][0]}"] = _abs_err(inv[0][1], -fwd[0][1])
    err = max(details.values())
    d = max(1, int(event_shape.numel()))
    finite = torch.cat([ref_f[torch.isfinite(ref_f)], ref_i[torch.isfinite(ref_i)]])
    magnitude = float(finite.abs().max()) if finite.numel() else 0.0
    bound = _bound(x.dtype, loose, max(1.0, float(d), magnitude), tol)
    details["events"] = n
    ok = err <= bound
    return CheckOutcome("log_det", err, bound, ok, "max |log-det path - autograd slogdet|", details)


def _abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.reshape(-1)
    b = b.reshape(-1)
    if a.numel() != b.numel():
        if a.numel() == 1:  # a constant log-det (volume-preserving or linear layer), broadcast
            a = a.expand_as(b)
        else:
            return float("inf")
    if b.numel() == 0:
        return 0.0
    e = (a - b).abs().max()
    return float(e) if bool(torch.isfinite(e)) else float("inf")


def _model_dtype(dist: Any) -> torch.dtype:
    """The floating dtype of ``dist``'s parameters (an ``nn.Module``) or float64."""
    if isinstance(dist, torch.nn.Module):
        for t in (*dist.parameters(), *dist.buffers()):
            if t.is_floating_point():
                return t.dtype
    return torch.float64


def _trapezoid_mass(log_prob: Callable[[torch.Tensor], torch.Tensor], axes: Sequence[torch.Tensor], scalar: bool) -> float:
    d = len(axes)
    with torch.no_grad():
        if d == 1:
            pts = axes[0] if scalar else axes[0].unsqueeze(-1)
            dens = log_prob(pts).exp()
            mass = torch.trapezoid(dens.double(), axes[0].double())
        else:
            n0, n1 = axes[0].numel(), axes[1].numel()
            g0, g1 = torch.meshgrid(axes[0], axes[1], indexing="ij")
            pts = torch.stack([g0, g1], -1)
            dens = log_prob(pts.reshape(-1, 2)).exp().reshape(n0, n1).double()
            mass = torch.trapezoid(torch.trapezoid(dens, axes[1].double(), dim=1), axes[0].double())
    return float(mass)


def check_normalized(
    dist: Any,
    bounds: Sequence[float] | Sequence[Sequence[float]],
    num_points: int | None = None,
    tol: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> CheckOutcome:
    """``int_box exp(dist.log_prob(x)) dx`` by the trapezoidal rule; passes when ``|mass - 1|`` is small.

    Args:
        dist: anything with ``log_prob(x)``; ``x`` is ``(n,)`` for scalar 1-D
            distributions (``event_shape == ()``) and ``(n, d)`` otherwise.
        bounds: ``(low, high)`` in 1-D or ``((low0, high0), (low1, high1))`` in 2-D; the box must
            hold all but a negligible part of the mass.
        num_points: grid points per axis (odd, best ``4k + 1``; default 4001 in 1-D, 401 in 2-D).
        tol: the bound on ``|mass - 1|``; default ``tolerance(dtype, loose=True).atol`` plus
            the quadrature error estimated by halving the grid twice,
            ``max(|I_h - I_{2h}|, |I_{2h} - I_{4h}| / 4)``.
        dtype: dtype of the grid; default the dtype of ``dist``'s parameters (an ``nn.Module``)
            or float64.
        device: device of the grid; default the device of ``dist``'s parameters (an
            ``nn.Module``) or the CPU.  Pass it for a plain object wrapping a model on a GPU.
    """
    dtype = _model_dtype(dist) if dtype is None else dtype
    b = torch.as_tensor(bounds, dtype=torch.float64)
    if b.shape == (2,):
        b = b.unsqueeze(0)
    if b.dim() != 2 or b.shape[1] != 2 or b.shape[0] not in (1, 2):
        raise ShapeError(f"bounds must be (low, high) or ((low0, high0), (low1, high1)); got {bounds!r}")
    if not bool((b[:, 1] > b[:, 0]).all()):
        raise ParameterError(f"bounds must have low < high on every axis; got {bounds!r}")
    d = b.shape[0]
    num_points = num_points or (4001 if d == 1 else 401)
    check_int(num_points, "num_points", minimum=5)
    if num_points % 2 == 0:
        raise ParameterError(f"num_points must be odd (the coarse grid takes every other point); got {num_points}")
    if device is None and isinstance(dist, torch.nn.Module):
        device = next((t.device for t in (*dist.parameters(), *dist.buffers())), None)
    axes = [torch.linspace(float(lo), float(hi), num_points, dtype=dtype, device=device) for lo, hi in b]
    scalar = tuple(getattr(dist, "event_shape", (d,))) == ()
    mass = _trapezoid_mass(dist.log_prob, axes, scalar)
    coarse = _trapezoid_mass(dist.log_prob, [a[::2] for a in axes], scalar)
    coarser = _trapezoid_mass(dist.log_prob, [a[::4] for a in axes], scalar) if (num_points - 1) % 4 == 0 else coarse
    # |I_h - I_2h| is ~3 times the error of I_h when the error is O(h^2); the next pair (scaled by
    # the h^2 ratio 1/4) guards against an accidental cancellation between the first two grids
    quad_err = max(abs(mass - coarse), abs(coarse - coarser) / 4)
    bound = float(tol) if tol is not None else tolerance(dtype, loose=True).atol + quad_err
    err = abs(mass - 1.0)
    ok = err == err and err <= bound
    return CheckOutcome("normalized", err, bound, ok, "|mass - 1|",
                        {"mass": mass, "grid": f"{num_points}^{d}", "quadrature error estimate": quad_err})
