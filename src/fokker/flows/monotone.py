"""Monotone univariate maps with a closed-form density direction and a root-finding inverse.

The "transformers" of neural autoregressive flows (Huang et al. 2018), unconstrained monotonic
networks (Wehenkel & Louppe 2019) and sum-of-squares polynomial flows (Jaini et al. 2019): a
strictly increasing map ``g`` of the real line, written in the **density direction** (data
``y`` -> noise ``x = g(y)``) like :class:`~fokker.flows.elementwise.Affine`, so that training
(``log_prob``) is one closed-form evaluation.  The sampling direction ``y = g^{-1}(x)`` has no
closed form; it is found by safeguarded Newton inside a bracket that provably holds the root
(bisection whenever a Newton step would leave it), then two Newton steps are taken with autograd
on, which re-attach exact first and second derivatives with respect to ``x`` and the
parameters (implicit function theorem) without changing the converged value.  zuko's NAF / UNAF /
SOSPF use bisection alone on ``[-10, 10]``; these maps are bijections of the whole real line
and their brackets are exact, so any finite input inverts.

Each map is an :class:`~fokker.flows.elementwise.ElementwiseMap` and plugs into the generic
layers: :class:`~fokker.flows.autoregressive.MaskedAutoregressive` (NAF, UNAF, SOS flows),
:class:`~fokker.flows.coupling.Coupling` and :class:`~fokker.flows.pointwise.Elementwise`.

* :class:`DeepSigmoid`: ``g(y) = logit(sum_k w_k sigmoid(a_k y + b_k))`` (Huang et al.'s deep
  sigmoidal flow, DSF); exact map and derivative, asymptotically linear tails.
* :class:`UnconstrainedMonotone`: ``g(y) = beta + int_0^y f(t; h) dt`` with a positive
  integrand network ``f`` (UMNN); the integral is an ``num_nodes``-point Gauss-Legendre
  quadrature (exponentially accurate for the smooth default network) and the log-derivative is
  ``log f(y)``, exact for the integral.  Linear tails outside ``[-bound, bound]``.
* :class:`SumOfSquares`: ``g' = slope + mean_k p_k(y / B)^2`` for polynomials ``p_k`` of degree
  ``L``; ``g`` is the integral, a polynomial of degree ``2L + 1`` in closed form (exact).
  Linear tails outside ``[-bound, bound]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._args import check_int, check_positive
from ..errors import ParameterError
from ..nets import MLP, check_hidden
from .elementwise import ElementwiseMap, soft_clamp

__all__ = ["MonotoneMap", "DeepSigmoid", "UnconstrainedMonotone", "SumOfSquares", "solve_monotone"]

#: Convergence is tested every ``_CHECK_EVERY`` iterations (one host sync per test).
_CHECK_EVERY = 4


def solve_monotone(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    target: Tensor,
    lo: Tensor,
    hi: Tensor,
    max_iterations: int = 100,
) -> Tensor:
    """Root ``y`` of ``g(y) = target`` for an increasing ``g`` with ``g(lo) <= target <= g(hi)``.

    ``fn(y)`` returns ``(g(y), g'(y))`` elementwise.  Safeguarded Newton (Press et al.'s
    ``rtsafe``): the bracket shrinks with the sign of every residual, a Newton step is taken when
    it stays inside the bracket and a bisection step otherwise, so the iteration converges for
    any increasing ``g`` (quadratically once Newton takes over).  Stops when every residual is
    below ``4 eps (|target| + 1)`` or every last step below ``4 eps (|y| + 1)`` (tested every 4
    iterations), or after ``max_iterations``.  No autograd graph (see :meth:`MonotoneMap.forward`).
    """
    with torch.no_grad():
        eps = torch.finfo(target.dtype).eps
        tol = 4 * eps * (target.abs() + 1)
        y = 0.5 * (lo + hi)
        for it in range(1, max_iterations + 1):
            v, dv = fn(y)
            r = v - target
            lo = torch.where(r < 0, y, lo)
            hi = torch.where(r > 0, y, hi)
            step = y - r / dv
            new = torch.where((step >= lo) & (step <= hi), step, 0.5 * (lo + hi))
            if it % _CHECK_EVERY == 0:
                done = (r.abs() <= tol) | ((new - y).abs() <= 4 * eps * (y.abs() + 1))
                if bool(done.all()):
                    return torch.where(r.abs() <= tol, y, new)
            y = new
    return y


class MonotoneMap(ElementwiseMap):
    """A strictly increasing map of the real line, closed form in the density direction.

    Subclasses implement :meth:`density` (``x = g(y)`` and ``log g'(y)``, data -> noise) and
    :meth:`bracket` (an interval that holds ``g^{-1}(x)``).  In the layer direction of
    :class:`~fokker.flows.elementwise.ElementwiseMap` (noise -> data) ``forward`` is the root
    ``g^{-1}(x)`` (:func:`solve_monotone`, then two grad-enabled Newton steps: exact first and
    second derivatives by the implicit function theorem) and ``inverse`` is ``g``.  The base of
    the neural autoregressive maps (Huang, Krueger, Lacoste & Courville 2018), the unconstrained
    monotonic networks (Wehenkel & Louppe 2019) and the sum-of-squares polynomials (Jaini, Selby &
    Yu 2019).
    """

    #: cap on the safeguarded-Newton iterations of the inverse
    max_iterations: int = 100

    def density(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``x = g(y)`` and ``log g'(y)`` (data -> noise), elementwise."""
        raise NotImplementedError

    def bracket(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(lo, hi)`` with ``g(lo) <= x <= g(hi)`` (no gradient needed)."""
        raise NotImplementedError

    def density_at(self, params: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """``y -> density(y, params)`` for repeated calls with the same parameters (maps may
        precompute what depends on ``params`` only)."""
        return lambda y: self.density(y, params)

    @staticmethod
    def _broadcast(v: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shape = torch.broadcast_shapes(v.shape, params.shape[:-1])
        return v.expand(shape), params.expand(*shape, params.shape[-1])

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        y, params = self._broadcast(y, params)
        return self.density(y, params)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        x, params = self._broadcast(x, params)
        with torch.no_grad():
            xd, pd = x.detach(), params.detach()
            lo, hi = self.bracket(xd, pd)
            g_at = self.density_at(pd)

            def fn(v: Tensor) -> tuple[Tensor, Tensor]:
                g, log_dg = g_at(v)
                return g, torch.exp(log_dg)

            y = solve_monotone(fn, xd, lo, hi, self.max_iterations)
        for _ in range(2):  # dN/dy = 0 at the root: exact first (one step) and second (two) derivatives
            g, log_dg = self.density(y, params)
            y = y - (g - x) * torch.exp(-log_dg)
        return y, -self.density(y, params)[1]

    def call(self, x: Tensor, params: Tensor) -> Tensor:
        return self.forward(x, params)[0]

    def inv(self, y: Tensor, params: Tensor) -> Tensor:
        return self.inverse(y, params)[0]

    def _linear_tails(self, x: Tensor, params: Tensor, bound: float) -> tuple[Tensor, Tensor]:
        """Bracket of a map that is linear outside ``[-bound, bound]``: the root in closed form on
        the tails (``lo = hi``), ``[-bound, bound]`` inside."""
        edges = torch.tensor([-bound, bound], dtype=x.dtype, device=x.device).expand(*x.shape, 2)
        g, log_dg = self.density(edges, params[..., None, :].expand(*x.shape, 2, params.shape[-1]))
        g_lo, g_hi = g.unbind(-1)
        below = -bound + (x - g_lo) * torch.exp(-log_dg[..., 0])
        above = bound + (x - g_hi) * torch.exp(-log_dg[..., 1])
        lo = torch.where(x < g_lo, below, torch.where(x > g_hi, above, torch.full_like(x, -bound)))
        hi = torch.where(x < g_lo, below, torch.where(x > g_hi, above, torch.full_like(x, bound)))
        return lo, hi


class DeepSigmoid(MonotoneMap):
    """Deep sigmoidal flow map of neural autoregressive flows (Huang et al. 2018, sec. 3.1, DSF).

    Density direction (data ``y`` -> noise ``x``), with ``K`` sigmoid units:

    .. math::

        x = g(y) = \\sigma^{-1}\\Big(\\sum_k w_k\\, \\sigma(a_k y + b_k)\\Big),\\qquad
        g'(y) = \\frac{\\sum_k w_k a_k \\sigma(z_k)(1 - \\sigma(z_k))}{s (1 - s)}

    with ``z_k = a_k y + b_k``, ``s = sum_k w_k sigma(z_k)``, ``a_k > 0`` and ``w`` on the simplex,
    so ``g`` is strictly increasing.  Everything is evaluated in log space (``log s`` and
    ``log(1 - s)`` by log-sum-exp of log-sigmoids), so the map and its exact log-derivative stay
    finite for any input.  Since ``sigma`` is increasing, ``min_k z_k <= g(y) <= max_k z_k``: the
    root of ``g(y) = x`` lies in ``[min_k (x - b_k)/a_k, max_k (x - b_k)/a_k]`` (the bracket),
    and ``g`` is asymptotically linear, a bijection of the real line.

    ``params`` (``3K`` per coordinate): raw log-slopes (``log a = B tanh(raw / B)``), shifts ``b``,
    raw weights (``w = softmax``).  Raw zeros give the identity.

    Args:
        num_units: ``K``.
        scale_bound: ``B``, so every ``a_k`` lies in ``[e^-B, e^B]``.
    """

    def __init__(self, num_units: int = 8, scale_bound: float = 7.0) -> None:
        self.num_units = check_int(num_units, "num_units")
        check_positive(scale_bound, "scale_bound")
        self.scale_bound = float(scale_bound)
        self.num_params = 3 * self.num_units

    def _parts(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        log_a, b, w = params.unflatten(-1, (3, self.num_units)).unbind(-2)
        return soft_clamp(log_a, self.scale_bound), b, torch.log_softmax(w, -1)

    def density(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self.density_at(params)(y)

    def density_at(self, params: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        log_a, b, log_w = self._parts(params)
        a, log_wa = torch.exp(log_a), log_w + log_a

        def g(y: Tensor) -> tuple[Tensor, Tensor]:
            z = a * y[..., None] + b
            ls, lms = F.logsigmoid(z), F.logsigmoid(-z)
            log_s = torch.logsumexp(log_w + ls, -1)
            log_1ms = torch.logsumexp(log_w + lms, -1)
            log_ds = torch.logsumexp(log_wa + ls + lms, -1)
            return log_s - log_1ms, log_ds - log_s - log_1ms

        return g

    def bracket(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_a, b, _ = self._parts(params)
        roots = (x[..., None] - b) * torch.exp(-log_a)
        return roots.amin(-1), roots.amax(-1)

    def __repr__(self) -> str:
        return f"DeepSigmoid(num_units={self.num_units})"


def _gauss_legendre(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in ``(0, 1)`` and weights summing to 1 of the Gauss-Legendre rule on ``[0, 1]``."""
    u, w = np.polynomial.legendre.leggauss(num_nodes)
    return (u + 1) / 2, w / 2


class UnconstrainedMonotone(MonotoneMap, nn.Module):
    """Unconstrained monotonic neural network map (Wehenkel & Louppe 2019, eq. 2; UMNN).

    Density direction (data ``y`` -> noise ``x``), with an integrand network ``f > 0`` of its own
    parameters that takes ``t`` and a per-coordinate embedding ``h`` (from the conditioner):

    .. math::

        x = g(y) = \\beta + \\int_0^{y} f(t; h)\\, dt,\\qquad
        f(t; h) = \\exp(B \\tanh(\\mathrm{MLP}(t, h) / B))

    so ``f`` lies in ``[e^-B, e^B]`` and ``g`` is strictly increasing.  Inside ``[-L, L]``
    (``L = bound``) the integral is the ``num_nodes``-point Gauss-Legendre rule on ``[0, y]``;
    outside, ``g`` continues linearly with slope ``f(+-L)`` (so any finite input inverts and the
    network only ever sees ``|t| <= L``).  ``log g'(y) = log f(clamp(y, -L, L))`` is the exact
    log-derivative of the integral; the computed map differs from the integral by the quadrature
    error, exponentially small in ``num_nodes`` for the smooth default activation (measured
    below ``1e-9`` relative with the defaults), so the log-density is that of the quadrature map
    up to that error.

    ``params`` (``signal + 1`` per coordinate): the embedding ``h`` and the offset ``beta``.
    This map owns parameters (the integrand network): it is an ``nn.Module`` and a layer using
    it registers it as a submodule.

    Args:
        signal: size of the embedding ``h``.
        hidden: hidden sizes of the integrand network.
        num_nodes: Gauss-Legendre nodes.
        bound: ``L``.
        scale_bound: ``B``.
        activation: activation of the integrand network (smooth, for an accurate quadrature).
    """

    def __init__(
        self,
        signal: int = 16,
        hidden: Sequence[int] = (64, 64),
        num_nodes: int = 32,
        bound: float = 10.0,
        scale_bound: float = 7.0,
        activation: type[nn.Module] = nn.SiLU,
    ) -> None:
        nn.Module.__init__(self)
        self.signal = check_int(signal, "signal", minimum=0)
        self.num_nodes = check_int(num_nodes, "num_nodes")
        check_positive(bound, "bound")
        check_positive(scale_bound, "scale_bound")
        self.bound, self.scale_bound = float(bound), float(scale_bound)
        self.num_params = self.signal + 1
        self.integrand = MLP(1 + self.signal, 1, check_hidden(hidden), activation)
        u, w = _gauss_legendre(self.num_nodes)
        # float64 constants, cast at use (buffers would be rounded by .float() / .half())
        self._rule = (np.append(u, 1.0), w)

    def _log_f(self, t: Tensor, h: Tensor) -> Tensor:
        """``log f(t; h)`` for ``t`` ``(..., m)`` and ``h`` ``(..., S)``."""
        inp = torch.cat([t[..., None], h[..., None, :].expand(*t.shape, self.signal)], -1)
        return soft_clamp(self.integrand(inp)[..., 0], self.scale_bound)

    def density(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        L = self.bound
        h, beta = params[..., : self.signal], params[..., self.signal]
        yc = y.clamp(-L, L)
        nodes = torch.as_tensor(self._rule[0], dtype=y.dtype, device=y.device)
        weights = torch.as_tensor(self._rule[1], dtype=y.dtype, device=y.device)
        log_f = self._log_f(yc[..., None] * nodes, h)  # the last node (1.0) is f(yc)
        integral = yc * (torch.exp(log_f[..., :-1]) * weights).sum(-1)
        log_f_end = log_f[..., -1]
        return beta + integral + torch.exp(log_f_end) * (y - yc), log_f_end

    def bracket(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._linear_tails(x, params, self.bound)

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)

    def extra_repr(self) -> str:
        return f"signal={self.signal}, num_nodes={self.num_nodes}, bound={self.bound}"


class SumOfSquares(MonotoneMap):
    """Sum-of-squares polynomial map (Jaini et al. 2019, eq. 9; SOS flows).

    Density direction (data ``y`` -> noise ``x``) on ``[-L, L]`` (``L = bound``, ``t = y / L``):

    .. math::

        g'(y) = \\epsilon + \\frac{1}{K}\\sum_{k=1}^K p_k(t)^2,\\quad
        p_k(t) = \\sum_{l=0}^{D} a_{kl} t^l,\\qquad
        g(y) = \\beta + \\epsilon y + \\frac{L}{K}\\sum_k \\sum_{l,m} \\frac{a_{kl} a_{km}}{l + m + 1} t^{l+m+1}

    a polynomial of degree ``2D + 1`` with a positive derivative (``epsilon = slope``), computed
    in closed form (exact; no quadrature).  Outside ``[-L, L]`` the map continues linearly with
    slope ``g'(+-L)``, so it is a bijection of the real line and large inputs cannot overflow the
    powers.

    ``params`` (``K (D + 1) + 1`` per coordinate): the coefficients (``a_k0`` offset by 1, so raw
    zeros give ``g(y) = (1 + slope) y``) and the offset ``beta``.

    Args:
        degree: ``D``.
        num_polynomials: ``K``.
        bound: ``L``.
        slope: ``epsilon``, the smallest derivative.
    """

    def __init__(self, degree: int = 4, num_polynomials: int = 3, bound: float = 10.0, slope: float = 1e-3) -> None:
        self.degree = check_int(degree, "degree", minimum=0)
        self.num_polynomials = check_int(num_polynomials, "num_polynomials")
        check_positive(bound, "bound")
        check_positive(slope, "slope")
        self.bound, self.slope = float(bound), float(slope)
        self.num_params = self.num_polynomials * (self.degree + 1) + 1
        i = np.arange(self.degree + 1)
        # one-hot of l + m: the coefficients of p^2 are (a a^T).flatten() @ _anti
        self._anti = (i[:, None] + i[None, :]).reshape(-1)[:, None] == np.arange(2 * self.degree + 1)[None, :]

    def density(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        L, D = self.bound, self.degree
        K = self.num_polynomials
        a = params[..., :-1].unflatten(-1, (K, D + 1))
        a = torch.cat([a[..., :1] + 1, a[..., 1:]], -1)
        beta = params[..., -1]
        yc = y.clamp(-L, L)
        t = yc / L
        # t^0 .. t^(2D+1) by products (torch.pow's gradient at t = 0 with exponent 0 is NaN)
        pw = [torch.ones_like(t)]
        for _ in range(2 * D + 1):
            pw.append(pw[-1] * t)
        powers = torch.stack(pw, -1)
        anti = torch.as_tensor(self._anti, dtype=y.dtype, device=y.device)
        c = ((a[..., :, None] * a[..., None, :]).flatten(-2) @ anti).mean(-2)  # mean_k of p_k^2's coefficients
        j = torch.arange(1, 2 * D + 2, dtype=y.dtype, device=y.device)
        integral = (c * powers[..., 1:] / j).sum(-1)  # int_0^t mean_k p_k(s)^2 ds
        p = (a * powers[..., None, : D + 1]).sum(-1)  # (..., K)
        dg = self.slope + (p * p).mean(-1)
        x = beta + self.slope * yc + L * integral + dg * (y - yc)
        return x, torch.log(dg)

    def bracket(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._linear_tails(x, params, self.bound)

    def __repr__(self) -> str:
        return f"SumOfSquares(degree={self.degree}, num_polynomials={self.num_polynomials}, bound={self.bound})"
