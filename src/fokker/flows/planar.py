"""Planar flow (Rezende & Mohamed 2015) with an exact inverse on arbitrary inputs.

Seed 002, eq. (7):

.. math::

    f(z) = z + \\hat u \\, h(w^\\top z + b), \\qquad
    \\log|\\det \\partial f/\\partial z| = \\log|1 + h'(w^\\top z + b)\\, w^\\top \\hat u|

with ``h = tanh``.  Invertibility needs ``w^T u_hat >= -1``; it is enforced by the
re-parameterisation of Rezende & Mohamed (appendix A):
``u_hat = u + (m(w^T u) - w^T u) w / ||w||^2`` with ``m(a) = -1 + softplus(a)`` so
``w^T u_hat = m(w^T u) > -1``.

Inverse (Pyro's ``Planar`` can only invert values it produced; this one inverts
any ``y``): project on ``w``.  With ``a = w^T z`` and ``c = w^T u_hat`` the
equation ``w^T y = a + c tanh(a + b)`` is scalar, strictly increasing in ``a``
(derivative ``1 + c sech^2 >= min(1, 1 + c) > 0``) and its root lies in
``[w^T y - |c|, w^T y + |c|]``.  :func:`solve_tanh_equation` finds it by bracketed
Newton to machine precision; then ``z = y - u_hat tanh(a + b)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._args import check_int, check_last_dim, check_tensor
from .base import Bijection

__all__ = ["Planar", "solve_tanh_equation"]

#: Cap on bracketed-Newton iterations in :func:`solve_tanh_equation`.  Bisection alone
#: halves the bracket (width ``2|c|``) each step, so 80 steps reach float64 resolution
#: even without a single accepted Newton step; Newton steps converge quadratically
#: once inside the basin, so in practice the loop stops after the first check.
_NEWTON_ITERS = 80
#: Convergence is checked every ``_CHECK_EVERY`` iterations (one host sync per check).
_CHECK_EVERY = 4


def solve_tanh_equation(
    target: torch.Tensor, c: torch.Tensor, b: torch.Tensor, max_iterations: int = _NEWTON_ITERS
) -> torch.Tensor:
    """Root ``a`` of ``a + c tanh(a + b) = target`` for ``c > -1`` (elementwise, broadcasting).

    The left side is strictly increasing, so the root is unique and bracketed by
    ``[target - |c|, target + |c|]``.  Safeguarded Newton: a Newton step is taken
    when it stays inside the current bracket, a bisection step otherwise.  Stops when
    every residual is below ``4 eps (|target| + |c| + 1)`` (checked every 4 iterations)
    or after ``max_iterations`` iterations.  The result carries no autograd graph; callers
    re-attach gradients with :func:`newton_refine`.
    """
    with torch.no_grad():
        target, c, b = torch.broadcast_tensors(target.detach(), c.detach(), b.detach())
        width = c.abs()
        lo, hi = target - width, target + width
        tol = 4 * torch.finfo(target.dtype).eps * (target.abs() + width + 1)
        a = target.clone()
        for it in range(1, check_int(max_iterations, "max_iterations") + 1):
            t = torch.tanh(a + b)
            g = a + c * t - target
            if it % _CHECK_EVERY == 0 and bool((g.abs() <= tol).all()):
                break
            lo = torch.where(g < 0, a, lo)
            hi = torch.where(g > 0, a, hi)
            dg = 1 + c * (1 - t * t)
            step = a - g / dg
            inside = (step > lo) & (step < hi)
            a = torch.where(inside, step, 0.5 * (lo + hi))
    return a


def newton_refine(
    a: torch.Tensor, target: torch.Tensor, c: torch.Tensor, b: torch.Tensor, num_iterations: int = 2
) -> torch.Tensor:
    """Re-attach autograd to a converged root ``a`` of ``a + c tanh(a + b) = target``.

    Each Newton step ``N(a) = a - G(a)/G'(a)`` has ``dN/da = 0`` at the root, so one
    step gives exact first derivatives of the root w.r.t. ``target, c, b`` and two
    steps exact second derivatives (implicit function theorem), while the value
    stays the converged root.
    """
    for _ in range(num_iterations):
        t = torch.tanh(a + b)
        a = a - (a + c * t - target) / (1 + c * (1 - t * t))
    return a


class Planar(Bijection):
    """Planar layer ``y = z + u_hat tanh(w^T z + b)`` (noise -> data), exact inverse.

    Rezende & Mohamed (2015), sec. 4.1 (``log|det| = log|1 + h'(w^T z + b) w^T u_hat|``)
    and appendix A (``u_hat`` so that ``w^T u_hat > -1``).

    Args:
        features: event size ``D``; inputs have shape ``(..., D)``.

    ``log_abs_det_jacobian`` is exact.  The inverse is exact up to floating-point
    rounding (bracketed Newton on a scalar equation), differentiable twice.

    Example:
        >>> t = Planar(3)
        >>> y = t(torch.randn(5, 3))
        >>> torch.allclose(t(t.inv(y)), y, atol=1e-5)
        True
    """

    def __init__(self, features: int) -> None:
        super().__init__(event_dim=1)
        self.features = dim = check_int(features, "features")
        self.u = nn.Parameter(torch.empty(dim))
        self.w = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.zeros(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / self.features**0.5
        nn.init.uniform_(self.u, -bound, bound)
        nn.init.uniform_(self.w, -bound, bound)
        nn.init.zeros_(self.bias)

    def u_hat(self) -> torch.Tensor:
        """``u`` projected so that ``w^T u_hat = -1 + softplus(w^T u) > -1``."""
        wu = self.w @ self.u
        w_sq = (self.w * self.w).sum().clamp_min(torch.finfo(self.w.dtype).tiny)
        return self.u + ((-1 + F.softplus(wu)) - wu) * self.w / w_sq

    def _check(self, x: torch.Tensor, name: str) -> None:
        check_tensor(x, name)
        check_last_dim(x, self.features, name)

    def call_and_ladj(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``y = z + u_hat tanh(w^T z + b)`` and ``log(1 + (1 - tanh^2) w^T u_hat)`` (exact)."""
        self._check_context(context)
        self._check(z, "z")
        u_hat = self.u_hat()
        t = torch.tanh(z @ self.w + self.bias)
        # 1 + c (1 - t^2) > 0 because c = w^T u_hat > -1; log1p keeps precision when c sech^2 is tiny
        ladj = torch.log1p((self.w @ u_hat) * (1 - t * t))
        return z + u_hat * t.unsqueeze(-1), ladj

    def inverse_and_ladj(self, y: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` with ``z + u_hat tanh(w^T z + b) = y`` (bracketed Newton) and ``-log|det|`` at ``z``."""
        self._check_context(context)
        self._check(y, "y")
        u_hat = self.u_hat()
        c = self.w @ u_hat
        target = y @ self.w
        a = solve_tanh_equation(target, c, self.bias)
        a = newton_refine(a, target, c, self.bias)  # a = w^T z
        t = torch.tanh(a + self.bias)
        return y - u_hat * t.unsqueeze(-1), -torch.log1p(c * (1 - t * t))

    def extra_repr(self) -> str:
        return f"features={self.features}"
